"""What scoring is given, checked before any work (#28 items 4, 8, 9, 15): the Python API's arguments, every
sequence against the model's positions and --max_length (cut on the left, skipped, or refused, and said),
texts too large to tokenize (standard input, item 15: tests/test_score_output.py).

The long-row cases run a BERT-like encoder saved with 16 positions (conftest `save_encoder`), so a row of
20+ tokens is what a 595-token row is to a 512-position BERT; the decoder cases run the tiny Llama with a
max_length. Everything runs in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import build_gpt2_style_tokenizer, build_wordpiece_tokenizer, save_encoder
from test_bad_input import assert_clean_error, assert_debug_shows_traceback, invoke, write_jsonl

import score
from reward import tokenizer as tokenizer_module
from reward.errors import UserError
from reward.eval import lengths
from reward.eval.reward_function import RewardFunction
from reward.eval.scoring import RewardScorer
from reward.fast.packed_scoring import group_rewards
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import build_tiny_tokenizer
from reward.tokenizer import chars_per_token

pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")  # conftest.py
POSITIONS = 16
LONG = " and then it went on and on, saying much more than it needed to"  # ~14 more tokens each time


@pytest.fixture(scope="module")
def bert16(tmp_path_factory) -> Path:
    return save_encoder(tmp_path_factory.mktemp("bert16") / "rm", "bert", max_positions=POSITIONS)


@pytest.fixture(scope="module")
def bert_scorer(bert16) -> RewardScorer:
    return RewardScorer(bert16, device="cpu", show_progress=False)


@pytest.fixture(scope="module")
def tiny_function(tiny_model_dir) -> RewardFunction:
    return RewardFunction(tiny_model_dir, device="cpu")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@torch.no_grad()
def direct(scorer: RewardScorer, ids: list[int]) -> float:
    """The model's own forward on one id list: no batching, no packing, no length rule."""
    return scorer.model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def expected_cut(scorer: RewardScorer, ids: list[int], limit: int) -> list[int]:
    """Truncation 'left' by hand: the first token when it is a special one ([CLS], BOS), then the last ones."""
    head = ids[:1] if ids[0] in scorer.tokenizer.all_special_ids else []
    return head + ids[len(ids) - (limit - len(head)) :]


# --- item 4: every argument of the Python API ------------------------------------------------------
@pytest.mark.parametrize(
    "prompts, completions, needle",
    [
        ("Q: hi? ", "A: yes.", "prompts must be a list with one item per sequence, got a bare string"),
        (["Q: hi? "], "A: yes.", "completions must be a list with one item per sequence, got a bare string"),
        (None, ["A: yes."], "prompts must be a list with one item per sequence, got None"),
        (["a", "b"], ["x", None], "completions[1] must be a string or a list of messages, got None"),
        (["a", None], ["x", "y"], "prompts[1] must be a string or a list of messages, got None"),
        (["a"], [3], "completions[0] must be a string or a list of messages, got int"),
        (["a", "b"], ["x"], "2 prompts but 1 completions"),
        (
            [[{"role": "user", "content": "hi"}]],
            [[{"role": "bot", "content": "hello"}]],
            "field 'completions[0]' has a message with a missing or unknown role",
        ),
        ([[{"role": "user", "content": "hi"}]], [[{"role": "assistant"}]], "'completions[0]' has a message without"),
        (["hi"], [[{"role": "assistant", "content": "x"}]], "completions[0] is a message list but prompts[0] is not"),
    ],
)
def test_reward_function_refuses_bad_arguments(tiny_function, prompts, completions, needle):
    with pytest.raises(UserError) as caught:
        tiny_function(prompts=prompts, completions=completions)
    assert needle in str(caught.value)
    assert isinstance(caught.value, ValueError)  # TRL users catching ValueError still catch it


def test_reward_function_scores_an_empty_completion(tiny_function):
    """A policy may stop at once: an empty completion is a completion (training's 'is empty' rule is for data)."""
    rewards = tiny_function(prompts=["Q: hi? ", "Q: hi? "], completions=["", "A: yes."])
    assert len(rewards) == 2 and all(isinstance(r, float) for r in rewards)


