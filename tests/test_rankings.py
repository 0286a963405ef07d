"""Completion ranking with score.py: a prompt and K completions -> K rewards (as prompt/response rows
would get them), the ranking, and best-of-n accuracy against `best` / `scores` / `ranking` columns."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import score
from reward.eval.score_cli import parse_score_config
from reward.eval.scoring import best_of_n_metrics

PROMPT = "Could you name a fruit for me?"
COMPLETIONS = [" Happy to help: mango.", " Sure: violin.", " I would say a banana, that one comes to mind.", " Red."]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reward_of(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()

    @torch.no_grad()
    def reward(prompt: str, completion: str) -> float:
        ids = tokenizer(prompt + completion + tokenizer.eos_token)["input_ids"]  # training's format
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()

    return reward


def test_each_completion_gets_its_reward_and_the_ranking(tiny_model_dir, tmp_path, reward_of, capsys):
    rows = [{"id": 7, "prompt": PROMPT, "completions": COMPLETIONS}, {"prompt": "", "completions": COMPLETIONS[:2]}]
    out = tmp_path / "ranked.jsonl"
    argv = ["--model", str(tiny_model_dir), "--input", str(write_jsonl(tmp_path / "c.jsonl", rows))]
    summary = score.main(parse_score_config([*argv, "--output", str(out), "--batch_size", "3"]))
    assert summary == {"prompts": 2, "completions": 6}
    assert "prompts 2 | completions 6" in capsys.readouterr().out
    for row, got in zip(rows, read_jsonl(out)):
        assert {k: got[k] for k in row} == row
        want = [reward_of(row["prompt"], c) for c in row["completions"]]
        assert got["rewards"] == pytest.approx(want, abs=1e-5)
        assert got["ranking"] == sorted(range(len(want)), key=lambda k: -want[k])
        assert len(set(got["rewards"])) == len(want)  # distinct: the ranking is not trivial


def test_best_of_n_accuracy_against_best_scores_and_ranking_columns(tiny_model_dir, tmp_path, reward_of, capsys):
    rewards = [reward_of(PROMPT, c) for c in COMPLETIONS]
    top = max(range(4), key=rewards.__getitem__)
    bottom = min(range(4), key=rewards.__getitem__)
    other = next(k for k in range(4) if k not in (top, bottom))
    tied = [1.0] * 4
    tied[top], tied[other] = 5.0, 5.0  # two best completions, the model's top among them
    order = [bottom, *[k for k in range(4) if k != bottom]]  # best first: the model's worst
    rows = [
        {"prompt": PROMPT, "completions": COMPLETIONS, "best": top},  # right
        {"prompt": PROMPT, "completions": COMPLETIONS, "best": bottom},  # wrong
        {"prompt": PROMPT, "completions": COMPLETIONS, "scores": tied},  # right (one of two best)
        {"prompt": PROMPT, "completions": COMPLETIONS, "ranking": order},  # wrong
    ]
    argv = ["--model", str(tiny_model_dir), "--input", str(write_jsonl(tmp_path / "c.jsonl", rows))]
    summary = score.main(parse_score_config(argv))
    assert summary["best_of_n_accuracy"] == pytest.approx(2 / 4)
    assert summary["best_of_n_chance"] == pytest.approx((1 / 4 + 1 / 4 + 2 / 4 + 1 / 4) / 4)
    assert "best-of-n accuracy 0.5000 (picking at random: 0.3125)" in capsys.readouterr().out


def test_a_reward_tie_at_the_top_is_wrong():
    metrics = best_of_n_metrics([{"best": 0}], [[1.0, 1.0, 0.0]])
    assert metrics["best_of_n_accuracy"] == 0.0


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "Q", "completions": []}, "field 'completions' must be a non-empty list"),
        ({"prompt": "Q", "completions": ["a", 3]}, "field 'completions' must be a string"),
        (
            {"prompt": "Q", "completions": ["a", "b"], "scores": [1]},
            "field 'scores' must be a list of 2 finite numbers",
        ),
        ({"prompt": "Q", "completions": ["a", "b"], "best": 2}, "field 'best' must be an index in 0..1"),
        ({"prompt": "Q", "completions": ["a", "b"], "ranking": [0, 0]}, "field 'ranking' must list the indices 0..1"),
    ],
)
def test_bad_ranking_rows_are_one_line_errors(tiny_model_dir, tmp_path, row, message, capsys, quiet_datasets):
    path = write_jsonl(tmp_path / "c.jsonl", [row])
    assert score.cli(["--model", str(tiny_model_dir), "--input", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"row 1: {message}" in err, err


def test_rankings_whose_scores_all_tie_report_no_comparable_pairs_not_an_accuracy(tiny_model_dir, tmp_path, capsys):
    rows = [{"prompt": f"Q{i}:", "completions": [" a", " b", " c"], "scores": [2, 2, 2]} for i in range(3)]
    data = tmp_path / "ties.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored.jsonl"
    assert score.cli(["--model", str(tiny_model_dir), "--input", str(data), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no comparable pairs: all 9 comparisons tie in the scores (no accuracy)" in printed
    assert "accuracy 0.0000" not in printed
    assert all(len(json.loads(line)["rewards"]) == 3 for line in out.read_text().splitlines())
