"""Length-grouped batch order: pairs of similar length share a micro-batch, so less of it is padding.

The padded collator (`reward/collate.py`) pads every row of a micro-batch to its longest sequence;
a random batch that mixes a 40-token pair with a 900-token pair computes ~2 x 860 padding tokens.
HF's `LengthGroupedSampler` fixes this with a little structure and most of the randomness kept,
and this module does the same for pairs, with the batch order decided here too:

1. shuffle the pair indices with `torch.Generator().manual_seed(seed + epoch)` (the same seeding as
   `reward.batching.epoch_order`, so an epoch's order is a pure function of (seed, epoch) and a resumed
   run can skip straight to its step);
2. cut the permutation into mega-batches of `mega_batch_mult * batch_size` pairs (HF's default:
   50, or fewer so that there are at least 4 mega-batches on a small data set, never below 1);
3. sort each mega-batch by pair length, descending (stable, so ties keep the shuffled order);
4. cut each mega-batch into batches of `batch_size`; only the very last batch of the epoch can be
   smaller, because every mega-batch but the last is a multiple of `batch_size`;
5. shuffle the order of the full batches (same generator, continuing its stream). Without this,
   consecutive steps walk each mega-batch from longest to shortest: a saw-tooth of lengths that
   lines up with the learning-rate schedule and makes the loss curve look periodic;
6. put the full batch holding the longest pair first, so an out-of-memory error shows at step 1
   and not hours in (HF does the same); the smaller last batch stays last, which keeps the loop's
   invariant "every micro-batch but the epoch's last is full" (its step count, ceil(N / B)
   micro-batches, is unchanged).

Pair length is `len(chosen_ids) + len(rejected_ids)`: both sides go into the same padded
micro-batch, so their sum is what a batch costs (the padded width is the longer of the two, which
grows with the sum).

API:
    grouped_batches(lengths, batch_size, seed, epoch, mega_batch_mult=None) -> list[list[int]]
        micro-batches of pair indices; a permutation of range(len(lengths)) cut in pieces.
    LengthGrouped(lengths, seed): the same as a reward/batching.py `Order`, which reward/run/parts.py
        `batch_order` hands the loop in place of `Shuffled` (lengths: reward/batching.py `pair_lengths`, or
        for grouped rankings reward/ranked/collate.py `prompt_lengths`, a prompt's responses summed).
    padded_tokens(chosen_lengths, rejected_lengths, batches) -> int
        the padding the plain collator would add for that batch order (what grouping saves).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_MEGA_BATCH_MULT = 50  # HF LengthGroupedSampler's default


def grouped_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, mega_batch_mult: int | None = None
) -> list[list[int]]:
    """Micro-batches (lists of pair indices) of similar pair length, deterministic for (seed, epoch).

    Exact example: six pairs, batches of 2, mega-batches of 2 x 2 = 4 pairs.

    >>> grouped_batches([5, 1, 9, 3, 7, 2], batch_size=2, seed=0, epoch=0, mega_batch_mult=2)
    [[2, 0], [4, 1], [3, 5]]

    The shuffle gave [2, 5, 3, 0 | 1, 4]; sorted by length inside each mega-batch that is
    [2, 0, 3, 5 | 4, 1] (lengths [9, 5, 3, 2 | 7, 1]); cut into [2, 0], [3, 5], [4, 1], shuffled,
    and [2, 0] (it holds the longest pair, 9) goes first. Cutting the shuffle itself would have
    batched 9 with 2 and 1 with 7.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(lengths)
    if n == 0:
        return []
    if mega_batch_mult is None:
        mega_batch_mult = max(min(n // (4 * batch_size), DEFAULT_MEGA_BATCH_MULT), 1)
    mega = mega_batch_mult * batch_size

    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    batches: list[list[int]] = []
    for start in range(0, n, mega):
        group = sorted(order[start : start + mega], key=lambda i: lengths[i], reverse=True)  # stable
        batches += [group[i : i + batch_size] for i in range(0, len(group), batch_size)]

    # Only the epoch's last batch can be short; it stays last, the full ones are shuffled.
    tail = [batches.pop()] if len(batches[-1]) < batch_size else []
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    if shuffled:
        longest = max(range(len(shuffled)), key=lambda b: max(lengths[i] for i in shuffled[b]))
        shuffled.insert(0, shuffled.pop(longest))
    return shuffled + tail


@dataclass
class LengthGrouped:
    """`grouped_batches` as the loop's batch order (reward/batching.py `Order`): a fresh grouping each epoch.

    >>> LengthGrouped([5, 1, 9, 3, 7, 2], seed=0)(epoch=0, batch_size=2)
    [[2, 5], [4, 1], [0, 3]]
    """

    lengths: list[int]  # per row: what it costs in a padded micro-batch
    seed: int
    name = "length-grouped"

    def __call__(self, epoch: int, batch_size: int) -> list[list[int]]:
        return grouped_batches(self.lengths, batch_size, self.seed, epoch)


def padded_tokens(chosen_lengths: list[int], rejected_lengths: list[int], batches: list[list[int]]) -> int:
    """Padding tokens the plain collator adds over `batches`: 2B x (longest sequence) - real tokens.

    >>> padded_tokens([3, 1], [2, 4], [[0, 1]])  # width 4: (4 - 3) + (4 - 1) + (4 - 2) + (4 - 4)
    6
    """
    total = 0
    for batch in batches:
        sides = [chosen_lengths[i] for i in batch] + [rejected_lengths[i] for i in batch]
        total += len(sides) * max(sides) - sum(sides)
    return total
