"""The rewards of a micro-batch, and the held-out evaluation that reads every pair with them.

`batch_rewards` is the one forward of the project: a padded (2B, T) batch goes through the model's
own `forward` (the HF head reads the last non-pad token), packed rows through reward/fast's
segment forward (the same rewards: tests/test_packing.py), grouped rankings through
reward/ranked/collate.py. Training and evaluation both call it, so what evaluation measures is
what training optimised. `evaluate` runs a held-out set in length-sorted batches, packed by
default (`--eval_padding_free`: the prompt of a pair computed once, no padding) or padded (the
reference; tests/test_fast_eval.py checks that both give the same metrics).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from reward.batching import Batch, pair_lengths, rows_at
from reward.config import TrainConfig
from reward.data import subset_column
from reward.fast.packed_forward import packed_rewards
from reward.fast.packing import PackedBatch
from reward.loss import bradley_terry_loss
from reward.metrics import MetricTotals, diagnose
from reward.model import Precision, compute_rewards
from reward.ranked.collate import RankedBatch, ranked_rewards
from reward.ranked.rows import RANKING_COLUMNS, ranking_metrics


def batch_rewards(model: PreTrainedModel, mb: Batch, precision: Precision) -> torch.Tensor:
    """float32 rewards of one micro-batch, packed or padded; call under autocast. Pairs: (2B,), every
    chosen then every rejected; grouped rankings: (S,), every response prompt by prompt."""
    if isinstance(mb, RankedBatch):
        return ranked_rewards(model, mb)  # (S,)
    if isinstance(mb, PackedBatch):  # packed rows: same rewards as the padded forward
        return torch.cat(packed_rewards(model, mb))  # (2B,)
    input_ids = mb["input_ids"].to(precision.device)  # (2B, T)
    attention_mask = mb["attention_mask"].to(precision.device)  # (2B, T)
    return compute_rewards(model, input_ids, attention_mask)  # (2B,)


@torch.no_grad()
def evaluate(
    model: PreTrainedModel,
    ds: Dataset,
    collate: Callable[[list[dict]], Batch],
    cfg: TrainConfig,
    precision: Precision,
) -> dict:
    """Loss and metrics over every pair of `ds` (pair-weighted), in eval mode, plus the spread of the 2N
    rewards (reward_std, population) and the diagnostics of `reward/metrics.py` over all pairs: ece,
    length_corr, and accuracy/<subset> when `ds` has a subset/category column; for pairs expanded from
    rankings, best-of-K accuracy and Kendall's τ per prompt (reward/ranked/rows.py)."""
    was_training = model.training
    model.eval()
    totals = MetricTotals()
    column = subset_column(ds.column_names)
    chosen, rejected = [], []  # per batch: (B,), (B,) rewards
    lengths, subsets = [], []  # per pair: (chosen tokens, rejected tokens); subset label
    ranked = [] if "ranking_id" in ds.column_names else None  # per pair: its RANKING_COLUMNS
    b = cfg.per_device_eval_batch_size
    # Pairs of similar length share a batch: a pair's rewards do not depend on its batch mates, and
    # every metric is a sum over pairs, so only the padding changes (long-prompt data in file
    # order pads most batches to several times their real tokens).
    by_length = sorted(range(len(ds)), key=pair_lengths(ds).__getitem__)
    for start in range(0, len(ds), b):
        rows = rows_at(ds, by_length[start : start + b])
        batch = collate(rows)  # packed rows (eval_collator's default) or the padded reference
        with precision.autocast():
            rewards = batch_rewards(model, batch, precision)  # (2B,)
        n = rewards.shape[0] // 2
        margin = batch.margin if isinstance(batch, PackedBatch) else batch["margin"]  # (B,)
        totals.add(
            bradley_terry_loss(
                rewards[:n],
                rewards[n:],
                margin.to(precision.device),
                cfg.center_rewards_coefficient,
                cfg.label_smoothing,
            )
        )
        chosen.append(rewards[:n].cpu())
        rejected.append(rewards[n:].cpu())
        lengths += [(len(row["chosen_ids"]), len(row["rejected_ids"])) for row in rows]
        subsets += [row[column] for row in rows] if column else []
        if ranked is not None:
            ranked += [tuple(row[c] for c in RANKING_COLUMNS) for row in rows]
    model.train(was_training)
    tokens = torch.tensor(lengths)  # (N, 2)
    extra = diagnose(torch.cat(chosen), torch.cat(rejected), tokens[:, 0], tokens[:, 1], subsets if column else None)
    spread = torch.cat(chosen + rejected).double().std(correction=0).item()  # over all 2N rewards
    by_prompt = ranking_metrics(torch.cat(chosen), torch.cat(rejected), ranked) if ranked else {}
    return {**totals.summary(), "reward_std": spread, **extra.metrics(), **by_prompt}
