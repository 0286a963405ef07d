"""Padding-free packing and a shared prompt prefix: the pairwise forward without wasted tokens.

The padded path (`PairwiseCollator` + `compute_rewards`) pads 2B rows to the longest sequence and
computes each prompt twice. Here sequences are *segments* laid side by side in rows; position ids
restart at 0 per segment and the attention keeps segments apart, so every token sees exactly what
it sees in its own padded row:

- packing (`max_tokens_per_row`): "all" puts every segment in one row (no padding at all: the
  training default), an int N fills rows of at most N tokens first-fit, longest first (a longer
  segment gets a row of its own), None gives each segment its own row (padded, as the plain path);
- shared prefix (`share_prefix=True`): a pair is one segment [P | C' | R'], P the longest common
  token prefix of chosen and rejected; R' attends to P and R' but not C', and its positions go on
  from len(P). No common prefix gives [C' | R'], two independent sequences: exact, so not a
  fallback, but warned once (nothing is saved; the prompt did not tokenize to a shared prefix);
- both: several [P | C' | R'] segments per row;
- rankings (reward/ranked/collate.py): a prompt's K responses are one segment [P | R1' | ... | RK']
  (`shared_segment`, any K; a pair is K = 2), each Rk' seeing P and itself only.

Who attends to whom is `PackedBatch.segments`, (row, start, len P, len C', len R') per segment
((row, start, L, 0, 0) for an unshared sequence; (row, start, P, R1', ..., RK') for a ranking).
reward/fast/segment_attention.py computes attention segment by segment from it, so a row of many
segments costs what its segments cost, not T x T;
`PackedBatch.dense_mask()` writes the same rule out as a 4-D mask, for tests and for reading.
`model.base_model` (`.model` Llama/Qwen2, `.transformer` GPT-2) runs the rows; `model.score` is
applied at the reward tokens only, which are the padded path's: the last token of the sequence
whose id != pad_token_id (index 0 if none), so with pad == eos the token before a trailing EOS.

Support: llama, qwen2, gpt2 with a `score` Linear, sdpa or eager attention, no sliding window, and
a numerical self-check once per model; otherwise (e.g. BERT) the padded path, with one
`PackingFallbackWarning` per reason (reward/fast/packed_forward.py).

API (`pairs` are `{"chosen_ids", "rejected_ids", "margin"?}` rows, as for `PairwiseCollator`):
    pack_pairs(pairs, pad_token_id, max_tokens_per_row="all", share_prefix=True) -> PackedBatch
    PackingCollator(pad_token_id, max_tokens_per_row="all", share_prefix=True)(pairs) -> PackedBatch
    reward.fast.packed_forward.packed_rewards(model, batch) -> (r_chosen (B,), r_rejected (B,)), float32
    reward.fast.packed_forward.supports_packing(model) -> bool
    common_prefix_length(a, b) -> int;  reward_token_index(ids, pad_token_id) -> int
    shared_segment(sequences, pad_token_id) -> SharedSegment;  lay_out(segments, ...) -> Rows
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from reward.collate import margins

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "gpt2")  # each one checked in tests/test_packing.py
SUPPORTED_ATTENTION = ("sdpa", "eager", "reward_segments")  # switched to reward_segments on first use


Segment = tuple[int, ...]  # (row, start, len P, len S1', ..., len SK'); a pair's is (row, start, P, C', R')
PREFIX, CHOSEN, REJECTED = 0, 1, 2  # branch of a token inside a pair's segment (suffix k is branch k)


class PackingFallbackWarning(UserWarning):
    """Packing or prefix sharing did not apply or saved nothing (shown once per reason)."""


@dataclass
class PackedBatch:
    """B pairs packed into R rows of T tokens, plus what is needed to read the rewards back."""

    input_ids: torch.Tensor  # (R, T) long, padded with pad_token_id
    position_ids: torch.Tensor  # (R, T) long, restarting at 0 in each segment (0 on padding)
    segments: list[Segment]  # (row, start, len P, len C', len R') per segment: what attends to what
    chosen_index: torch.Tensor  # (B, 2) long: (row, column) of each pair's chosen reward token
    rejected_index: torch.Tensor  # (B, 2) long: (row, column) of each pair's rejected reward token
    margin: torch.Tensor  # (B,) float32, 0 where absent (as PairwiseCollator)
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
            mask[row, 0, start:end, start:end] = _segment_mask(branches)  # block diagonal
        mask[:, 0].diagonal(dim1=-2, dim2=-1).fill_(True)  # padding sees itself (an empty row would be NaN)
        return mask


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
        num_tokens=rows.num_tokens,
        pad_token_id=pad_token_id,
        chosen_ids=chosen,
        rejected_ids=rejected,
    )


def _segment_mask(branches: list[int]) -> torch.Tensor:
    """(L, L) bool: causal, and the suffixes (chosen and rejected; or K responses) blind to each other.

    >>> _segment_mask([PREFIX, CHOSEN, REJECTED, REJECTED]).long()
    tensor([[1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 0, 1, 0],
            [1, 0, 1, 1]])
    """
    branch = torch.tensor(branches)  # (L,)
    causal = torch.ones(len(branches), len(branches), dtype=torch.bool).tril()  # (L, L) key <= query
    key, query = branch[None, :], branch[:, None]  # (1, L), (L, 1)
    return causal & ((key == PREFIX) | (key == query))  # (L, L)


@dataclass
class PackingCollator:
    """`pack_pairs` with fixed options, for a DataLoader or the loop (in place of `PairwiseCollator`)."""

    pad_token_id: int
    max_tokens_per_row: int | str | None = "all"  # "all": one row; N: rows of <= N tokens; None: one per row
    share_prefix: bool = True

    def __call__(self, pairs: list[dict]) -> PackedBatch:
        return pack_pairs(pairs, self.pad_token_id, self.max_tokens_per_row, self.share_prefix)


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, PackingFallbackWarning, stacklevel=3)