@pytest.mark.parametrize(
    "options, needle",
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": "8"}, "batch_size must be an integer >= 1, got '8'"),
        ({"batch_size": True}, "batch_size must be an integer >= 1, got True"),
        ({"device": "gpu0"}, "device 'gpu0' is not a device"),
        ({"device": 3}, "device must be a device name"),
        ({"normalize": "yes"}, "normalize must be True or False, got 'yes'"),
        ({"padding_free": None}, "padding_free must be True or False, got None"),
        ({"show_progress": 1}, "show_progress must be True or False, got 1"),
        ({"truncation": "right"}, "truncation must be 'left', 'skip' or 'error', got 'right'"),
        ({"max_length": 1}, "max_length must be an integer >= 2"),
        ({"model": 42}, "model must be a model folder, a Hub id or a loaded PreTrainedModel, got int"),
    ],
)
def test_scorer_constructor_refuses_bad_arguments(tiny_model_dir, options, needle):
    with pytest.raises(UserError) as caught:
        RewardFunction(**{"model": tiny_model_dir, **options})
    assert needle in str(caught.value)


def test_a_loaded_model_without_its_tokenizer_is_refused(bert_scorer):
    with pytest.raises(UserError, match="a loaded model needs its tokenizer"):
        RewardScorer(bert_scorer.model)


def test_row_methods_refuse_bad_rows(bert_scorer):
    with pytest.raises(UserError, match="rows must be a list with one item per sequence, got a bare string"):
        bert_scorer.score_pairs("chosen")
    with pytest.raises(UserError, match=r"rows\[1\]: field 'chosen' must be a string, got NoneType"):
        bert_scorer.score_pairs([{"chosen": "a", "rejected": "b"}, {"chosen": None, "rejected": "b"}])
    with pytest.raises(UserError, match=r"rows\[0\]: missing field\(s\) 'rejected'"):
        bert_scorer.score_pairs([{"chosen": "a"}])
    with pytest.raises(UserError, match="kind must be 'texts', 'responses' or 'chats', got 'text'"):
        bert_scorer.score_rows([{"text": "a"}], "text")
    with pytest.raises(UserError, match=r"rows\[0\]: missing field\(s\) 'completions'"):
        bert_scorer.score_rankings([{"prompt": "a"}])
    with pytest.raises(UserError, match=r"groups\[0\]\[1\] must be a non-empty list of token ids"):
        bert_scorer.score_groups([[[2, 5, 3], []]])
    with pytest.raises(UserError, match=r"groups\[0\]\[0\] must be a non-empty list of token ids \(ints\)"):
        bert_scorer.score_groups([[[2, 5.0, 3]]])
    with pytest.raises(UserError, match="sequences must be a list of token-id lists, got NoneType"):
        bert_scorer.score_ids(None)
    for bad in ([2, 5], [[2, 5], [True]], [[2, 5], "25"]):
        with pytest.raises(UserError, match=r"sequences\[\d\] must be a non-empty list of token ids \(ints\)"):
            bert_scorer.score_ids(bad)
    pair = [{"chosen": "a", "rejected": "b"}]
    with pytest.raises(UserError, match="loss_options must be a LossOptions or None, got dict"):
        bert_scorer.score_pairs(pair, loss_options={"label_smoothing": 0.1})
    with pytest.raises(UserError, match="num_bins must be an integer >= 1, got 0"):
        bert_scorer.score_pairs(pair, num_bins=0)


