"""The pairwise collator: B preference pairs -> one padded batch of 2B sequences.

Chosen and rejected go through the model in a single forward pass, stacked as [all chosen; all
rejected], so row i and row B + i are the two sides of pair i. Padding is on the right; the
sequence-classification head reads each row's reward at its last non-pad token.

Every collated micro-batch, this padded one or the faster layouts of reward/fast and reward/ranked,
offers the loop and evaluation the same two things (`MicroBatch`): its rewards from a model, and
the real tokens it holds. So neither asks which layout it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from reward.model import compute_rewards, model_device


class MicroBatch(Protocol):
    """What the loop and evaluation need from a collated micro-batch, whatever its layout."""

    @property
    def sequence_tokens(self) -> int:
        """Real tokens of its sequences, each counted whole (what a padded forward runs, padding excluded)."""
        ...

    def rewards(self, model: nn.Module) -> torch.Tensor:
        """float32, one per sequence, in the batch's order (pairs: every chosen, then every rejected).
        Call under the precision's autocast; the result is on the model's device."""
        ...


class PairMicroBatch(MicroBatch, Protocol):
    """A micro-batch of B pairs (padded `PairBatch`, packed reward/fast/packing.py `PackedBatch`): its rewards
    come [all chosen; all rejected], and it carries each pair's margin column for reward/loss.py `PairObjective`."""

    margin: torch.Tensor  # (B,) float32, 0 where a pair has none
    weight: torch.Tensor | None  # (B,) float32, 1 where a pair has none; None when no pair has one


@dataclass
class PairBatch:
    """B pairs as one right-padded (2B, T) batch: the reference layout every faster one is tested against."""

    input_ids: torch.Tensor  # (2B, T) long: [all chosen; all rejected], right-padded with pad_token_id
    attention_mask: torch.Tensor  # (2B, T) long: 1 on real tokens
    margin: torch.Tensor  # (B,) float32, 0 where a pair has none
    weight: torch.Tensor | None = None  # (B,) float32: each pair's loss weight (`PAIR_WEIGHT` column)

    @property
    def sequence_tokens(self) -> int:
        return int(self.attention_mask.sum())  # a CPU tensor: no device sync

    def rewards(self, model: nn.Module) -> torch.Tensor:
        device = model_device(model)
        return compute_rewards(model, self.input_ids.to(device), self.attention_mask.to(device))  # (2B,)


class PairwiseCollator:
    """Collate `{"chosen_ids", "rejected_ids", "margin"?}` rows into a `PairBatch`.

    Exact example (pad_token_id=0):

    >>> collate = PairwiseCollator(pad_token_id=0)
    >>> batch = collate([
    ...     {"chosen_ids": [5, 6, 7], "rejected_ids": [5, 8], "margin": 1.5},
    ...     {"chosen_ids": [9], "rejected_ids": [9, 4, 4, 2]},
    ... ])
    >>> batch.input_ids
    tensor([[5, 6, 7, 0],
            [9, 0, 0, 0],
            [5, 8, 0, 0],
            [9, 4, 4, 2]])
    >>> batch.attention_mask
    tensor([[1, 1, 1, 0],
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 1, 1]])
    >>> batch.margin
    tensor([1.5000, 0.0000])

    With `pad_to_multiple_of=8` the same pairs give shape (4, 8). A missing margin counts as 0,
    which leaves the loss unchanged: -logsigmoid(delta - 0) = -logsigmoid(delta).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        if pad_token_id is None:
            raise ValueError("PairwiseCollator needs a pad_token_id")
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, pairs: list[dict]) -> PairBatch:
        if not pairs:
            raise ValueError("cannot collate an empty list of pairs")
        sequences = [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs]  # 2B lists
        input_ids, attention_mask = pad_right(sequences, self.pad_token_id, self.pad_to_multiple_of)  # (2B, T)
        return PairBatch(input_ids, attention_mask, margins(pairs), weights(pairs))


def pad_right(
    sequences: list[list[int]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """N token lists -> (input_ids, attention_mask), both (N, T), padded on the right.

    >>> pad_right([[7, 8], [9]], pad_token_id=0)
    (tensor([[7, 8],
            [9, 0]]), tensor([[1, 1],
            [1, 0]]))
    """
    length = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of  # round up
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)  # (N, T)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)  # (N, T)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


def margins(pairs: list[dict]) -> torch.Tensor:
    """(B,) float32: each pair's margin, 0 where it has none (shared by the packed collator)."""
    return torch.tensor([float(p.get("margin") or 0.0) for p in pairs], dtype=torch.float32)  # (B,)


PAIR_WEIGHT = "pair_weight"  # a pair's loss weight, when the data gives one (reward/labels/strength.py writes it)


def weights(pairs: list[dict]) -> torch.Tensor | None:
    """(B,) float32: each pair's loss weight, 1 where it has none; None when no pair has one (plain pairs).

    >>> weights([{"pair_weight": 3.0}, {}, {"pair_weight": 0.0}]), weights([{}])
    (tensor([3., 1., 0.]), None)
    """
    if not any(p.get(PAIR_WEIGHT) is not None for p in pairs):
        return None
    return torch.tensor([1.0 if p.get(PAIR_WEIGHT) is None else float(p[PAIR_WEIGHT]) for p in pairs])  # (B,)
