"""reward/labels/rows.py, metrics.py and reward/presets/graded.py: which label kind a file holds, every row
checked with its row and field named, the labels described in one line, the metrics of ratings and strength
by hand, and the generated graded tasks: deterministic, balanced, not solvable by length, labels as stated."""

from __future__ import annotations

import math

import pytest

from reward.labels.metrics import accuracy_by_strength, pearson, rating_metrics, spearman
from reward.labels.rows import (
    ATTRIBUTES,
    RATED,
    STRENGTH,
    describe_scores,
    label_kind,
    label_row_problem,
    rated_row_problem,
    strength_problem,
)
from reward.presets.graded import generate_ratings, generate_strength_pairs, length_correlation, plural
from reward.presets.synthetic import CATEGORIES

USER = [{"role": "user", "content": "Rate me."}]


def test_the_label_kind_of_a_file_and_the_reading_it_chose():
    assert label_kind({"prompt", "completion", "score"}) == (RATED, None)
    assert label_kind({"completion", "scores"}) == (ATTRIBUTES, None)
    assert label_kind({"chosen", "rejected", "strength"}) == (STRENGTH, None)
    kind, note = label_kind({"chosen", "rejected", "strength", "margin"})
    assert kind == STRENGTH and "'margin' is not used" in note
    assert label_kind({"prompt", "chosen", "rejected", "margin"}) == (None, None)  # plain pairs: not ours


@pytest.mark.parametrize(
    "row, problem",
    [
        ({"prompt": "Q", "completion": " A", "score": 3}, None),
        ({"prompt": "Q", "completion": " A", "score": "2.5"}, None),  # a CSV cell
        ({"prompt": "Q", "completion": "", "score": 0}, None),  # an empty answer after a prompt is one
        ({"prompt": USER, "completion": [{"role": "assistant", "content": "A"}], "score": 1}, None),
        ({"prompt": "Q", "completion": " A"}, "field 'score' must be a finite number, got None"),
        ({"prompt": "Q", "completion": " A", "score": float("nan")}, "field 'score' must be a finite number"),
        ({"prompt": "Q", "completion": " A", "score": "high"}, "got 'high'"),
        ({"prompt": "Q", "completion": None, "score": 1}, "field 'completion' must be a string"),
        ({"completion": "", "score": 1}, "field 'completion' is empty"),
    ],
)
def test_rated_rows(row, problem):
    found = rated_row_problem(row)
    assert found == problem if problem is None else problem in found


def test_attribute_rows_take_nulls_but_not_all_nulls_or_words():
    ok = {"completion": " A", "scores": {"helpfulness": 3, "verbosity": None}}
    assert rated_row_problem(ok, ATTRIBUTES) is None
    assert "rates no attribute" in rated_row_problem({"completion": " A", "scores": {"h": None}}, ATTRIBUTES)
    assert "attribute 'h' must be a finite number" in rated_row_problem(
        {"completion": " A", "scores": {"h": "x"}}, ATTRIBUTES
    )
    assert "must be an object" in rated_row_problem({"completion": " A", "scores": [1, 2]}, ATTRIBUTES)


def test_strength_must_be_positive_and_finite():
    assert strength_problem({"strength": 2}) is None and strength_problem({"strength": "3"}) is None
    assert "give |strength| or swap" in strength_problem({"strength": -2})
    assert "a tie is no preference" in strength_problem({"strength": 0})
    assert "must be a finite number" in strength_problem({"strength": "much"})


