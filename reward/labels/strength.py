"""Pairs with a `strength` column (how much better chosen is) as training reads them, by `--strength_as`:

    weight   scaled Bradley–Terry: the pair's loss × w(|strength|) from `--strength_weights` (docs/loss.md
             §10), written as each pair's `pair_weight` column, which the collators carry to the loss
    margin   TRL's reading: the pair must be won by `strength` (the `margin` column, reward/loss.py)
    ignore   plain pairs (the column is left alone)

Every row is checked first (a finite number > 0, reward/labels/rows.py), with its row named, and one line
says how the strengths are distributed and which reading was taken. The recipe calls `apply_strength`
when the rows have the column: the core pair path only sees a weight or a margin. The strength itself is
carried through tokenizing too, so that training's held-out evaluation reports the accuracy per strength
level (`held_out_strength_metrics`, the numbers score.py reports as accuracy_by_strength).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from datasets import Dataset

from reward.collate import PAIR_WEIGHT
from reward.data import PreferenceData, margin_value, validate
from reward.errors import UserError
from reward.labels.metrics import accuracy_by_strength
from reward.labels.rows import STRENGTH, describe_scores, label_row_problem
from reward.options import STRENGTH_READINGS

__all__ = ["STRENGTH_READINGS", "apply_strength", "held_out_strength_metrics", "parse_weights", "strength_terms"]


def parse_weights(text: str) -> dict[int, float]:
    """`--strength_weights` "1:1,2:2,3:3" -> {1: 1.0, 2: 2.0, 3: 3.0}.

    >>> parse_weights("1:0.5, 3:4")
    {1: 0.5, 3: 4.0}
    """
    table = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        level, sep, weight = item.partition(":")
        try:
            table[int(level)] = float(weight)
        except ValueError:
            raise UserError(f"--strength_weights {text!r}: {item!r} is not LEVEL:WEIGHT (e.g. 1:1,2:2,3:3)") from None
        if not sep or table[int(level)] < 0:
            raise UserError(f"--strength_weights {text!r}: {item!r} is not LEVEL:WEIGHT with a weight >= 0")
    if not table:
        raise UserError("--strength_weights is empty: give LEVEL:WEIGHT items, e.g. 1:1,2:2,3:3")
    return table


def strength_problem_of(table: dict[int, float]):
    """The row check for the weight reading: the strength's rule, and a level the table has."""

    def problem(row: dict, kind: str) -> str | None:
        if found := label_row_problem(row, kind):
            return found
        level = round(margin_value(row["strength"]))
        return None if level in table else f"field 'strength' {level}: no weight for it in --strength_weights"

    return problem


def apply_strength(data: PreferenceData, reading: str, weights: str) -> PreferenceData:
    """`data` with its strengths read as `reading` (`STRENGTH_READINGS`), every split checked; prints one line."""
    if reading == "ignore" or "strength" not in data.train.column_names:
        return data
    table = parse_weights(weights)
    problem = strength_problem_of(table) if reading == "weight" else label_row_problem
    splits = {"train": data.train, "test": data.test}
    for split, rows in splits.items():
        if rows is not None and "strength" in rows.column_names:
            validate(rows, STRENGTH, data.source, split, problem=problem)
    values = [margin_value(v) for v in data.train["strength"]]
    read = {
        "weight": f"each pair's loss x {', '.join(f'{k}: {v:g}' for k, v in sorted(table.items()))} (scaled BT)",
        "margin": "the margin each pair must be won by (TRL's margin column; a 'margin' column is replaced)",
    }[reading]
    print(f"{describe_scores(values, 'strength')} -> {read}")
    out = {split: rows if rows is None else read_split(rows, reading, table) for split, rows in splits.items()}
    # the strength rides along (a numeric column, so a strength run's rows fingerprint includes it; plain
    # pairs never get here): the held-out split keeps it for `held_out_strength_metrics`
    carried = (*data.carried, "strength", *((PAIR_WEIGHT,) if reading == "weight" else ()))
    return replace(
        data, train=out["train"], test=out["test"], carried=carried, has_margin=data.has_margin or reading == "margin"
    )


def held_out_strength_metrics(r_chosen: torch.Tensor, r_rejected: torch.Tensor, pairs: Dataset) -> dict[str, float]:
    """Accuracy per |strength| level as evaluation's extra metrics (reward/evaluate.py `ExtraMetrics`):
    {"accuracy_strength_1": ..., "accuracy_strength_3": ...} (logged eval_accuracy_strength_1, ...), the
    buckets of reward/labels/metrics.py `accuracy_by_strength`; {} for pairs without a strength column.

    >>> pairs = Dataset.from_dict({"strength": [3, 1, 3, 1]})
    >>> held_out_strength_metrics(torch.tensor([1.0, 0.0, 2.0, 0.5]), torch.tensor([0.0, 0.5, 3.0, 0.0]), pairs)
    {'accuracy_strength_1': 0.5, 'accuracy_strength_3': 0.5}
    """
    if "strength" not in pairs.column_names:
        return {}
    delta = (r_chosen.double() - r_rejected.double()).tolist()  # (N,) -> N floats, in `pairs`' order
    levels = accuracy_by_strength(delta, [margin_value(v) for v in pairs["strength"]])
    return {f"accuracy_strength_{level}": bucket["accuracy"] for level, bucket in levels.items()}


def read_split(rows: Dataset, reading: str, table: dict[int, float]) -> Dataset:
    if "strength" not in rows.column_names:
        return rows
    values = [margin_value(v) for v in rows["strength"]]
    if reading == "margin":
        rows = rows.remove_columns(["margin"]) if "margin" in rows.column_names else rows
        return rows.add_column("margin", values)
    return rows.add_column(PAIR_WEIGHT, [table[round(v)] for v in values])


def strength_terms(
    rows: list[dict], reading: str, weights: str, margin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(margin (B,), weight (B,) or None) of scored pairs with a `strength` column, read as the model's training
    read it (score.py: its loss is then the loss training's evaluation reported on the same rows)."""
    if reading == "ignore" or not rows or "strength" not in rows[0]:
        return margin, None
    strength = [margin_value(row["strength"]) for row in rows]
    if reading == "margin":
        return torch.tensor(strength, dtype=torch.float32), None  # (B,)
    table = parse_weights(weights)
    if missing := sorted({round(s) for s in strength} - set(table)):
        raise UserError(f"strength {missing}: no weight for it in the model's --strength_weights {weights}")
    return margin, torch.tensor([table[round(s)] for s in strength], dtype=torch.float32)  # (B,)
