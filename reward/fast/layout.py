"""Sequences laid out side by side in rows, each token seeing exactly what it sees in its own padded row.

The padded path pads every sequence to the longest and runs a prompt once per sequence. Here sequences
are *segments* placed in rows; position ids restart at 0 per segment and the attention keeps segments
apart:

- an unshared sequence is a segment of its own, causal over all of it: (row, start, L, 0, 0);
- sequences that share a token prefix (a pair's two sides; a prompt's K ranked responses; GRPO's
  completions of one prompt) are one segment [P | S1' | ... | SK'], P their longest common token
  prefix: each Sk' attends to P and to itself, never to another suffix, and its positions go on from
  len(P), as in its own row: (row, start, P, S1', ..., SK');
- rows: "all" segments in one row (no padding at all: the training default), an int N fills rows of
  at most N tokens first-fit, longest first (a longer segment gets a row of its own), None gives each
  segment its own row.

Who attends to whom is the `segments` list; reward/fast/segment_attention.py computes attention
segment by segment from it, so a row of many segments costs what its segments cost, not T x T.
`segment_mask` writes the rule out for one segment (tests, reading, the dense mask of
reward/fast/packing.py `PackedBatch.dense_mask`). Each sequence's reward is read where the padded
path's head reads it: the last token whose id != pad_token_id (index 0 if none), so with pad == eos
the token before a trailing EOS. Users: reward/fast/packing.py (pairs), reward/ranked/collate.py
(rankings), reward/fast/packed_scoring.py (scoring), and the forward in reward/fast/packed_forward.py.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

Segment = tuple[int, ...]  # (row, start, len P, len S1', ..., len SK'); a pair's is (row, start, P, C', R')
PREFIX, CHOSEN, REJECTED = 0, 1, 2  # branch of a token inside a pair's segment (suffix k is branch k)


class PackingFallbackWarning(UserWarning):
    """Packing or prefix sharing did not apply or saved nothing (shown once per reason)."""


def common_prefix_length(a: list[int], b: list[int]) -> int:
    """Length of the longest common token prefix.

    >>> common_prefix_length([1, 5, 6, 7], [1, 5, 8]), common_prefix_length([4], [5]), common_prefix_length([3], [3, 4])
    (2, 0, 1)
    """
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def reward_token_index(ids: list[int], pad_token_id: int) -> int:
    """Where the HF head reads the reward: the last index whose id != pad_token_id, else 0.

    This is `(arange(T) * (input_ids != pad)).argmax(-1)` of `XxxForSequenceClassification` on one
    row (right padding only adds pad ids after the sequence). With pad == eos = 2:

    >>> reward_token_index([1, 7, 8, 2], pad_token_id=2), reward_token_index([2, 2], pad_token_id=2)
    (2, 0)
    """
    return next((i for i in range(len(ids) - 1, -1, -1) if ids[i] != pad_token_id), 0)


@dataclass
class SharedSegment:
    """Sequences that share a token prefix, laid out as one segment [P | S1' | ... | SK']: attention runs
    inside it only, and each suffix Sk' sees P and itself, never another suffix (a pair is K = 2)."""

    ids: list[int]
    positions: list[int]  # each suffix's positions go on from len(P), as in its own row
    lengths: tuple[int, ...]  # (P, len S1', ..., len SK'); an unshared sequence of a pair is (L, 0, 0)
    rewards: list[tuple[int, int]]  # (sequence number in the batch, offset of its reward token in the segment)


def shared_segment(sequences: list[tuple[int, list[int]]], pad_token_id: int) -> SharedSegment:
    """[P | S1' | ... | SK'] for (sequence number, ids) items, P their longest common token prefix.

    >>> s = shared_segment([(0, [5, 6, 7]), (1, [5, 6, 8, 9]), (2, [5, 4])], pad_token_id=0)
    >>> s.ids, s.positions, s.lengths, s.rewards
    ([5, 6, 7, 6, 8, 9, 4], [0, 1, 2, 1, 2, 3, 1], (1, 2, 3, 1), [(0, 2), (1, 5), (2, 6)])
    """
    first = sequences[0][1]
    p = min(common_prefix_length(first, ids) for _, ids in sequences)
    ids, positions, rewards, offset = first[:p], list(range(p)), [], p
    for number, seq in sequences:
        at = reward_token_index(seq, pad_token_id)
        # a reward token inside P is the same token for every sequence; one in Sk' sits after S1'..Sk-1'
        rewards.append((number, at if at < p else offset + at - p))
        ids += seq[p:]
        positions += range(p, len(seq))
        offset += len(seq) - p
    return SharedSegment(ids, positions, (p, *(len(seq) - p for _, seq in sequences)), rewards)


