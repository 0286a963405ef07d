"""Length grouping (`--group_by_length`): a seeded permutation whose micro-batches hold pairs of similar
length, so they pad less than TRL's random batches (split from tests/test_packing.py)."""

import random

from reward.batching import epoch_order
from reward.fast.grouping import grouped_batches, padded_tokens


def skewed_lengths(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    chosen = [int(rng.lognormvariate(4, 0.9)) + 1 for _ in range(n)]
    rejected = [c + rng.randint(-c // 2, c) for c in chosen]
    return chosen, rejected


def test_grouped_batches_docstring_example_and_determinism():
    assert grouped_batches([5, 1, 9, 3, 7, 2], 2, seed=0, epoch=0, mega_batch_mult=2) == [[2, 0], [4, 1], [3, 5]]
    chosen, rejected = skewed_lengths(1003)
    lengths = [c + r for c, r in zip(chosen, rejected)]
    a = grouped_batches(lengths, 8, seed=1, epoch=2)
    assert a == grouped_batches(lengths, 8, seed=1, epoch=2)
    assert a != grouped_batches(lengths, 8, seed=1, epoch=3)
    assert sorted(i for batch in a for i in batch) == list(range(1003))  # a permutation
    assert [len(batch) for batch in a] == [8] * 125 + [3]  # only the last one short: same step count
    assert max(lengths[i] for i in a[0]) == max(lengths[i] for batch in a[:-1] for i in batch)  # longest first


def test_grouping_pads_less_than_random_batching():
    chosen, rejected = skewed_lengths(2000, seed=4)
    lengths = [c + r for c, r in zip(chosen, rejected)]
    order = epoch_order(len(lengths), seed=0, epoch=0)
    random_batches = [order[i : i + 8] for i in range(0, len(order), 8)]
    grouped = grouped_batches(lengths, 8, seed=0, epoch=0)
    assert padded_tokens(chosen, rejected, grouped) < 0.5 * padded_tokens(chosen, rejected, random_batches)
