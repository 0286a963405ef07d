"""Held-out evaluation of a regression reward model on rated completions (issue #31, item 4): every
prompt's completions through training's forward (reward/ranked/collate.py: one packed segment per prompt)
and training's objective (reward/labels/loss.py `RegressionObjective`), so `eval_loss` is the loss training
optimised, plus what a rating is measured by (reward/labels/metrics.py):

    loss       the regression (+ β · implied pairs) per rated completion, in the standardised units trained
    accuracy   over the pairs the ratings imply within each prompt (Δ > 0), the pairwise view; margin: mean Δ
    rmse       on the rating scale: reward × σ + μ against the rating
    pearson, spearman   reward against rating over every completion
    completions, implied_pairs, reward_mean / std / min / max

It is what the loop's held-out evaluation calls (reward/evaluate.py `Evaluator`), and what the exported
folder's `reward_stats` are read from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from datasets import Dataset
from torch import nn

from reward.batching import rows_at
from reward.labels.loss import RegressionObjective
from reward.labels.metrics import rating_metrics
from reward.metrics import MetricTotals
from reward.model import Precision
from reward.ranked.collate import RankedBatch, prompt_lengths


@torch.no_grad()
def evaluate_ratings(
    model: nn.Module,
    ds: Dataset,
    collate: Callable[[list[dict]], RankedBatch],
    objective: RegressionObjective,
    batch_size: int,
    precision: Precision,
) -> dict:
    """The metrics above over every rated completion of `ds` (tokenized rows, one per prompt), in eval mode."""
    was_training = model.training
    model.eval()  # dropout off: a held-out reward is a deterministic function of the text
    totals = MetricTotals()
    rewards, scores, groups = [], [], []  # per batch (S,); per completion; completions per prompt
    by_length = sorted(range(len(ds)), key=prompt_lengths(ds).__getitem__)  # similar prompts share a batch
    for start in range(0, len(ds), batch_size):
        rows = rows_at(ds, by_length[start : start + batch_size])
        batch = collate(rows)
        with precision.autocast():
            r = batch.rewards(model)  # (S,)
        totals.add(objective(r, batch))
        rewards.append(r)
        scores += [float(s) for row in rows for s in row["scores"]]
        groups += [len(row["scores"]) for row in rows]
    model.train(was_training)
    r = torch.cat(rewards).double().cpu()  # (N,) one transfer
    rated = rating_metrics(r.tolist(), scores, groups, objective.mean, objective.std)
    summary = totals.summary()
    summary.pop("pairs")  # the units, N: here `completions`
    if not rated["implied_pairs"]:  # a prompt with one rating each: no pair, so no accuracy to report
        del summary["accuracy"], summary["margin"]
    out = {**summary, "completions": len(scores), "implied_pairs": rated["implied_pairs"], "rmse": rated["rmse"]}
    out |= {k: rated[k] for k in ("pearson", "spearman") if rated[k] is not None}  # None: constant rewards or ratings
    return {**out, "reward_std": r.std(correction=0).item()}


@dataclass
class RatedEvaluation:
    """`evaluate_ratings` with the collator, objective, batch size (prompts) and precision fixed."""

    collate: Callable[[list[dict]], RankedBatch]
    objective: RegressionObjective
    batch_size: int
    precision: Precision

    def __call__(self, model: nn.Module, ds: Dataset) -> dict:
        return evaluate_ratings(model, ds, self.collate, self.objective, self.batch_size, self.precision)
