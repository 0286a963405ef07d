"""Which rows go into which micro-batch and optimizer step.

The order is a pure function of (seed, epoch): the same run always sees the same batches, and a
resumed run can start at any step without replaying data. The `Shuffled` order is TRL's: accelerate's
sampler draws `torch.randperm(n, seed + epoch)` too, so with the plain collator our batches are TRL's
batches (tests/test_trl_parity.py). The run's default is the other `Order`, reward/fast/grouping.py
`LengthGrouped` (--group_by_length): pairs of similar length share a micro-batch.

A row is usually a pair, and adds 1 to its optimizer step's divisor. Rows that stand for more (a prompt
with K ranked responses: reward/ranked) add what the objective says (reward/loss.py `Objective.row_units`:
its comparisons, or 1 per prompt).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import pyarrow.compute as pc  # pyarrow is datasets' own storage layer, installed with it
import torch
from datasets import Dataset

from reward.collate import MicroBatch


@dataclass(frozen=True)
class BatchPlan:
    """How many rows make a micro-batch and an optimizer step, and how many steps (TrainConfig's names)."""

    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    num_train_epochs: float
    max_steps: int  # > 0 wins over num_train_epochs


class Order(Protocol):
    """An epoch's rows, cut into global micro-batches of `batch_size` row indices (only the last may be
    smaller); a pure function of the epoch, so a resumed run can start at any step."""

    name: str  # for the start-up summary, e.g. "shuffled (TRL's order)"

    def __call__(self, epoch: int, batch_size: int) -> list[list[int]]: ...


def epoch_order(num_pairs: int, seed: int, epoch: int) -> list[int]:
    """A seeded shuffle of 0..num_pairs-1; epoch e always gives the same order."""
    g = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(num_pairs, generator=g).tolist()


@dataclass(frozen=True)
class Shuffled:
    """Each epoch a fresh seeded permutation, cut in order (TRL's batches).

    >>> Shuffled(num_rows=5, seed=0)(epoch=0, batch_size=2)
    [[4, 0], [1, 3], [2]]
    """

    num_rows: int
    seed: int
    name = "shuffled (TRL's order)"

    def __call__(self, epoch: int, batch_size: int) -> list[list[int]]:
        order = epoch_order(self.num_rows, self.seed, epoch)
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def step_plan(num_rows: int, plan: BatchPlan, world_size: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps); a global micro-batch is world_size x b rows."""
    micro_batches = math.ceil(num_rows / (plan.per_device_train_batch_size * world_size))
    per_epoch = math.ceil(micro_batches / plan.gradient_accumulation_steps)
    total = plan.max_steps if plan.max_steps > 0 else math.ceil(plan.num_train_epochs * per_epoch)
    return per_epoch, max(total, 1)


def optimizer_steps(
    ds: Dataset,
    collate: Callable[[list[dict]], MicroBatch],
    order: Order,
    plan: BatchPlan,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    units: list[int] | None = None,
) -> Iterator[tuple[int, list[MicroBatch], int]]:
    """Yield (epoch, this rank's micro-batches of one optimizer step, units in the global step), forever.
    Row i adds `units[i]` to its step's units (default: 1, a pair).

    Every rank builds the same global micro-batches of world_size x b rows and takes slice `rank`
    of each (reward/parallel/distributed.py). An epoch's last step takes whatever is left (fewer micro-
    batches, a smaller last one, possibly nothing for some rank): the normalisation by the global
    step's units keeps that exact. The order is a pure function of (seed, epoch), so a resumed run
    starts at `start_step` without replaying data.
    """
    b, k = plan.per_device_train_batch_size, plan.gradient_accumulation_steps
    steps_per_epoch, _ = step_plan(len(ds), plan, world_size)
    epoch, skip = divmod(start_step, steps_per_epoch)
    while True:
        chunks = order(epoch, b * world_size)
        for s in range(skip * k, len(chunks), k):
            step_chunks = chunks[s : s + k]
            mine = [chunk[rank * b : (rank + 1) * b] for chunk in step_chunks]
            in_step = sum(len(c) if units is None else sum(units[i] for i in c) for c in step_chunks)
            yield epoch, [collate(rows_at(ds, idx)) for idx in mine if idx], in_step
        epoch, skip = epoch + 1, 0


def pair_lengths(ds: Dataset) -> list[int]:
    """len(chosen_ids) + len(rejected_ids) per pair, read from Arrow list lengths (no Python lists of ids).

    >>> pair_lengths(Dataset.from_list([{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 8]}]))
    [5]
    """
    table = ds.select_columns(["chosen_ids", "rejected_ids"]).with_format("arrow")[:]  # honours select/shuffle
    return pc.add(pc.list_value_length(table["chosen_ids"]), pc.list_value_length(table["rejected_ids"])).to_pylist()


def rows_at(ds: Dataset, indices: list[int]) -> list[dict]:
    cols = ds[indices]  # one Arrow take for the whole micro-batch
    return [dict(zip(cols, values)) for values in zip(*cols.values())]
