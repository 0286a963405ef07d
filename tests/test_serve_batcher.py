"""reward/serve/batcher.py without HTTP: requests that arrive together share a micro-batch and their prompt's
forward, the token budget bounds a micro-batch, a cancelled request is dropped, a failed forward fails only
its requests, a full queue and a stopped batcher refuse, and every reward equals the scorer's own."""

from __future__ import annotations

import json
import threading

import pytest

from reward.eval.scoring import RewardScorer
from reward.serve.batcher import Batcher, QueueFull
from reward.serve.engine import Engine, Piece, Ticket
from reward.serve.protocol import Limits

PROMPT = "Tell me about the weather in the mountains today, please. "


@pytest.fixture(scope="module")
def scorer(trained_tiny_dir) -> RewardScorer:
    return RewardScorer(str(trained_tiny_dir), show_progress=False)


def batcher_for(scorer, **options) -> tuple[Batcher, list[dict]]:
    seen: list[dict] = []
    settings = {"max_batch_tokens": 16384, "max_wait": 0.5, "max_queue": 4096, **options}
    batcher = Batcher(scorer.model, scorer.tokenizer.pad_token_id, observe=seen.append, **settings)
    batcher.start()
    return batcher, seen


def ticket(scorer, completions: list[str], prompt: str = PROMPT, max_batch_tokens: int = 16384) -> Ticket:
    engine = Engine(scorer, Limits(), max_batch_tokens)
    made = engine.prepare("score", json.dumps({"prompt": prompt, "completions": completions}).encode())
    made.finished = threading.Event()
    made.on_done = made.finished.set
    return made


def test_requests_that_arrive_together_share_one_forward_and_their_prompt(scorer):
    batcher, seen = batcher_for(scorer)
    first, second = ticket(scorer, [" Sunny.", " Cold and windy."]), ticket(scorer, [" Snow on the peaks."])
    batcher.submit(first)
    batcher.submit(second)  # within max_wait of the first: the same micro-batch
    assert first.finished.wait(30) and second.finished.wait(30)
    batcher.stop()
    assert len(seen) == 1 and seen[0]["requests"] == 2 and seen[0]["groups"] == 1  # one prompt, one segment
    prompt_tokens = len(scorer.encode(None, PROMPT)) - 2  # without BOS and EOS
    assert seen[0]["tokens_requested"] - seen[0]["tokens_computed"] >= 2 * (prompt_tokens - 1)  # computed once
    want = scorer.rewards([PROMPT] * 3, [" Sunny.", " Cold and windy.", " Snow on the peaks."])
    got = first.rewards[0] + second.rewards[0]
    assert max(abs(a - b) for a, b in zip(got, want)) <= 1e-5


def test_the_token_budget_bounds_each_micro_batch(scorer):
    completions = [f" Answer number {i} says something about the mountain weather." for i in range(12)]
    budget = 80
    batcher, seen = batcher_for(scorer, max_batch_tokens=budget)
    made = ticket(scorer, completions, max_batch_tokens=budget)
    assert len(made.pieces) > 1 and all(piece.cost <= budget or len(piece.sequences) == 1 for piece in made.pieces)
    batcher.submit(made)
    assert made.finished.wait(30)
    batcher.stop()
    assert len(seen) > 1 and all(stats["tokens_computed"] <= budget for stats in seen)
    want = scorer.rewards([PROMPT] * 12, completions)
    assert max(abs(a - b) for a, b in zip(made.rewards[0], want)) <= 1e-5


def test_a_cancelled_request_is_dropped_and_the_others_answered(scorer):
    batcher, seen = batcher_for(scorer, max_wait=1.0)
    gone, stays = ticket(scorer, [" a", " b", " c"]), ticket(scorer, [" d"], prompt="Another prompt. ")
    batcher.submit(gone)
    batcher.submit(stays)
    assert batcher.cancel(gone) == 3 and batcher.waiting == 1
    assert stays.finished.wait(30)
    batcher.stop()
    assert not gone.finished.is_set() and gone.rewards == [[None, None, None]]
    assert sum(stats["sequences"] for stats in seen) == 1


def test_a_failed_forward_fails_only_its_requests(scorer):
    batcher, _ = batcher_for(scorer, max_wait=0.0)
    bad = ticket(scorer, [" x"])
    unknown = [5, 6, 10**6]  # a token id past the vocabulary: the embedding raises inside the forward
    bad.pieces = [Piece(bad, 0, [0], [unknown], None, 0, len(unknown))]
    batcher.submit(bad)
    assert bad.finished.wait(30) and isinstance(bad.error, IndexError)
    good = ticket(scorer, [" fine"])
    batcher.submit(good)
    assert good.finished.wait(30) and good.error is None and good.rewards[0][0] is not None
    batcher.stop()


def test_a_full_queue_and_a_stopped_batcher_refuse(scorer):
    batcher, _ = batcher_for(scorer, max_queue=3, max_wait=1.0)
    first = ticket(scorer, [" a", " b"])
    batcher.submit(first)
    with pytest.raises(QueueFull, match="--max_queue 3"):
        batcher.submit(ticket(scorer, [" c", " d"]))
    batcher.stop()  # what is queued is scored first
    assert first.finished.is_set() and None not in first.rewards[0]
    with pytest.raises(QueueFull, match="shutting down"):
        batcher.submit(ticket(scorer, [" e"]))


def test_a_request_that_breaks_the_forward_fails_alone(scorer):
    """Two requests in one micro-batch, one with input the forward cannot take: each is scored again on
    its own, so only that one fails."""
    batcher, _ = batcher_for(scorer, max_wait=0.5)
    bad, good = ticket(scorer, [" x"]), ticket(scorer, [" fine"], prompt="Another prompt. ")
    unknown = [5, 6, 10**6]
    bad.pieces = [Piece(bad, 0, [0], [unknown], None, 0, len(unknown))]
    batcher.submit(bad)
    batcher.submit(good)
    assert bad.finished.wait(30) and good.finished.wait(30)
    batcher.stop()
    assert isinstance(bad.error, IndexError) and good.error is None
    assert good.rewards[0][0] == pytest.approx(scorer.rewards(["Another prompt. "], [" fine"])[0], abs=1e-5)


def test_a_wait_whose_requests_all_left_runs_no_forward(scorer):
    batcher, seen = batcher_for(scorer, max_wait=0.3)
    gone = ticket(scorer, [" a"])
    batcher.submit(gone)
    batcher.cancel(gone)  # during the wait for company: the micro-batch is empty
    later = ticket(scorer, [" b"])
    batcher.submit(later)
    assert later.finished.wait(30)
    batcher.stop()
    assert [stats["sequences"] for stats in seen] == [1]
