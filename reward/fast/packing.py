"""Padding-free packing and a shared prompt prefix: the pairwise forward without wasted tokens.

The padded path (`PairwiseCollator` + `compute_rewards`) pads 2B rows to the longest sequence and
computes each prompt twice. `pack_pairs` lays the pairs out as segments in rows instead
(reward/fast/layout.py has the rules), so every token sees exactly what it sees in its own padded row:

- packing (`max_tokens_per_row`): "all" puts every segment in one row (no padding at all: the
  training default), an int N fills rows of at most N tokens, None gives each segment its own row;
- shared prefix (`share_prefix=True`): a pair is one segment [P | C' | R'], P the longest common
  token prefix of chosen and rejected; R' attends to P and R' but not C', and its positions go on
  from len(P). No common prefix gives [C' | R'], two independent sequences: exact, so not a
  fallback, but warned once (nothing is saved; the prompt did not tokenize to a shared prefix);
- both: several [P | C' | R'] segments per row.

A `PackedBatch` is a micro-batch like the padded one (reward/collate.py `MicroBatch`): its `rewards`
run `model.base_model` on the rows with their position ids and segment layout and apply `model.score`
at the reward tokens only (reward/fast/packed_forward.py), the padded path's tokens. A model packing
does not apply to (e.g. BERT) gets the padded forward, with one `PackingFallbackWarning` per reason.

API (`pairs` are `{"chosen_ids", "rejected_ids", "margin"?}` rows, as for `PairwiseCollator`):
    pack_pairs(pairs, pad_token_id, max_tokens_per_row="all", share_prefix=True) -> PackedBatch
    PackingCollator(pad_token_id, max_tokens_per_row="all", share_prefix=True)(pairs) -> PackedBatch
    packed_rewards(model, batch) -> (r_chosen (B,), r_rejected (B,)), float32
    pair_collator(...), evaluation_collator(...): the recipe's choice of layout from the options
    describe_forward(model, collate, order) -> the start-up `forward:` line
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from reward.collate import PairwiseCollator, margins, weights
from reward.fast.layout import (
    PREFIX,
    Segment,
    common_prefix_length,
    lay_out,
    segment_mask,
    shared_segment,
    unshared_segment,
    warn_once,
)
from reward.fast.packed_forward import forward_segments, padded_forward, supports_packing
from reward.fast.segment_attention import switch_changes_nothing_else
from reward.model import is_encoder, unwrap


@dataclass
class PackedBatch:
    """B pairs packed into R rows of T tokens, plus what is needed to read the rewards back."""

    input_ids: torch.Tensor  # (R, T) long, padded with pad_token_id
    position_ids: torch.Tensor  # (R, T) long, restarting at 0 in each segment (0 on padding)
    segments: list[Segment]  # (row, start, len P, len C', len R') per segment: what attends to what
    chosen_index: torch.Tensor  # (B, 2) long: (row, column) of each pair's chosen reward token
    rejected_index: torch.Tensor  # (B, 2) long: (row, column) of each pair's rejected reward token
    margin: torch.Tensor  # (B,) float32, 0 where absent (as PairwiseCollator)
    weight: torch.Tensor | None  # (B,) float32 loss weights, None without (as PairwiseCollator)
    num_tokens: int  # real tokens in the rows: what the model computes, padding excluded
    pad_token_id: int
    chosen_ids: list[list[int]]  # the pairs as given, for the padded fallback
    rejected_ids: list[list[int]]

    @property
    def reward_index(self) -> torch.Tensor:
        """(2B, 2): the chosen reward tokens, then the rejected ones (sequence numbers i and B + i)."""
        return torch.cat([self.chosen_index, self.rejected_index])

    @property
    def num_positions(self) -> int:
        """Token slots the forward runs, padding included: R x T."""
        return self.input_ids.numel()

    @property
    def sequence_tokens(self) -> int:
        """Real tokens of the plain path (sum of both sides' lengths, its padding excluded)."""
        return sum(map(len, self.chosen_ids)) + sum(map(len, self.rejected_ids))

    def dense_mask(self) -> torch.Tensor:
        """(R, 1, T, T) bool, True = query row may attend to key column: the rule the segment attention
        computes, written out (for tests and reading; the forward never builds it: R x T x T)."""
        rows, width = self.input_ids.shape
        mask = torch.zeros((rows, 1, width, width), dtype=torch.bool)  # (R, 1, T, T)
        for row, start, prefix, *suffixes in self.segments:
            branches = [PREFIX] * prefix + [k + 1 for k, length in enumerate(suffixes) for _ in range(length)]
            end = start + len(branches)
            mask[row, 0, start:end, start:end] = segment_mask(branches)  # block diagonal
        mask[:, 0].diagonal(dim1=-2, dim2=-1).fill_(True)  # padding sees itself (an empty row would be NaN)
        return mask

    def rewards(self, model: nn.Module) -> torch.Tensor:
        """(2B,) float32, every chosen then every rejected: the rewards of the padded forward, from the packed
        rows; the padded forward itself when `supports_packing` says no. Call it inside the same autocast
        context as `compute_rewards`. A PEFT-wrapped model runs through its adapted inner model."""
        if not supports_packing(model):
            return padded_forward(model, self.chosen_ids + self.rejected_ids, self.pad_token_id)  # (2B,)
        return forward_segments(model, self, self.pad_token_id)  # (2B,)


def pack_pairs(
    pairs: list[dict], pad_token_id: int, max_tokens_per_row: int | str | None = "all", share_prefix: bool = True
) -> PackedBatch:
    """Lay B pairs out as segments in rows: "all" in one row, an int budget per row, or None (one per row).

    Exact example (pad 0): pair 0 shares [5, 6]; pair 1 shares [3], its rejected side is all prefix.

    >>> b = pack_pairs([{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 6, 8, 9]},
    ...                 {"chosen_ids": [3, 4], "rejected_ids": [3]}], pad_token_id=0, max_tokens_per_row=8)
    >>> b.input_ids, b.position_ids
    (tensor([[5, 6, 7, 8, 9, 3, 4]]), tensor([[0, 1, 2, 2, 3, 0, 1]]))
    >>> b.segments
    [(0, 0, 2, 1, 2), (0, 5, 1, 1, 0)]
    >>> b.dense_mask()[0, 0].long()
    tensor([[1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0, 0],
            [1, 1, 0, 1, 0, 0, 0],
            [1, 1, 0, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 1, 1]])
    >>> b.chosen_index.tolist(), b.rejected_index.tolist(), b.num_tokens, b.sequence_tokens
    ([[0, 2], [0, 6]], [[0, 4], [0, 5]], 7, 10)

    Token 8 (rejected, position 2) sees 5, 6 and not 7; pair 1's rejected reward is read at its
    prefix token 3 (column 5). The padded path would run 4 rows x 4 = 16 slots for these 10 tokens.
    """
    if not pairs:
        raise ValueError("cannot pack an empty list of pairs")
    if pad_token_id is None:
        raise ValueError("packing needs a pad_token_id")
    chosen = [list(p["chosen_ids"]) for p in pairs]
    rejected = [list(p["rejected_ids"]) for p in pairs]
    if not all(chosen) or not all(rejected):
        raise ValueError("cannot pack an empty token sequence (it has no token to read a reward at)")
    b = len(pairs)  # sequence numbers: chosen i is i, rejected i is B + i
    if share_prefix:
        segments = [
            shared_segment([(i, c), (b + i, r)], pad_token_id) for i, (c, r) in enumerate(zip(chosen, rejected))
        ]
        if any(common_prefix_length(c, r) == 0 for c, r in zip(chosen, rejected)):
            warn_once(
                "shared prefix: a pair has no common token prefix; it is computed as two independent "
                "sequences (exact, nothing shared). Check that prompt + response keeps the prompt's tokens."
            )
    else:
        segments = [unshared_segment(n, ids, pad_token_id) for n, ids in enumerate(chosen + rejected)]
    rows = lay_out(segments, 2 * b, pad_token_id, max_tokens_per_row)
    return PackedBatch(
        input_ids=rows.input_ids,
        position_ids=rows.position_ids,
        segments=rows.segments,
        chosen_index=rows.reward_index[:b],
        rejected_index=rows.reward_index[b:],
        margin=margins(pairs),  # (B,)
        weight=weights(pairs),  # (B,) or None
        num_tokens=rows.num_tokens,
        pad_token_id=pad_token_id,
        chosen_ids=chosen,
        rejected_ids=rejected,
    )


@dataclass
class PackingCollator:
    """`pack_pairs` with fixed options, for a DataLoader or the loop (in place of `PairwiseCollator`)."""

    pad_token_id: int
    max_tokens_per_row: int | str | None = "all"  # "all": one row; N: rows of <= N tokens; None: one per row
    share_prefix: bool = True

    def __call__(self, pairs: list[dict]) -> PackedBatch:
        return pack_pairs(pairs, self.pad_token_id, self.max_tokens_per_row, self.share_prefix)


def pair_collator(
    pad_token_id: int,
    padding_free: bool,
    share_prefix: bool,
    pad_to_multiple_of: int | None = None,
    model: nn.Module | None = None,
) -> PackingCollator | PairwiseCollator:
    """Training's collator for pairs: packed (--padding_free: one row; --share_prefix: the prompt once), or the
    plain padded one (`packs` says when)."""
    if packs(padding_free, share_prefix, model):
        return PackingCollator(pad_token_id, "all" if padding_free else None, share_prefix)
    return PairwiseCollator(pad_token_id, pad_to_multiple_of)


def packs(padding_free: bool, share_prefix: bool, model: nn.Module | None = None) -> bool:
    """Whether training lays its micro-batches out packed (pairs, and grouped rankings alike): one of the two
    options on, and the model not an encoder (every token attends to the whole sequence: nothing to pack)."""
    return (padding_free or share_prefix) and not (model is not None and is_encoder(unwrap(model)))


def evaluation_collator(
    pad_token_id: int, packed: bool = True, model: nn.Module | None = None
) -> PackingCollator | PairwiseCollator:
    """Held-out pairs packed into one padding-free row with the shared prompt once (the padded forward's
    rewards: tests/test_fast_eval.py), or, with `packed` off (--eval_padding_free false), an encoder, or a model
    on eager attention (packing would switch its padded calls to sdpa), the plain padded batches, the reference."""
    inner = unwrap(model) if model is not None else None
    if packed and (inner is None or (not is_encoder(inner) and switch_changes_nothing_else(inner))):
        return PackingCollator(pad_token_id, "all", share_prefix=True)
    return PairwiseCollator(pad_token_id)


def packed_rewards(model: PreTrainedModel, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen (B,), r_rejected (B,)) float32: `batch.rewards(model)`, as the two sides."""
    rewards = batch.rewards(model)  # (2B,)
    b = batch.margin.numel()
    return rewards[:b], rewards[b:]


def describe_forward(model: PreTrainedModel, collate: object, order: str) -> str:
    """The path training runs, for the start-up summary: packed rows with per-segment attention, or
    plain padded batches with the model's own attention (after the one-time support check). `order`
    names the batch order (reward/batching.py `Shuffled.name`, reward/fast/grouping.py `LengthGrouped.name`)."""
    attention = unwrap(model).config._attn_implementation
    if hasattr(collate, "describe"):  # grouped rankings (reward/ranked/collate.py)
        return collate.describe(model, order)
    if isinstance(collate, PackingCollator) and supports_packing(model):
        layout = "one padding-free row" if collate.max_tokens_per_row == "all" else "one row per pair"
        prefix = ", the shared prompt computed once" if collate.share_prefix else ""
        attention = "per-segment attention (reward/fast/segment_attention.py)"
        return f"{order} micro-batches packed into {layout}{prefix}; {attention}"
    why = ""
    if is_encoder(unwrap(model)):
        why = " (an encoder's tokens attend to the whole sequence: nothing can be packed or shared)"
    elif isinstance(collate, PackingCollator):
        why = " (packing does not apply to this model: see the warning above)"
    return f"{order} micro-batches as plain padded (2B, T) batches{why}; {attention} attention (reward/collate.py)"
