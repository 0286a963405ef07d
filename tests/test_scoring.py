"""score.py and reward.scoring against an untrained tiny model: metrics, written rows, and rewards that
match a direct one-sequence-at-a-time forward pass (so batching and padding do not change a score)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import score
from reward.config import ScoreConfig, TrainConfig, parse_score_config
from reward.synthetic import generate_pairs

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_score(model_dir: Path, input_path: Path, output: Path, batch_size: int = 3) -> dict:
    argv = ["--model", str(model_dir), "--input", str(input_path), "--output", str(output)]
    return score.main(parse_score_config(argv + ["--batch_size", str(batch_size), "--device", "cpu"]))


@pytest.fixture(scope="module")
def direct(tiny_model_dir):
    """reward(ids) from the saved folder, one sequence per forward pass (no padding at all)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()

    cache: dict[tuple[int, ...], float] = {}

    @torch.no_grad()
    def reward_of_ids(ids: list[int]) -> float:
        key = tuple(ids)
        if key not in cache:
            cache[key] = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        return cache[key]

    def reward_of_text(text: str) -> float:
        return reward_of_ids(tokenizer(text + tokenizer.eos_token)["input_ids"])

    return tokenizer, reward_of_ids, reward_of_text


@pytest.fixture()
def quiet_datasets():
    """No "Generating train split" bars on stderr, so stderr holds only what score.cli prints."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield
    if was_enabled:
        datasets.enable_progress_bars()


@pytest.fixture()
def pair_rows() -> list[dict]:
    # varied lengths, so batches of 3 mix long and short sequences and need padding
    return [{**r, "id": i} for i, r in enumerate(generate_pairs(10, seed=3))]


def test_score_pairs_prints_metrics_and_writes_every_row(tiny_model_dir, tmp_path, pair_rows, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", pair_rows)
    out = tmp_path / "sub" / "scored.jsonl"

    metrics = run_score(tiny_model_dir, path, out)

    printed = capsys.readouterr().out
    assert "pairs 10 | accuracy" in printed and "loss" in printed and f"wrote 10 rows to {out}" in printed
    scored = read_jsonl(out)
    assert len(scored) == len(pair_rows)
    for row, got in zip(pair_rows, scored):
        assert {k: got[k] for k in row} == row
        assert set(got) == set(row) | {"r_chosen", "r_rejected"}
        assert isinstance(got["r_chosen"], float) and isinstance(got["r_rejected"], float)
    assert not (tmp_path / "sub" / "scored.jsonl.tmp").exists()

    deltas = [r["r_chosen"] - r["r_rejected"] for r in scored]
    assert metrics["pairs"] == 10
    assert metrics["accuracy"] == sum(d > 0 for d in deltas) / len(deltas)
    # -logsigmoid(d) = log(1 + exp(-d)), fine for the small rewards of an untrained model
    assert metrics["loss"] == pytest.approx(sum(math.log1p(math.exp(-d)) for d in deltas) / len(deltas), abs=1e-5)
    assert metrics["margin"] == pytest.approx(sum(deltas) / len(deltas), abs=1e-5)
    rewards = [r["r_chosen"] for r in scored] + [r["r_rejected"] for r in scored]
    assert metrics["reward_min"] == pytest.approx(min(rewards)) and metrics["reward_max"] == pytest.approx(max(rewards))
    assert len(set(rewards)) > 1  # the model does not give every sequence one constant score


@pytest.mark.parametrize("batch_size", [4, 16])
def test_pair_rewards_equal_unbatched_forward(tiny_model_dir, tmp_path, pair_rows, direct, batch_size):
    tokenizer, _, reward_of_text = direct
    lengths = {
        len(tokenizer(r["prompt"] + r[s] + tokenizer.eos_token)["input_ids"])
        for r in pair_rows
        for s in ("chosen", "rejected")
    }
    assert len(lengths) > 3  # batches mix lengths, so rows are padded
    path = write_jsonl(tmp_path / "pairs.jsonl", pair_rows)
    out = tmp_path / "scored.jsonl"

    run_score(tiny_model_dir, path, out, batch_size=batch_size)

    for row in read_jsonl(out):
        assert row["r_chosen"] == pytest.approx(reward_of_text(row["prompt"] + row["chosen"]), abs=1e-5)
        assert row["r_rejected"] == pytest.approx(reward_of_text(row["prompt"] + row["rejected"]), abs=1e-5)


def test_texts_responses_and_chats_get_a_reward_per_row(tiny_model_dir, tmp_path, direct):
    tokenizer, reward_of_ids, reward_of_text = direct
    pairs = generate_pairs(6, seed=9)
    texts = [{"text": p["prompt"] + p["chosen"], "n": i} for i, p in enumerate(pairs)]
    responses = [{"prompt": "", "response": t["text"], "n": t["n"]} for t in texts]
    responses += [{"prompt": p["prompt"], "response": p["rejected"], "n": 100 + i} for i, p in enumerate(pairs[:3])]
    chats = [
        {
            "messages": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["chosen"]}],
            "n": i,
        }
        for i, p in enumerate(pairs)
    ]

    scored = {}
    for name, rows in (("texts", texts), ("responses", responses), ("chats", chats)):
        out = tmp_path / f"{name}.scored.jsonl"
        summary = run_score(tiny_model_dir, write_jsonl(tmp_path / f"{name}.jsonl", rows), out)
        got = read_jsonl(out)
        assert len(got) == len(rows) and summary["rows"] == len(rows)
        for row, g in zip(rows, got):
            assert {k: g[k] for k in row} == row
            assert set(g) == set(row) | {"reward"}
            assert isinstance(g["reward"], float)
        rewards = [g["reward"] for g in got]
        assert summary["reward_mean"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-6)
        scored[name] = got

    for text_row, resp_row in zip(scored["texts"], scored["responses"]):
        assert text_row["reward"] == pytest.approx(resp_row["reward"], abs=1e-5)
        assert text_row["reward"] == pytest.approx(reward_of_text(text_row["text"]), abs=1e-5)
    for resp_row in scored["responses"][len(texts) :]:  # prompt + response, joined without a separator
        assert resp_row["reward"] == pytest.approx(reward_of_text(resp_row["prompt"] + resp_row["response"]), abs=1e-5)
    for chat_row in scored["chats"]:
        ids = tokenizer.apply_chat_template(chat_row["messages"], tokenize=True, return_dict=True)["input_ids"]
        assert chat_row["reward"] == pytest.approx(reward_of_ids(list(ids)), abs=1e-5)


def test_unrecognised_file_is_a_clean_error(tiny_model_dir, tmp_path, capsys, quiet_datasets):
    path = write_jsonl(tmp_path / "foo.jsonl", [{"foo": 1}, {"foo": 2}])
    out = tmp_path / "out.jsonl"

    code = score.cli(["--model", str(tiny_model_dir), "--input", str(path), "--output", str(out)])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error:")
    assert "foo" in err and "Traceback" not in err
    assert not out.exists()


def test_invalid_pair_file_is_a_clean_error(tiny_model_dir, tmp_path, capsys, quiet_datasets):
    rows = generate_pairs(4, seed=1)
    rows[1]["chosen"] = ""
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)

    code = score.cli(["--model", str(tiny_model_dir), "--input", str(path)])

    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert str(path) in err and "row 2:" in err and "'chosen'" in err


def test_non_string_text_is_a_clean_error(tiny_model_dir, tmp_path, capsys, quiet_datasets):
    path = write_jsonl(tmp_path / "texts.jsonl", [{"text": "fine"}, {"text": None}])
    code = score.cli(["--model", str(tiny_model_dir), "--input", str(path)])
    assert code == 2 and capsys.readouterr().err.startswith("error:")


def run_help(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_score_help_lists_every_option():
    text = run_help("score.py")
    assert text.startswith("usage: score.py")
    for f in fields(ScoreConfig):
        assert f"--{f.name}" in text, f.name


def test_train_help_lists_every_option():
    text = run_help("train.py")
    assert text.startswith("usage: train.py")
    names = [f.name for f in fields(TrainConfig)]
    assert len(names) > 30
    for name in names + ["config"]:
        assert f"--{name}" in text, name
