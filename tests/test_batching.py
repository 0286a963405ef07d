"""reward/batching.py: which rows form each micro-batch and optimizer step, in a seeded order that a
resumed run can enter at any step; the orders (shuffled, length-grouped) and the step's units."""

import pytest
from conftest import steps_of
from datasets import Dataset
from test_loop import tokenized

from reward.batching import BatchPlan, Shuffled, epoch_order, optimizer_steps, pair_lengths, step_plan
from reward.collate import PairwiseCollator
from reward.config import TrainConfig, pick
from reward.fast.grouping import LengthGrouped


def test_step_plan_groups_the_same_pairs(tiny_tokenizer):
    ds = tokenized(tiny_tokenizer, 10)
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    big = steps_of(ds, collate, TrainConfig(per_device_train_batch_size=8, group_by_length=False))
    small = steps_of(
        ds, collate, TrainConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2, group_by_length=False)
    )
    for _ in range(4):  # two epochs: steps of 8 + 2 pairs
        (e1, mb1, n1), (e2, mb2, n2) = next(big), next(small)
        assert n1 == n2 == sum(m.margin.numel() for m in mb1)
        assert e1 == e2
        assert sum(m.margin.numel() for m in mb1) == sum(m.margin.numel() for m in mb2)
        ids1 = {tuple(r[r != 0].tolist()) for m in mb1 for r in m.input_ids}
        ids2 = {tuple(r[r != 0].tolist()) for m in mb2 for r in m.input_ids}
        assert ids1 == ids2


def shape(b: int, k: int = 1, max_steps: int = 100) -> BatchPlan:
    cfg = TrainConfig(per_device_train_batch_size=b, gradient_accumulation_steps=k, max_steps=max_steps)
    return pick(BatchPlan, cfg)


def rows_of(steps, n: int) -> list[list[list[int]]]:
    """The row indices of each micro-batch of the next `n` optimizer steps (collated as the index lists)."""
    return [next(steps)[1] for _ in range(n)]


def test_step_plan_by_hand():
    assert step_plan(10, shape(3, 2, max_steps=-1)) == (2, 4)  # 4 micro-batches an epoch -> 2 steps; 2 epochs
    assert step_plan(10, shape(3, 2, max_steps=7)) == (2, 7)  # max_steps wins
    assert step_plan(10, shape(3, 1, max_steps=-1), world_size=2) == (2, 4)  # global micro-batches of 6


@pytest.mark.parametrize("order", ["shuffled", "length-grouped"])
def test_every_epoch_is_a_new_order_of_every_row(order):
    """Each epoch visits every row once, in an order of its own: the same epoch twice is the same order (a
    resumed run can replay it), two epochs differ (a fixed order would show the model the same batches)."""
    lengths = [(i * 37) % 50 + 1 for i in range(40)]
    ds = Dataset.from_list([{"chosen_ids": [1] * n, "rejected_ids": [2]} for n in lengths])
    chosen = Shuffled(len(ds), seed=3) if order == "shuffled" else LengthGrouped(pair_lengths(ds), seed=3)
    steps = optimizer_steps(ds, lambda rows: [len(r["chosen_ids"]) for r in rows], chosen, shape(4))
    epochs = [sum((mb for step in rows_of(steps, 10) for mb in step), []) for _ in range(3)]  # 10 steps an epoch
    assert all(sorted(e) == sorted(lengths) for e in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
    assert chosen(1, 4) == chosen(1, 4) and chosen(1, 4) != chosen(2, 4)


def test_a_resumed_run_enters_the_order_at_its_step():
    ds = Dataset.from_list([{"chosen_ids": [i], "rejected_ids": [i, i]} for i in range(23)])
    ids = lambda rows: [r["chosen_ids"][0] for r in rows]  # noqa: E731
    fresh = optimizer_steps(ds, ids, Shuffled(23, 0), shape(4, 2))
    whole = rows_of(fresh, 7)  # 3 steps an epoch: the resume lands in epoch 1
    resumed = optimizer_steps(ds, ids, Shuffled(23, 0), shape(4, 2), start_step=4)
    assert rows_of(resumed, 3) == whole[4:]


def test_the_ranks_share_out_each_global_micro_batch():
    """Two processes: rank r takes slice r of every global micro-batch of 2 x 3 rows; together they hold the
    single process's micro-batches, and both count the global step's units."""
    ds = Dataset.from_list([{"chosen_ids": [i], "rejected_ids": [i, i]} for i in range(10)])
    ids = lambda rows: [r["chosen_ids"][0] for r in rows]  # noqa: E731
    one = optimizer_steps(ds, ids, Shuffled(10, 0), shape(6))
    ranks = [optimizer_steps(ds, ids, Shuffled(10, 0), shape(3), rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):  # 6 + 4 rows an epoch: the last step gives rank 1 a single row
        _, (whole,), units = next(one)
        (_, (a,), units_a), (_, (b,), units_b) = next(ranks[0]), next(ranks[1])
        assert a + b == whole and units == units_a == units_b == len(whole)


def test_units_count_what_each_row_adds_to_its_steps_divisor():
    """A grouped prompt counts its comparisons (reward/ranked/loss.py `row_units`); a pair counts 1."""
    ds = Dataset.from_list([{"chosen_ids": [i], "rejected_ids": [i, i]} for i in range(5)])
    units = [6, 3, 1, 10, 3]
    steps = optimizer_steps(ds, lambda rows: rows, Shuffled(5, 0), shape(2, 2), units=units)
    order = Shuffled(5, 0)(0, 2)
    first, second = next(steps)[2], next(steps)[2]
    assert (first, second) == (sum(units[i] for i in order[0] + order[1]), sum(units[i] for i in order[2]))
    plain = optimizer_steps(ds, lambda rows: rows, Shuffled(5, 0), shape(2, 2))
    assert next(plain)[2] == 4


def test_pair_lengths_read_through_an_index_mapping():
    ds = Dataset.from_list([{"chosen_ids": [1] * i, "rejected_ids": [2] * (i % 3)} for i in range(1, 8)])
    picked = ds.select([6, 0, 3])
    assert pair_lengths(picked) == [7 + 7 % 3, 1 + 1, 4 + 4 % 3]
    assert epoch_order(5, seed=0, epoch=0) == [4, 0, 1, 3, 2]  # accelerate's randperm(5) seeded 0 + 0: TRL's order
    assert epoch_order(5, seed=0, epoch=1) == epoch_order(5, seed=1, epoch=0) != epoch_order(5, 0, 0)