def test_every_bad_row_is_named_with_its_place(tmp_path):
    """Through reward/data.py `validate`, as training and score.py check rows: the file's line numbers."""
    from datasets import Dataset

    from reward.data import validate
    from reward.errors import UserError

    rows = [
        {"completion": " a", "score": "1.5"},
        {"completion": " b", "score": "x"},
        {"completion": " c", "score": None},
    ]
    with pytest.raises(UserError) as info:
        validate(Dataset.from_list(rows), RATED, "ratings.jsonl", "train", problem=label_row_problem)
    assert str(info.value).startswith(
        "ratings.jsonl [train]: 2 bad row(s): row 2: field 'score' must be a finite number, got 'x'; row 3:"
    )
    pairs = Dataset.from_list([{"chosen": "a", "rejected": "b", "strength": s} for s in (1, -1)])
    with pytest.raises(UserError, match=r"row 2: field 'strength' is -1"):
        validate(pairs, STRENGTH, "f", "train", problem=label_row_problem)


def test_the_labels_in_one_line():
    assert describe_scores([]) == "scores: none"
    assert describe_scores([1.0, 2.0, 2.0, 2.0], "ratings") == "ratings 1..2 (mean 1.75, std 0.43): 1 25 %, 2 75 %"


def test_rating_metrics_by_hand():
    rewards, scores = [2.0, 0.0, 1.0, -1.0], [3.0, 1.0, 2.0, 0.0]
    m = rating_metrics(rewards, scores, groups=[2, 2], mean=1.5, std=1.0)
    targets = [1.5, -0.5, 0.5, -1.5]
    assert m["rmse"] == pytest.approx(math.sqrt(sum((r - t) ** 2 for r, t in zip(rewards, targets)) / 4))
    assert m["pearson"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)
    assert (m["implied_pairs"], m["implied_pair_accuracy"]) == (2, 1.0)
    scaled = rating_metrics([0.5, -1.0], [3.0, 1.0], groups=[2], mean=2.0, std=2.0)  # rewards 0.5, -1 read as 3, 0
    assert scaled["rmse"] == pytest.approx(math.sqrt((0 + 1**2) / 2))  # on the rating scale: |3 - 3|, |0 - 1|
    flipped = rating_metrics([0.0, 2.0, -1.0, 1.0], scores, groups=[2, 2])
    assert flipped["implied_pair_accuracy"] == 0.0
    assert pearson([1.0, 1.0], [1.0, 2.0]) is None and spearman([1, 2, 2], [1, 2, 3]) == pytest.approx(0.8660254)


def test_accuracy_by_strength_bucket():
    got = accuracy_by_strength([0.5, -0.1, 1.0, 2.0, 0.3], [1, 1, 2, 3.0, 3])
    assert got == {1: {"pairs": 2, "accuracy": 0.5}, 2: {"pairs": 1, "accuracy": 1.0}, 3: {"pairs": 2, "accuracy": 1.0}}


def right_items(text: str, prompt: str) -> int:
    """How many of a response's three items belong to the category the prompt asks for."""
    asked = next(cat for cat in CATEGORIES if f" {plural(cat)}" in prompt or f"a {cat}." in prompt)
    return sum(item in text.replace(",", " ").replace(".", " ").split() for item in CATEGORIES[asked])


def test_the_generated_ratings_are_deterministic_balanced_and_not_about_length():
    rows = generate_ratings(1500, completions=2, seed=3)
    assert rows == generate_ratings(1500, completions=2, seed=3) and rows != generate_ratings(1500, 2, seed=4)
    assert all(right_items(r["completion"], r["prompt"]) == r["score"] for r in rows)  # the rule, as stated
    shares = [sum(r["score"] == s for r in rows) / len(rows) for s in range(4)]
    assert all(0.22 < share < 0.28 for share in shares), shares
    assert abs(length_correlation(rows)) < 0.05


def test_the_generated_strengths_are_the_difference_in_right_items():
    pairs = generate_strength_pairs(1500, seed=1)
    assert pairs == generate_strength_pairs(1500, seed=1)
    for p in pairs:
        assert right_items(p["chosen"], p["prompt"]) - right_items(p["rejected"], p["prompt"]) == p["strength"]
    assert {p["strength"] for p in pairs} == {1, 2, 3}
    longer = sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs) / len(pairs)
    assert 0.4 < longer < 0.6  # "the longer one wins" is near a coin flip
