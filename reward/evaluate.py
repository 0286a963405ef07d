"""Held-out evaluation: every pair's rewards through the same forward and loss training uses, and the
statistics of the trained rewards that the saved folder carries.

`evaluate` runs a set of pairs in length-sorted micro-batches, in eval mode: each micro-batch gives its
own rewards (`MicroBatch.rewards`, reward/collate.py: padded, or packed with the prompt once by
default; tests/test_fast_eval.py checks both give the same metrics) and the pair objective with the
run's options (centring, label smoothing, margins) gives the loss, so what evaluation measures is what
training optimised. Grouped rankings are evaluated as the pairs they hold. `HeldOut` is what the loop calls on its
schedule. `reward_statistics` and `collapse_problem` describe the final rewards (mean and spread, saved
as config.json `reward_stats`; a constant reward is a failed run, however finite its loss).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from datasets import Dataset
from torch import nn

from reward.batching import pair_lengths, rows_at
from reward.collate import PairMicroBatch
from reward.data import subset_column
from reward.loss import Objective
from reward.metrics import MetricTotals, diagnose
from reward.model import Precision

# more metrics from a set's rewards: (r_chosen (N,), r_rejected (N,), the N pairs, in ds's order) -> {name: value}
# (pairs made from rankings add best-of-K accuracy and Kendall's τ: reward/ranked/rows.py)
ExtraMetrics = Callable[[torch.Tensor, torch.Tensor, Dataset], dict]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    ds: Dataset,
    collate: Callable[[list[dict]], PairMicroBatch],
    objective: Objective,
    batch_size: int,
    precision: Precision,
    extras: Sequence[ExtraMetrics] = (),
) -> dict:
    """Loss and metrics over every pair of `ds` (pair-weighted), in eval mode, plus the spread of the 2N
    rewards (reward_std, population) and the diagnostics of reward/metrics.py over all pairs: ece,
    length_corr, and accuracy/<subset> when `ds` has a subset/category column; then each of `extras`."""
    was_training = model.training
    model.eval()  # dropout off: a held-out reward is a deterministic function of the pair
    totals = MetricTotals()
    column = subset_column(ds.column_names)
    chosen, rejected = [], []  # per batch: (B,), (B,) rewards
    lengths, subsets = [], []  # per pair: (chosen tokens, rejected tokens); subset label
    # Pairs of similar length share a batch: a pair's rewards do not depend on its batch mates, and
    # every metric is a sum over pairs, so only the padding changes (long-prompt data in file
    # order pads most batches to several times their real tokens).
    by_length = sorted(range(len(ds)), key=pair_lengths(ds).__getitem__)
    for start in range(0, len(ds), batch_size):
        rows = rows_at(ds, by_length[start : start + batch_size])
        batch = collate(rows)
        with precision.autocast():
            rewards = batch.rewards(model)  # (2B,)
        totals.add(objective(rewards, batch))
        r_chosen, r_rejected = rewards.chunk(2)  # (B,), (B,): kept where they are, read once below
        chosen.append(r_chosen)
        rejected.append(r_rejected)
        lengths += [(len(row["chosen_ids"]), len(row["rejected_ids"])) for row in rows]
        subsets += [row[column] for row in rows] if column else []
    model.train(was_training)
    r_chosen, r_rejected = torch.cat(chosen).cpu(), torch.cat(rejected).cpu()  # (N,), (N,) in length order
    tokens = torch.tensor(lengths)  # (N, 2)
    extra = diagnose(r_chosen, r_rejected, tokens[:, 0], tokens[:, 1], subsets if column else None)
    spread = torch.cat([r_chosen, r_rejected]).double().std(correction=0).item()  # over all 2N rewards
    where = torch.tensor(by_length, dtype=torch.long).argsort()  # (N,): pair i's place in the length order
    more = {k: v for metric in extras for k, v in metric(r_chosen[where], r_rejected[where], ds).items()}
    return {**totals.summary(), "reward_std": spread, **extra.metrics(), **more}


class Evaluator(Protocol):
    """How a set of rows is evaluated: `Evaluation` (pairs, below), or an optional part's own rows (rated
    completions: reward/labels/evaluation.py). Its result has loss, reward_mean and reward_std, accuracy and
    margin when anything was compared, and the count of what was scored: `pairs`, or `completions` (one
    reward each)."""

    def __call__(self, model: nn.Module, ds: Dataset) -> dict: ...


@dataclass
class Evaluation:
    """How a set of pairs is evaluated: the collator, the pair objective, the batch size, the precision
    and any extra metrics. `evaluation(model, ds)` is `evaluate` with these."""

    collate: Callable[[list[dict]], PairMicroBatch]
    objective: Objective
    batch_size: int
    precision: Precision
    extras: Sequence[ExtraMetrics] = ()

    def __call__(self, model: nn.Module, ds: Dataset) -> dict:
        return evaluate(model, ds, self.collate, self.objective, self.batch_size, self.precision, self.extras)


@dataclass
class HeldOut:
    """The sets the loop evaluates on its schedule: {"": the held-out split} or named sets (RewardTrainer's
    dict eval_dataset, logged eval_<name>_loss, ...: reward/metrics.py `eval_record`)."""

    sets: dict[str, Dataset]
    evaluation: Evaluator

    def __call__(self, model: nn.Module) -> dict[str, dict]:
        return {name: self.evaluation(model, ds) for name, ds in self.sets.items()}


# --- what the saved folder says about the trained rewards ---------------------------------------------
STATS_SAMPLE = 512  # pairs scored for the reward statistics when the run had no final evaluation
COLLAPSED_STD = 1e-5  # reward std at or below this (relative to |mean| when above 1): a constant reward


def reward_statistics(
    model: nn.Module, final_eval: dict | None, held_out: Dataset | None, train_ds: Dataset, evaluation: Evaluator
) -> dict:
    """Mean and std of the 2N rewards of the final evaluation (the whole held-out split) when there was
    one, else of up to STATS_SAMPLE held-out (or, without a held-out split, training) pairs (rated rows:
    prompts, one reward per completion). Under FSDP
    every rank runs it: the forward gathers the shards."""
    if final_eval and "reward_std" in final_eval:
        values, source = final_eval, "held-out split"
    else:
        ds, source = (held_out, "held-out split") if held_out is not None else (train_ds, "training split sample")
        values = evaluation(model, ds.select(range(min(STATS_SAMPLE, len(ds)))))
    rated = "completions" in values  # one reward each; a pair has two
    count = values["completions"] if rated else values["pairs"]
    rewards = count if rated else 2 * count
    source = f"{source}, {count} {'completions' if rated else 'pairs'}"
    return {"mean": values["reward_mean"], "std": values["reward_std"], "count": rewards, "source": source}


def collapse_problem(stats: dict, learning_rate: float) -> str | None:
    """A model whose rewards are all the same ranks nothing, however finite its loss: say so loudly.
    (A learning rate far too high saturates every hidden state; the run used to save it as a success.)"""
    if stats["std"] > COLLAPSED_STD * max(1.0, abs(stats["mean"])):
        return None
    return (
        f"the model collapsed: every reward is {stats['mean']:.6g} (std {stats['std']:.1e} over {stats['count']} "
        f"sequences of the {stats['source']}), so it cannot rank anything: check --learning_rate (this run: "
        f"{learning_rate:g}; far too high saturates the model, 0 never moves it) and the data"
    )
