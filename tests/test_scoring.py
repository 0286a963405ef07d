"""score.py and reward.eval.scoring against an untrained tiny model: metrics, written rows, and rewards that
match a direct one-sequence-at-a-time forward pass (so batching and padding do not change a score)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import score
from reward.config import TrainConfig
from reward.eval.score_cli import ScoreConfig, parse_score_config
from reward.loss import bradley_terry_loss
from reward.metrics import diagnose
from reward.presets.synthetic import generate_pairs

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
    rows[1]["chosen"] = 42  # a wrong type (an empty response to a prompt is a valid one: it is scored)
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)

    code = score.cli(["--model", str(tiny_model_dir), "--input", str(path)])

    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert str(path) in err and "row 2:" in err and "'chosen'" in err


@pytest.mark.slow
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


@pytest.mark.slow
def test_score_help_lists_every_option():
    text = run_help("score.py")
    assert text.startswith("usage: score.py")
    for f in fields(ScoreConfig):
        assert f"--{f.name}" in text, f.name


@pytest.mark.slow
def test_train_help_lists_every_option():
    text = run_help("train.py")
    assert text.startswith("usage: train.py")
    names = [f.name for f in fields(TrainConfig)]
    assert len(names) > 30
    for name in names + ["config"]:
        assert f"--{name}" in text, name


@pytest.mark.slow
@pytest.mark.parametrize("command, script", [("reward-train", "train.py"), ("reward-score", "score.py")])
def test_console_scripts_are_the_same_commands(command, script, tmp_path):
    """`pip install -e .` puts reward-train / reward-score beside the interpreter; run outside the repo,
    they print the same options as the scripts (the commands live in the package, not in the repo root)."""
    path = Path(sys.executable).parent / command
    assert path.exists(), f"{command} not installed: pip install -e ."
    proc = subprocess.run([str(path), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {command}")
    assert option_names(proc.stdout) == option_names(run_help(script))


def option_names(help_text: str) -> list[str]:
    return sorted(set(re.findall(r"--\w+", help_text)))


# --- diagnostics and --explain ----------------------------------------------------------------------
def test_pair_summary_has_the_diagnostics(tiny_model_dir, tmp_path, pair_rows, direct, capsys):
    tokenizer, _, _ = direct
    rows = [{**r, "subset": "odd" if r["id"] % 2 else "even"} for r in pair_rows]
    out = tmp_path / "scored.jsonl"
    rel = tmp_path / "rel" / "reliability.json"

    summary = score.main(
        parse_score_config(
            ["--model", str(tiny_model_dir), "--input", str(write_jsonl(tmp_path / "p.jsonl", rows))]
            + ["--output", str(out), "--reliability_out", str(rel), "--calibration_bins", "5", "--device", "cpu"]
        )
    )

    printed = capsys.readouterr().out
    assert printed.index("pairs 10 | accuracy") < printed.index("calibration: ECE") < printed.index("length bias")
    assert "accuracy by subset" in printed
    scored = read_jsonl(out)
    assert set(scored[0]) == set(rows[0]) | {"r_chosen", "r_rejected"}  # no explanation fields without --explain
    r_c = torch.tensor([r["r_chosen"] for r in scored])
    r_r = torch.tensor([r["r_rejected"] for r in scored])
    lengths = [
        torch.tensor([len(tokenizer(r["prompt"] + r[side] + tokenizer.eos_token)["input_ids"]) for r in rows])
        for side in ("chosen", "rejected")
    ]
    expected = diagnose(r_c, r_r, *lengths, [r["subset"] for r in rows], num_bins=5)
    assert summary["ece"] == pytest.approx(expected.calibration.ece)
    assert summary["length_corr"] == pytest.approx(expected.length_corr)
    odd = [d > 0 for d, r in zip((r_c - r_r).tolist(), rows) if r["subset"] == "odd"]
    assert summary["accuracy/odd"] == sum(odd) / len(odd)
    table = json.loads(rel.read_text())
    assert table["ece"] == pytest.approx(summary["ece"]) and len(table["bins"]) == 5
    assert sum(b["count"] for b in table["bins"]) == 10


def test_explain_output_rows_match_the_formulas(tiny_model_dir, tmp_path, pair_rows, capsys):
    rows = [{**r, "margin": 0.5 * (r["id"] % 3)} for r in pair_rows]
    out = tmp_path / "explained.jsonl"

    summary = score.main(
        parse_score_config(
            ["--model", str(tiny_model_dir), "--input", str(write_jsonl(tmp_path / "p.jsonl", rows))]
            + ["--output", str(out), "--explain", "--explain_rows", "3", "--device", "cpu"]
        )
    )

    printed = capsys.readouterr().out
    assert "loss explained for N = 10 pairs" in printed and "7 more pairs not shown" in printed
    assert "totals: N 10" in printed and "check pair 1 by hand" in printed
    got = read_jsonl(out)
    assert set(got[0]) == set(rows[0]) | {
        "r_chosen",
        "r_rejected",
        "delta",
        "margin_term",
        "p_chosen",
        "loss",
        "grad_r_chosen",
        "grad_r_rejected",
    }
    for row in got:
        z = row["r_chosen"] - row["r_rejected"] - row["margin"]
        assert row["margin_term"] == row["margin"]
        assert row["p_chosen"] == pytest.approx(1 / (1 + math.exp(-z)))
        assert row["loss"] == pytest.approx(math.log1p(math.exp(-z)))
        assert row["grad_r_chosen"] == pytest.approx((row["p_chosen"] - 1) / 10)
        assert row["grad_r_rejected"] == pytest.approx(-row["grad_r_chosen"])
    assert summary["loss"] == pytest.approx(sum(r["loss"] for r in got) / 10, abs=1e-6)


def test_explain_uses_the_training_loss_options_of_the_model(tiny_model_dir, tmp_path, pair_rows, capsys):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "training_config.json").write_text(
        json.dumps({"center_rewards_coefficient": 0.5, "label_smoothing": 0.1})
    )
    path = write_jsonl(tmp_path / "p.jsonl", pair_rows)

    def explain(*extra: str) -> tuple[dict, list[dict]]:
        out = tmp_path / "out.jsonl"
        argv = ["--model", str(model_dir), "--input", str(path), "--output", str(out), "--explain", "--device", "cpu"]
        return score.main(parse_score_config(argv + list(extra))), read_jsonl(out)

    summary, got = explain()
    assert "label_smoothing 0.1" in capsys.readouterr().out
    r_c = torch.tensor([r["r_chosen"] for r in got])
    r_r = torch.tensor([r["r_rejected"] for r in got])
    training_loss = bradley_terry_loss(r_c, r_r, None, 0.5, 0.1).loss.item()
    assert summary["loss"] == pytest.approx(training_loss, abs=1e-6)
    assert sum(r["loss"] for r in got) / len(got) == pytest.approx(training_loss, abs=1e-6)
    for row in got:
        s = row["r_chosen"] + row["r_rejected"]
        assert row["center_term"] == pytest.approx(0.5 * s**2)
        assert row["grad_r_chosen"] == pytest.approx((row["p_chosen"] - 0.9 + 2 * 0.5 * s) / 10)
        assert "margin_term" not in row  # no margin column

    summary, got = explain("--center_rewards_coefficient", "0", "--label_smoothing", "0")  # flags win
    assert "center_term" not in got[0]
    assert summary["loss"] == pytest.approx(bradley_terry_loss(r_c, r_r).loss.item(), abs=1e-6)


@pytest.mark.parametrize("option", [["--explain"], ["--plot", "x.png"], ["--reliability_out", "r.json"]])
def test_pair_only_options_on_texts_are_a_clean_error(tiny_model_dir, tmp_path, option, capsys, quiet_datasets):
    path = write_jsonl(tmp_path / "texts.jsonl", [{"text": "a b c"}])
    assert score.cli(["--model", str(tiny_model_dir), "--input", str(path), *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and option[0] in err and "pairs" in err


def test_plot_without_matplotlib_fails_before_scoring(tiny_model_dir, tmp_path, pair_rows, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    path = write_jsonl(tmp_path / "p.jsonl", pair_rows)
    out = tmp_path / "scored.jsonl"

    code = score.cli(["--model", str(tiny_model_dir), "--input", str(path), "--plot", "p.png", "--output", str(out)])

    captured = capsys.readouterr()
    assert code == 2 and 'pip install -e ".[plot]"' in captured.err and "Traceback" not in captured.err
    assert "scoring" not in captured.out and not out.exists()


def test_plot_writes_an_image(tiny_model_dir, tmp_path, pair_rows):
    pytest.importorskip("matplotlib")
    path = write_jsonl(tmp_path / "p.jsonl", pair_rows)
    image = tmp_path / "fig" / "scores.png"
    score.main(parse_score_config(["--model", str(tiny_model_dir), "--input", str(path), "--plot", str(image)]))
    assert image.read_bytes()[:4] == b"\x89PNG"