# --- item 8: every scoring path checks lengths ------------------------------------------------------
def long_pairs() -> list[dict]:
    """Four pairs, rows 2 and 4 with a chosen side past the 16 positions; rows 1 and 3 short."""
    rows = [{"prompt": "Q: ", "chosen": "yes", "rejected": "no"} for _ in range(4)]
    for i in (1, 3):
        rows[i]["chosen"] += LONG * (i // 2 + 1)
    return rows


def long_rows(kind: str) -> list[dict]:
    """`long_pairs` as rows of `kind`: the chosen sides as texts, or as a ranking's first completion."""
    if kind == "texts":
        return [{"text": p["prompt"] + p["chosen"]} for p in long_pairs()]
    if kind == "rankings":
        return [{"prompt": p["prompt"], "completions": [p["chosen"], p["rejected"]]} for p in long_pairs()]
    return long_pairs()


def score_cli(bert16: Path, path: Path, out: Path, *options: str, capsys) -> tuple[int, str, str]:
    argv = ["--model", str(bert16), "--input", str(path), "--output", str(out), "--device", "cpu", *options]
    return invoke(score.cli, argv, capsys)


@pytest.mark.parametrize("kind", ["pairs", "texts", "rankings"])
def test_score_py_cuts_long_rows_on_the_left_by_default(bert16, bert_scorer, tmp_path, capsys, kind):
    pairs, rows = long_pairs(), long_rows(kind)
    out = tmp_path / "out.jsonl"

    code, stdout, err = score_cli(bert16, write_jsonl(tmp_path / "in.jsonl", rows), out, capsys=capsys)

    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert f"truncated 2 of {8 if kind != 'texts' else 4} sequences over 16 tokens (the model's 16 positions)" in stdout
    assert "row 2, row 4" in stdout
    got = read_jsonl(out)
    for row, scored in zip(pairs, got):
        ids = bert_scorer.encode(row["prompt"], row["chosen"])
        seen = expected_cut(bert_scorer, ids, POSITIONS) if len(ids) > POSITIONS else ids
        assert seen[0] == bert_scorer.tokenizer.cls_token_id  # the encoder reads [CLS]: it stays
        reward = {"pairs": "r_chosen", "texts": "reward", "rankings": "rewards"}[kind]
        value = scored[reward][0] if kind == "rankings" else scored[reward]
        assert value == pytest.approx(direct(bert_scorer, seen), abs=1e-5)


@pytest.mark.parametrize("kind", ["pairs", "texts", "rankings"])
def test_score_py_skip_leaves_long_rows_without_a_reward(bert16, tmp_path, capsys, kind):
    rows = long_rows(kind)
    out = tmp_path / "out.jsonl"

    code, stdout, err = score_cli(
        bert16, write_jsonl(tmp_path / "in.jsonl", rows), out, "--truncation", "skip", capsys=capsys
    )

    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert "skipped 2 of" in stdout and "over 16 tokens (the model's 16 positions), no reward: row 2, row 4" in stdout
    got = read_jsonl(out)
    assert len(got) == 4  # every row written, the skipped ones with null rewards
    if kind == "pairs":
        assert "pairs 2 (2 skipped, rewards null)" in stdout
        assert [g["r_chosen"] is None and g["r_rejected"] is None for g in got] == [False, True, False, True]
    elif kind == "texts":
        assert "rows 2 (2 skipped, reward null)" in stdout
        assert [g["reward"] is None for g in got] == [False, True, False, True]
    else:
        assert [g["rewards"][0] is None for g in got] == [False, True, False, True]
        assert got[1]["rewards"][1] is not None and got[1]["ranking"] == [1]  # only the scored completion ranks


def test_explain_covers_the_scored_pairs_only(bert16, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    path = write_jsonl(tmp_path / "in.jsonl", long_pairs())
    code, stdout, err = score_cli(bert16, path, out, "--truncation", "skip", "--explain", capsys=capsys)
    assert code == 0 and "Traceback" not in err, err[-2000:]
    assert "loss explained for N = 2 pairs" in stdout
    got = read_jsonl(out)
    assert ["loss" in g for g in got] == [True, False, True, False]  # a skipped pair has no terms


def test_score_py_error_names_the_long_rows(bert16, tmp_path, capsys):
    path = write_jsonl(tmp_path / "in.jsonl", long_pairs())
    out = tmp_path / "out.jsonl"
    code, _, err = score_cli(bert16, path, out, "--truncation", "error", capsys=capsys)
    assert_clean_error(
        code, err, ["2 of 8 sequences are longer than 16 tokens (the model's 16 positions)", "row 2, row 4"]
    )
    assert not out.exists()
    code, _, err = score_cli(bert16, path, out, "--truncation", "error", "--debug", capsys=capsys)
    assert_debug_shows_traceback(code, err)


def test_score_py_max_length_is_a_lower_limit(bert16, tmp_path, capsys):
    rows = [{"text": "yes"}, {"text": "Q: yes, and a few words"}]  # 5 and 18 tokens with [CLS] and [SEP]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    code, stdout, err = score_cli(bert16, path, tmp_path / "o.jsonl", "--max_length", "5", capsys=capsys)
    assert code == 0, err
    assert "truncated 1 of 2 sequences over 5 tokens (max_length 5)" in stdout and "): row 2\n" in stdout


def test_reward_function_cuts_and_warns_once(bert16, bert_scorer):
    fn = RewardFunction(bert16, device="cpu")
    prompts, completions = ["Q: ", "Q: "], ["yes", "yes" + LONG]

    with pytest.warns(UserWarning, match=r"truncated 1 of 2 completions over 16 tokens .*: completions\[1\]"):
        rewards = fn(prompts=prompts, completions=completions)
    ids = bert_scorer.encode("Q: ", completions[1])
    assert rewards[1] == pytest.approx(direct(bert_scorer, expected_cut(bert_scorer, ids, POSITIONS)), abs=1e-5)
    assert rewards[0] == pytest.approx(direct(bert_scorer, bert_scorer.encode("Q: ", "yes")), abs=1e-5)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: a second call that truncates again is quiet
        fn(prompts=prompts, completions=completions)
    assert fn.length_counts == {"completions": 4, "truncated": 2, "skipped": 0}


def test_reward_function_skip_returns_none_for_trl(bert16):
    """TRL's GRPO turns None into NaN and gives that completion no advantage (reward/eval/lengths.py)."""
    fn = RewardFunction(bert16, device="cpu", truncation="skip")
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 completions"):
        rewards = fn(prompts=["Q: "] * 3, completions=["yes", "yes" + LONG, "no"])
    assert rewards[1] is None and isinstance(rewards[0], float) and isinstance(rewards[2], float)


def test_a_decoder_cut_keeps_bos_and_the_last_tokens(tiny_model_dir):
    """The tiny Llama (RoPE: no position limit) with max_length 8: packed scoring of the cut ids gives their
    own forward's reward, the BOS kept in front."""
    fn = RewardFunction(tiny_model_dir, device="cpu", max_length=8)
    completions = [" yes", " Paris is the capital of France, and a fine city too.", " no, it is not"]
    with pytest.warns(UserWarning, match="over 8 tokens"):
        rewards = fn(prompts=["Q: capital of France?"] * 3, completions=completions)
    for completion, reward in zip(completions, rewards):
        ids = fn.encode("Q: capital of France?", completion)
        seen = expected_cut(fn, ids, 8) if len(ids) > 8 else ids
        assert seen[0] == fn.tokenizer.bos_token_id
        assert reward == pytest.approx(direct(fn, seen), abs=1e-4)


def test_the_forward_refuses_a_sequence_past_the_positions(bert_scorer):
    """The last line: group_rewards never hands the embedding more positions than it has."""
    with pytest.raises(UserError, match="a sequence of 17 tokens is longer than the model's 16 positions"):
        group_rewards(bert_scorer.model, [[list(range(5, 5 + POSITIONS + 1))]], bert_scorer.tokenizer.pad_token_id)


# --- item 9: a row too large to tokenize is never tokenized -----------------------------------------
def spy_on_tokenizer(monkeypatch, tokenizer) -> list[int]:
    """The length of every text the tokenizer is called on."""
    seen, call = [], type(tokenizer).__call__

    def recording(self, text=None, *args, **kwargs):
        seen.append(len(text) if isinstance(text, str) else max(map(len, text), default=0))
        return call(self, text, *args, **kwargs)

    monkeypatch.setattr(type(tokenizer), "__call__", recording)
    return seen


def test_a_row_too_large_for_the_positions_is_skipped_untokenized(bert16, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "HUGE_TEXT_CHARS", 1_000)  # stands for 1,000,000: the test stays small
    bound = chars_per_token(build_wordpiece_tokenizer()) * POSITIONS  # 100 * 16: WordPiece's [UNK] takes a word
    rows = [{"text": "yes"}, {"text": "word " * (bound // 5 + 1)}, {"text": "no"}]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    scorer = RewardScorer(bert16, device="cpu", show_progress=False)
    seen = spy_on_tokenizer(monkeypatch, scorer.tokenizer)

    got = scorer.score_rows(rows, "texts")

    assert got[1]["reward"] is None and got[0]["reward"] is not None and max(seen) < bound
    assert scorer.last_fitting.lines()[0].startswith(f"skipped 1 of 3 sequences of more than {bound:,} characters")
    code, stdout, _ = score_cli(bert16, path, tmp_path / "o.jsonl", capsys=capsys)
    assert code == 0 and "not tokenized, no reward: row 2" in stdout and max(seen) < bound
    code, _, err = score_cli(bert16, path, tmp_path / "o.jsonl", "--truncation", "error", capsys=capsys)
    assert_clean_error(code, err, [f"1 of 3 texts have more than {bound:,} characters", "row 2"])


def test_a_row_over_the_bound_but_not_huge_is_tokenized_and_cut_so_it_gets_a_reward(bert16):
    """Skipping untokenized is for text too large to tokenize safely (over 1M characters): a 2,000-character row
    is past what 16 positions can hold at 100 characters a token, yet it is cut on the left and scored."""
    text = "word " * 400
    assert len(text) > chars_per_token(build_wordpiece_tokenizer()) * POSITIONS
    scorer = RewardScorer(bert16, device="cpu", show_progress=False)
    got = scorer.score_rows([{"text": text}], "texts")
    assert isinstance(got[0]["reward"], float)
    assert scorer.last_fitting.lines()[0].startswith("truncated 1 of 1 sequences")


def test_without_a_token_limit_a_row_over_the_cap_is_skipped_untokenized(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(lengths, "MAX_ROW_CHARS", 2_000)  # stands for 1,000,000: the test stays small
    fn = RewardFunction(tiny_model_dir, device="cpu")
    assert fn.rule.tokens is None and fn.rule.chars == 2_000
    seen = spy_on_tokenizer(monkeypatch, fn.tokenizer)
    with pytest.warns(UserWarning, match=r"of more than 2,000 characters .*not tokenized, no reward: completions\[1\]"):
        rewards = fn(prompts=["Q: "] * 2, completions=["yes", "yes " * 1_000])
    assert rewards[1] is None and isinstance(rewards[0], float) and max(seen) < 2_000


@pytest.mark.parametrize("build", [build_tiny_tokenizer, build_gpt2_style_tokenizer, build_wordpiece_tokenizer])
def test_no_token_covers_more_characters_than_the_bound(build):
    """The bound the size check relies on: characters <= chars_per_token x tokens, on ordinary text."""
    tokenizer = build()
    bound = chars_per_token(tokenizer)
    for row in generate_pairs(50, seed=11):
        text = row["prompt"] + row["chosen"] + "Ünïcödé, digits 1234567890 and !?#@ punctuation"
        assert len(text) <= bound * len(tokenizer(text, add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize(
    "flag, value, needle",
    [
        ("--device", "gpu0", "--device 'gpu0' is not a device"),
        ("--truncation", "right", "--truncation must be 'left', 'skip' or 'error', got 'right'"),
        ("--max_length", "1", "--max_length must be >= 2"),
    ],
)
def test_score_py_refuses_a_bad_length_or_device_option(tiny_model_dir, tmp_path, capsys, flag, value, needle):
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": "a"}])
    code, stdout, err = invoke(score.cli, ["--model", str(tiny_model_dir), "--input", str(path), flag, value], capsys)
    assert_clean_error(code, err, [needle])
    assert "scoring" not in stdout  # refused before anything loaded
