"""Scoring without padding: sequences that share a prompt become one segment, the prompt computed once.

Scoring runs the forward only, over sequences that come in groups: the two sides of a pair, the K
completions of a ranked row, GRPO's generations of one prompt. A group of two or more is laid out
as one segment [P | S1' | ... | SK'] (reward/fast/layout.py `shared_segment`, P the group's
longest common token prefix; each Sk' sees P and itself, never another suffix), a lone sequence as
an unshared one, and all segments of a batch go side by side in one padding-free row. The rewards
are the padded forward's (the same rule training's packed path is tested on: tests/test_packing.py;
scoring and evaluation packed vs padded: tests/test_fast_eval.py). A model off the packing
allow-list (e.g. an encoder) gets the plain padded batch, as before.

    group_rewards(model, [[c0, r0], [c1, r1], [t2]], pad_token_id) -> tensor([rc0, rr0, rc1, rr1, rt2])
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from reward.errors import UserError
from reward.fast.layout import common_prefix_length, lay_out, shared_segment, unshared_segment
from reward.fast.packed_forward import forward_segments, padded_forward, supports_packing
from reward.fast.segment_attention import switch_changes_nothing_else
from reward.model import position_limit, unwrap


def group_rewards(
    model: PreTrainedModel, groups: list[list[list[int]]], pad_token_id: int, packed: bool = True
) -> torch.Tensor:
    """(S,) float32: the reward of every sequence of `groups`, group after group, in order.

    `packed=False`, a model that cannot be packed, or one on eager attention (packing would switch its
    other calls to sdpa) runs the plain right-padded (S, T) batch, the reference. Call under
    `torch.no_grad()` (and the autocast of the precision in use). A sequence longer than the model's
    learned positions is refused here, the last line before the embedding fails on it: scorers hold
    every sequence to reward/eval/lengths.py's rule first."""
    sequences = [seq for group in groups for seq in group]
    limit, longest = position_limit(unwrap(model)), max(map(len, sequences), default=0)
    if limit is not None and longest > limit:
        raise UserError(
            f"a sequence of {longest} tokens is longer than the model's {limit} positions: cut or skip it first "
            "(RewardScorer's truncation, score.py --truncation)"
        )
    if packs(model, packed):
        segments, number = [], 0
        for group in groups:
            items = list(enumerate(group, start=number))
            one = len(group) == 1
            segments.append(
                unshared_segment(number, group[0], pad_token_id) if one else shared_segment(items, pad_token_id)
            )
            number += len(group)
        rows = lay_out(segments, len(sequences), pad_token_id, "all")  # one row, no padding
        return forward_segments(model, rows, pad_token_id)  # (S,)
    return padded_forward(model, sequences, pad_token_id)  # (S,)


def packs(model: PreTrainedModel, packed: bool = True) -> bool:
    """Whether `group_rewards` lays groups out as packed segments (else: the padded batch)."""
    return packed and switch_changes_nothing_else(unwrap(model)) and supports_packing(model)


def computed_tokens(groups: list[list[list[int]]], packed: bool) -> int:
    """The tokens `group_rewards` runs through the model for `groups`: packed, each group's common prefix
    once and then each suffix; padded, every sequence at the longest one's length.

    >>> groups = [[[1, 2, 3], [1, 2, 4, 5]], [[7]]]  # prefix [1, 2] once, then [3] and [4, 5]; then [7]
    >>> computed_tokens(groups, packed=True), computed_tokens(groups, packed=False)
    (6, 12)
    """
    sequences = [ids for group in groups for ids in group]
    if not packed:
        return len(sequences) * max(map(len, sequences), default=0)
    total = 0
    for group in groups:
        prefix = min(common_prefix_length(group[0], ids) for ids in group) if len(group) > 1 else 0
        total += prefix + sum(len(ids) - prefix for ids in group)
    return total
