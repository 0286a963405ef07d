"""Aggregate per-batch metrics exactly, and record them (step log line + OUTPUT_DIR/metrics.jsonl).

Averages over several micro-batches (an optimizer step, or the whole eval set) are weighted by the
number of pairs in each, so accuracy is "correct pairs / all pairs", never a mean of means.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from reward.loss import LossOutput


class MetricTotals:
    """Running sums over LossOutputs; `summary()` gives pair-weighted means and global min/max."""

    def __init__(self) -> None:
        self.pairs = 0
        self.loss_sum = self.correct = self.margin_sum = self.reward_sum = 0.0
        self.reward_min, self.reward_max = math.inf, -math.inf

    def add(self, out: LossOutput) -> None:
        n = out.num_pairs
        self.pairs += n
        self.loss_sum += out.loss_sum
        self.correct += out.accuracy * n
        self.margin_sum += out.margin * n
        self.reward_sum += out.reward_mean * 2 * n
        self.reward_min = min(self.reward_min, out.reward_min)
        self.reward_max = max(self.reward_max, out.reward_max)

    def merge(self, other: MetricTotals) -> None:
        self.pairs += other.pairs
        self.loss_sum += other.loss_sum
        self.correct += other.correct
        self.margin_sum += other.margin_sum
        self.reward_sum += other.reward_sum
        self.reward_min = min(self.reward_min, other.reward_min)
        self.reward_max = max(self.reward_max, other.reward_max)

    def summary(self) -> dict[str, float]:
        n = max(self.pairs, 1)
        return {
            "loss": self.loss_sum / n,
            "accuracy": self.correct / n,
            "margin": self.margin_sum / n,
            "reward_mean": self.reward_sum / (2 * n),
            "reward_min": self.reward_min,
            "reward_max": self.reward_max,
            "pairs": self.pairs,
        }


class MetricsWriter:
    """Appends one JSON object per line to `path` (created with its folder)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def format_step_line(record: dict[str, Any]) -> str:
    """`step 42 | loss 0.6410 | acc 0.62 | margin 0.31 | lr 1.0e-05 | grad 1.23 | 57 pairs/s`."""
    parts = [f"step {record['step']}"]
    for key, label, fmt in [
        ("loss", "loss", ".4f"),
        ("accuracy", "acc", ".3f"),
        ("margin", "margin", ".3f"),
        ("lr", "lr", ".1e"),
        ("grad_norm", "grad", ".3f"),
        ("eval_loss", "eval_loss", ".4f"),
        ("eval_accuracy", "eval_acc", ".3f"),
    ]:
        if key in record:
            parts.append(f"{label} {record[key]:{fmt}}")
    if "pairs_per_s" in record:
        parts.append(f"{record['pairs_per_s']:.0f} pairs/s")
    return " | ".join(parts)
