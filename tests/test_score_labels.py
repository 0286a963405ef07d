"""score.py on graded labels (#31): rated completions get a reward each and how the rewards follow the
ratings (Pearson, Spearman, the accuracy on the pairs the ratings imply); pairs with a strength get the
accuracy per strength level; bad labels are named by row and field."""

from __future__ import annotations

import json

import pytest

import score
from reward.errors import UserError
from reward.eval.score_cli import parse_score_config
from reward.eval.scoring import RewardScorer
from reward.labels.metrics import accuracy_by_strength, rating_metrics
from reward.labels.rows import group_by_prompt
from reward.presets.graded import generate_ratings, generate_strength_pairs


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def run(model, path, *options) -> dict:
    return score.main(parse_score_config(["--model", str(model), "--input", path, *options]))


def test_rated_completions_get_rewards_and_the_rating_metrics(trained_tiny_dir, tmp_path, capsys):
    rows = generate_ratings(8, completions=3, seed=2)
    out = tmp_path / "scored.jsonl"
    summary = run(trained_tiny_dir, write(tmp_path / "rated.jsonl", rows), "--output", str(out))
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    scorer = RewardScorer(str(trained_tiny_dir), show_progress=False)
    want = scorer.rewards([r["prompt"] for r in rows], [r["completion"] for r in rows])
    assert [r["reward"] for r in scored] == pytest.approx(want, abs=1e-5)
    groups = group_by_prompt(rows)  # runs of adjacent rows with one prompt, as training groups them
    order = [i for group in groups for i in group]
    expected = rating_metrics(
        [want[i] for i in order], [float(rows[i]["score"]) for i in order], list(map(len, groups))
    )
    assert summary["implied_pairs"] == expected["implied_pairs"]
    for key in ("pearson", "spearman", "implied_pair_accuracy"):
        assert summary[key] == pytest.approx(expected[key], abs=1e-5)
    printed = capsys.readouterr().out
    assert "rated 24 completions | scores 0..3" in printed and "reward vs rating: Pearson" in printed


def test_pairs_with_a_strength_get_the_accuracy_per_level(trained_tiny_dir, tmp_path):
    rows = generate_strength_pairs(30, seed=5)
    out = tmp_path / "scored.jsonl"
    summary = run(trained_tiny_dir, write(tmp_path / "strength.jsonl", rows), "--output", str(out))
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    delta = [r["r_chosen"] - r["r_rejected"] for r in scored]
    assert summary["accuracy_by_strength"] == accuracy_by_strength(delta, [r["strength"] for r in rows])
    assert sum(v["pairs"] for v in summary["accuracy_by_strength"].values()) == 30


@pytest.mark.parametrize(
    "rows, said",
    [
        ([{"prompt": "Q", "completion": " a", "score": "high"}], "row 1: field 'score' must be a finite number"),
        ([{"prompt": "Q", "chosen": " a", "rejected": " b", "strength": -2}], "row 1: field 'strength' is -2"),
    ],
)
def test_bad_labels_are_named(trained_tiny_dir, tmp_path, rows, said):
    with pytest.raises(UserError, match=said):
        run(trained_tiny_dir, write(tmp_path / "bad.jsonl", rows))


@pytest.mark.parametrize("reading", ["weight", "margin"])
def test_the_scored_loss_of_strength_pairs_is_the_loss_training_evaluated(tmp_path, reading):
    """score.py reads a strength as the model's training read it (training_config.json), so its loss on the
    held-out pairs is the eval_loss training reported on them."""
    from conftest import read_metrics, train_tiny
    from datasets import Dataset

    rows = generate_strength_pairs(120, seed=4)
    options = {"strength_as": reading, "strength_weights": "1:1,2:3,3:5"}
    model = train_tiny(tmp_path / reading, dataset=Dataset.from_list(rows), **options)
    eval_loss = [r["eval_loss"] for r in read_metrics(model) if "eval_loss" in r][-1]
    summary = run(model, str(model / "heldout_pairs.jsonl"))
    assert summary["loss"] == pytest.approx(eval_loss, abs=1e-5)