def unshared_segment(number: int, ids: list[int], pad_token_id: int) -> SharedSegment:
    """One sequence on its own: causal over all of it."""
    reward_at = reward_token_index(ids, pad_token_id)
    return SharedSegment(ids, list(range(len(ids))), (len(ids), 0, 0), [(number, reward_at)])


def _assign_rows(lengths: list[int], max_tokens_per_row: int | None) -> list[list[int]]:
    """Segment indices per row: first-fit over the segments sorted longest first.

    >>> _assign_rows([5, 2, 4, 3], max_tokens_per_row=7)
    [[0, 1], [2, 3]]
    >>> _assign_rows([9, 2], max_tokens_per_row=7), _assign_rows([3, 2], max_tokens_per_row=None)
    ([[0], [1]], [[0], [1]])
    """
    if max_tokens_per_row is None:
        return [[i] for i in range(len(lengths))]
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):  # stable: ties keep their order
        row = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if row is None:  # a segment longer than the budget opens a row nothing else fits into
            rows.append([])
            room.append(max(max_tokens_per_row, lengths[i]))
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


@dataclass
class Rows:
    """Segments laid side by side in R rows of T tokens: what the packed forward reads."""

    input_ids: torch.Tensor  # (R, T) long, padded with pad_token_id
    position_ids: torch.Tensor  # (R, T) long (0 on padding)
    segments: list[Segment]  # (row, start, len P, len S1', ...) per segment
    reward_index: torch.Tensor  # (S, 2) long: (row, column) of sequence s's reward token
    num_tokens: int  # real tokens in the rows, padding excluded


def lay_out(
    segments: list[SharedSegment], num_sequences: int, pad_token_id: int, max_tokens_per_row: int | str | None
) -> Rows:
    """Place segments in rows: "all" in one row (no padding at all), an int budget per row (first-fit,
    longest first), or None (one segment per row)."""
    total = sum(len(s.ids) for s in segments)
    rows = _assign_rows([len(s.ids) for s in segments], total if max_tokens_per_row == "all" else max_tokens_per_row)
    width = max(sum(len(segments[s].ids) for s in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)  # (R, T)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)  # (R, T)
    reward_index = torch.zeros((num_sequences, 2), dtype=torch.long)  # (S, (row, column))
    layout: list[Segment] = []
    for r, row in enumerate(rows):
        start = 0
        for s in row:
            seg = segments[s]
            end = start + len(seg.ids)
            input_ids[r, start:end] = torch.tensor(seg.ids, dtype=torch.long)
            position_ids[r, start:end] = torch.tensor(seg.positions, dtype=torch.long)
            layout.append((r, start, *seg.lengths))
            for number, offset in seg.rewards:
                reward_index[number] = torch.tensor([r, start + offset])
            start = end
    return Rows(input_ids, position_ids, layout, reward_index, total)


def segment_mask(branches: list[int]) -> torch.Tensor:
    """(L, L) bool: causal, and the suffixes (chosen and rejected; or K responses) blind to each other.

    >>> segment_mask([PREFIX, CHOSEN, REJECTED, REJECTED]).long()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 0, 1, 0],
            [1, 0, 1, 1]])
    """
    branch = torch.tensor(branches)  # (L,)
    causal = torch.ones(len(branches), len(branches), dtype=torch.bool).tril()  # (L, L) key <= query
    key, query = branch[None, :], branch[:, None]  # (1, L), (L, 1)
    return causal & ((key == PREFIX) | (key == query))  # (L, L)


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """One PackingFallbackWarning per reason and process. Raised as if from "reward" line 0, so Python prints
    the message alone: a caller's stack frame would print one of our own source lines under it."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn_explicit(message, PackingFallbackWarning, "reward", 0, module="reward")
