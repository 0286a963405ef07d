"""Which pairs go into which micro-batch and optimizer step, and how a micro-batch is collated.

The order is a pure function of (seed, epoch): the same run always sees the same batches, and a
resumed run can start at any step without replaying data. It is also TRL's order: accelerate's
sampler draws `torch.randperm(n, seed + epoch)` too, so with grouping and packing off our batches
are TRL's batches (tests/test_trl_parity.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pyarrow.compute as pc  # pyarrow is datasets' own storage layer, installed with it
import torch
from datasets import Dataset
from torch import nn

from reward.collate import PairwiseCollator
from reward.config import TrainConfig
from reward.fast.grouping import grouped_batches
from reward.fast.packing import PackedBatch, PackingCollator
from reward.fast.segment_attention import switch_changes_nothing_else
from reward.model import is_encoder, unwrap
from reward.ranked.collate import RankedBatch, RankedCollator

Batch = dict[str, torch.Tensor] | PackedBatch | RankedBatch  # the plain collator's dict, packed rows, prompts


def epoch_order(num_pairs: int, seed: int, epoch: int) -> list[int]:
    """A seeded shuffle of 0..num_pairs-1; epoch e always gives the same order."""
    g = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(num_pairs, generator=g).tolist()


def step_plan(num_pairs: int, cfg: TrainConfig, world_size: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps); a global micro-batch is world_size x b pairs."""
    micro_batches = math.ceil(num_pairs / (cfg.per_device_train_batch_size * world_size))
    per_epoch = math.ceil(micro_batches / cfg.gradient_accumulation_steps)
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * per_epoch)
    return per_epoch, max(total, 1)


def optimizer_steps(
    ds: Dataset,
    collate: Callable[[list[dict]], Batch],
    cfg: TrainConfig,
    start_step: int = 0,
    rank: int = 0,
    world_size: int = 1,
    units: list[int] | None = None,
) -> Iterator[tuple[int, list[Batch], int]]:
    """Yield (epoch, this rank's micro-batches of one optimizer step, units in the global step), forever.

    A unit is a row (a pair, or a grouped prompt) unless `units[i]` says what row i counts for: its
    comparisons for grouped rankings normalised per comparison (reward/ranked/loss.py `RankingObjective`).

    Every rank builds the same global micro-batches of world_size x b pairs and takes slice `rank`
    of each (reward/parallel/distributed.py). An epoch's last step takes whatever is left (fewer micro-
    batches, a smaller last one, possibly nothing for some rank): the per-pair normalisation by the
    global pair count keeps that exact. The order is a pure function of (seed, epoch), so a resumed
    run starts at `start_step` without replaying data. With `group_by_length`, pairs of similar
    length share micro-batches (reward/fast/grouping.py).
    """
    b, k = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    global_b = b * world_size
    steps_per_epoch, _ = step_plan(len(ds), cfg, world_size)
    lengths = pair_lengths(ds) if cfg.group_by_length else None
    epoch, skip = divmod(start_step, steps_per_epoch)
    while True:
        if lengths is not None:
            chunks = grouped_batches(lengths, global_b, cfg.seed, epoch)
        else:
            order = epoch_order(len(ds), cfg.seed, epoch)
            chunks = [order[i : i + global_b] for i in range(0, len(order), global_b)]
        for s in range(skip * k, len(chunks), k):
            step_chunks = chunks[s : s + k]
            mine = [chunk[rank * b : (rank + 1) * b] for chunk in step_chunks]
            in_step = sum(len(c) if units is None else sum(units[i] for i in c) for c in step_chunks)
            yield epoch, [collate(rows_at(ds, idx)) for idx in mine if idx], in_step
        epoch, skip = epoch + 1, 0


def pair_lengths(ds: Dataset) -> list[int]:
    """len(chosen_ids) + len(rejected_ids) per pair (a grouped prompt: its responses' lengths summed), read
    from Arrow list lengths (no Python lists of ids).

    >>> pair_lengths(Dataset.from_list([{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 8]}]))
    [5]
    >>> pair_lengths(Dataset.from_list([{"completion_ids": [[5, 6], [5], [5, 7, 8]]}, {"completion_ids": [[1], [2]]}]))
    [6, 2]
    """
    if "completion_ids" in ds.column_names:
        lists = ds.select_columns(["completion_ids"]).with_format("arrow")[:]["completion_ids"].combine_chunks()
        inner = pc.list_value_length(lists.flatten()).to_numpy()  # (S,) every response's length
        ends = np.concatenate([[0], np.cumsum(inner)])  # (S + 1,)
        offsets = lists.offsets.to_numpy() - lists.offsets[0].as_py()  # (P + 1,) responses per prompt
        return (ends[offsets[1:]] - ends[offsets[:-1]]).tolist()
    table = ds.select_columns(["chosen_ids", "rejected_ids"]).with_format("arrow")[:]  # honours select/shuffle
    return pc.add(pc.list_value_length(table["chosen_ids"]), pc.list_value_length(table["rejected_ids"])).to_pylist()


def build_collator(
    cfg: TrainConfig, pad_token_id: int, model: nn.Module | None = None, ranked: bool = False
) -> Callable[[list[dict]], Batch]:
    """The training collator: packed rows (padding-free and/or shared prefix) or the plain padded one;
    for grouped rankings, prompts with their K responses (packed the same way, or padded).

    An encoder (every token attends to the whole sequence) always gets the padded one."""
    packs = (cfg.padding_free or cfg.share_prefix) and not (model is not None and is_encoder(unwrap(model)))
    if ranked:
        return RankedCollator(pad_token_id, "all" if cfg.padding_free else None, cfg.share_prefix, packed=packs)
    if packs:
        return PackingCollator(pad_token_id, "all" if cfg.padding_free else None, cfg.share_prefix)
    return PairwiseCollator(pad_token_id, cfg.pad_to_multiple_of)


def eval_collator(cfg: TrainConfig, pad_token_id: int, model: nn.Module | None = None) -> Callable[[list[dict]], Batch]:
    """Held-out pairs: packed into one padding-free row with the shared prompt computed once (the rewards
    of the padded forward: tests/test_fast_eval.py), or with `--eval_padding_free false`, an encoder, or
    a model on eager attention (packing would switch its padded calls to sdpa) the plain padded batches,
    the reference. `packed_rewards` still falls back for other models."""
    inner = unwrap(model) if model is not None else None
    if cfg.eval_padding_free and (inner is None or (not is_encoder(inner) and switch_changes_nothing_else(inner))):
        return PackingCollator(pad_token_id, "all", share_prefix=True)
    return PairwiseCollator(pad_token_id)


def batch_pairs(mb: Batch) -> int:
    return mb.margin.numel() if isinstance(mb, PackedBatch) else mb["margin"].numel()


def batch_tokens(mb: Batch) -> int:
    """Real tokens of the sequences (what a padded forward computes without its padding)."""
    if isinstance(mb, PackedBatch | RankedBatch):
        return mb.sequence_tokens
    return int(mb["attention_mask"].sum())


def rows_at(ds: Dataset, indices: list[int]) -> list[dict]:
    cols = ds[indices]  # one Arrow take for the whole micro-batch
    return [dict(zip(cols, values)) for values in zip(*cols.values())]
