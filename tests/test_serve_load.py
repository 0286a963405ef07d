"""reward-serve under a bounded loopback load: 32 concurrent clients, 1,024 requests of mixed protocols
(/score with text and with messages, OpenRLHF's /get_reward), 1-2 groups of 1-32 completions of mixed
lengths each. Every reply must equal score.py's rewards for its own completions to 1e-5: none lost,
duplicated or sent to another request (each completion's reward differs, so a reward delivered to the
wrong place fails the comparison), while the batcher merges requests into shared micro-batches."""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from test_serve import metric, post, score_py

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
from reward.serve.cli import start_in_thread  # noqa: E402

pytestmark = pytest.mark.slow

CLIENTS, REQUESTS_EACH = 32, 32
GROUP_SIZES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]  # a pair, GRPO's usual G, and up to 32
WORDS = "apple cow moo rain sun kind day sweet ripe red green walk river stone bright cold warm".split()
PROMPTS = [f"Question {i}: " + " ".join(WORDS[(i + j) % len(WORDS)] for j in range(3 + 4 * i)) + "?" for i in range(8)]
CHAT_PROMPTS = [[{"role": "user", "content": p}] for p in PROMPTS[:4]]
COMPLETIONS = [" " + " ".join(WORDS[(3 * i + j) % len(WORDS)] for j in range(1 + i % 13)) + f" #{i}" for i in range(40)]


def chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text.strip()}]


@pytest.fixture(scope="module")
def references(tmp_path_factory, trained_tiny_dir):
    """score.py's reward of every (prompt, completion) the load can send, and of every /get_reward text."""
    tmp, model = tmp_path_factory.mktemp("load"), trained_tiny_dir
    pairs = [(p, c) for p in PROMPTS for c in COMPLETIONS]
    chats = [(p, chat(c)) for p in CHAT_PROMPTS for c in COMPLETIONS]
    rows = [{"prompt": p, "response": c} for p, c in pairs + chats]
    rewards = score_py(model, rows, tmp)
    texts = score_py(model, [{"text": p + c} for p, c in pairs], tmp)
    table = {json.dumps([p, c]): r for (p, c), r in zip(pairs + chats, rewards)}
    table |= {json.dumps(["query", p + c]): r for (p, c), r in zip(pairs, texts)}
    return model, table


def one_request(rng: random.Random) -> tuple[str, dict, list[str]]:
    """(endpoint, body, the reference key of each reward in reply order)."""
    kind = rng.choice(["text", "chat", "get_reward"])
    groups = []
    for _ in range(rng.randint(1, 2)):
        prompt = rng.choice(CHAT_PROMPTS if kind == "chat" else PROMPTS)
        completions = rng.sample(COMPLETIONS, rng.choice(GROUP_SIZES))
        groups.append((prompt, [chat(c) for c in completions] if kind == "chat" else completions))
    if kind == "get_reward":
        queries = [(p, p + c) for p, cs in groups for c in cs]
        rng.shuffle(queries)  # a GRPO batch's prompts interleave
        body = {"query": [q for _, q in queries], "prompts": [p for p, _ in queries]}
        return "/get_reward", body, [json.dumps(["query", q]) for _, q in queries]
    body = {"groups": [{"prompt": p, "completions": cs} for p, cs in groups]}
    return "/score", body, [json.dumps([p, c]) for p, cs in groups for c in cs]


def test_every_reply_under_load_equals_score_py(references):
    model, table = references
    server = start_in_thread(str(model), max_wait_ms=5)
    worst, answered, lock = 0.0, 0, threading.Lock()

    def client(seed: int) -> None:
        nonlocal worst, answered
        rng = random.Random(seed)
        for _ in range(REQUESTS_EACH):
            endpoint, body, keys = one_request(rng)
            status, reply, _ = post(server.url + endpoint, body, timeout=120)
            assert status == 200, reply
            rewards = reply["rewards"] if endpoint == "/get_reward" else [r for g in reply["rewards"] for r in g]
            assert len(rewards) == len(keys)
            gap = max(abs(r - table[key]) for r, key in zip(rewards, keys))
            with lock:
                worst, answered = max(worst, gap), answered + 1

    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            for future in [pool.submit(client, seed) for seed in range(CLIENTS)]:
                future.result()
        merged = metric(server.url, "reward_batch_requests_sum") / metric(server.url, "reward_batch_requests_count")
        completions = metric(server.url, "reward_completions_total")
    finally:
        server.stop()
    assert answered == CLIENTS * REQUESTS_EACH
    assert worst <= 1e-5, worst
    assert merged > 1.5, merged  # micro-batches did hold several requests at once (dynamic batching happened)
    assert completions > 0
