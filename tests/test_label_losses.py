"""reward/labels/loss.py against hand-worked numbers, its closed-form gradients, float32 under half
precision, and exact accumulation: micro-batches divided by the step's N sum to the big batch's loss
and gradient."""

from __future__ import annotations

import math

import pytest
import torch

from reward.labels.loss import (
    attribute_regression_loss,
    combined_reward,
    implied_pairs,
    regression_loss,
    regression_with_pairs_loss,
    scaled_bradley_terry_loss,
    strength_weights,
)
from reward.loss import bradley_terry_loss


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_regression_by_hand_and_its_gradient():
    r = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    s = torch.tensor([4.0, 0.0, 2.0])  # mean 2, std 2: targets 1, -1, 0
    out = regression_loss(r, s, mean=2.0, std=2.0)
    assert out.loss.item() == pytest.approx(((0.5 - 1) ** 2 + 0 + 2.0**2) / 3)
    out.loss.backward()
    assert r.grad.tolist() == pytest.approx([2 * (0.5 - 1) / 3, 0.0, 2 * 2.0 / 3])  # 2 (r - t) / N
    assert out.num_pairs == 3 and out.loss_sum.item() == pytest.approx(0.25 + 4.0)


def test_the_pairs_ratings_imply_skip_ties_and_stay_in_their_prompt():
    assert implied_pairs([[1.0, 1.0], [0.0, 2.0, 1.0]]) == ([3, 3, 4], [2, 4, 2])


def test_regression_plus_implied_pairs_by_hand():
    r = torch.tensor([1.0, 0.0, 0.5, 2.0], requires_grad=True)
    s = torch.tensor([2.0, 1.0, 1.0, 0.0])  # prompt 1: (0 > 1); prompt 2: (2 > 3)
    better, worse = (torch.tensor(i) for i in implied_pairs([[2.0, 1.0], [1.0, 0.0]]))
    out = regression_with_pairs_loss(r, s, better, worse, pair_weight=0.5)
    squares = (1 - 2) ** 2 + (0 - 1) ** 2 + (0.5 - 1) ** 2 + (2 - 0) ** 2
    bt = -logsig(1.0 - 0.0) - logsig(0.5 - 2.0)
    assert out.loss.item() == pytest.approx((squares + 0.5 * bt) / 4, abs=1e-6)  # one divisor: N = 4 completions
    assert out.delta.tolist() == [1.0, -1.5]  # the implied pairs' Δ: accuracy 1/2
    out.loss.backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    want0 = 2 * (1 - 2) / 4 - 0.5 * (1 - sig(1.0)) / 4  # d squares + β d bt, over N (reward 0 is pair 1's better)
    assert r.grad[0].item() == pytest.approx(want0, abs=1e-6)
    plain = regression_with_pairs_loss(r, s, better, worse, 0.0)
    assert plain.loss.item() == pytest.approx(squares / 4)  # β = 0: the regression alone
    assert plain.loss.item() == pytest.approx(regression_loss(r, s).loss.item())


def test_regression_with_pairs_accumulates_exactly_over_uneven_micro_batches():
    r = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0], requires_grad=True)
    s = torch.tensor([2.0, 1.0, 1.0, 0.0, 3.0])
    mean, std = 1.4, 1.1
    whole_b, whole_w = (torch.tensor(i) for i in implied_pairs([[2.0, 1.0], [1.0, 0.0, 3.0]]))
    whole = regression_with_pairs_loss(r, s, whole_b, whole_w, 0.7, mean, std)
    whole.loss.backward()
    want = r.grad.clone()
    r.grad = None
    first = regression_with_pairs_loss(r[:2], s[:2], torch.tensor([0]), torch.tensor([1]), 0.7, mean, std, 5)
    b, w = (torch.tensor(i) for i in implied_pairs([[1.0, 0.0, 3.0]]))
    second = regression_with_pairs_loss(r[2:], s[2:], b, w, 0.7, mean, std, 5)
    (first.loss + second.loss).backward()
    assert (first.loss + second.loss).item() == pytest.approx(whole.loss.item(), abs=1e-6)
    assert torch.allclose(r.grad, want, atol=1e-7)


def test_strength_weights_from_the_table_and_a_missing_level_is_an_error():
    assert strength_weights(torch.tensor([-1, 2, 3])).tolist() == [1.0, 2.0, 3.0]
    assert strength_weights(torch.tensor([1, 2]), {1: 0.5, 2: 4.0}).tolist() == [0.5, 4.0]
    with pytest.raises(ValueError, match=r"no weight for strength \[0\]"):
        strength_weights(torch.tensor([0, 1]))


def test_scaled_bradley_terry_by_hand_and_its_gradient():
    r_c = torch.tensor([2.0, 0.0], requires_grad=True)
    r_r = torch.tensor([0.0, 1.0], requires_grad=True)
    w = torch.tensor([3.0, 1.0])
    out = scaled_bradley_terry_loss(r_c, r_r, w)
    assert out.loss.item() == pytest.approx((-3 * logsig(2.0) - logsig(-1.0)) / 2, abs=1e-6)
    out.loss.backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert r_c.grad.tolist() == pytest.approx([-3 * (1 - sig(2.0)) / 2, -(1 - sig(-1.0)) / 2], abs=1e-6)
    assert (r_c.grad + r_r.grad).abs().max().item() == 0.0


def test_weights_of_one_are_the_plain_loss_and_a_margin_is_the_other_reading():
    r_c, r_r, m = torch.tensor([1.0, 0.2, -0.5]), torch.tensor([0.0, 0.4, 0.5]), torch.tensor([1.0, 2.0, 3.0])
    plain = bradley_terry_loss(r_c, r_r, m).loss.item()
    assert scaled_bradley_terry_loss(r_c, r_r, torch.ones(3), m).loss.item() == pytest.approx(plain, abs=1e-7)


def test_masked_attributes_skip_what_was_not_rated_even_nan():
    r = torch.tensor([[1.0, 0.0], [2.0, 5.0]], requires_grad=True)
    t = torch.tensor([[0.0, float("nan")], [2.0, 3.0]])  # a missing rating stored as NaN
    out = attribute_regression_loss(r, t, torch.tensor([[1, 0], [1, 1]]))
    assert out.loss.item() == pytest.approx((1 + 0 + 4) / 3)
    out.loss.backward()
    assert torch.allclose(r.grad, torch.tensor([[2 / 3, 0.0], [0.0, 4 / 3]]))  # nothing flows to [0, 1]
    assert combined_reward(r.detach(), [1.0, -1.0]).tolist() == [1.0, -3.0]
    with pytest.raises(ValueError, match="3 combination weights for 2 attributes"):
        combined_reward(r.detach(), [1.0, 1.0, 1.0])


@pytest.mark.parametrize("name", ["regression", "scaled", "attributes"])
def test_micro_batches_over_the_steps_n_give_the_big_batch(name):
    """Exact accumulation: split 6 items 4 + 2, divide each part by the step's N, sum: the big batch."""
    torch.manual_seed(0)
    r = torch.randn(6, requires_grad=True)
    r_other, s, w = torch.randn(6), torch.randn(6) * 2 + 1, torch.tensor([1.0, 2, 3, 1, 2, 3])
    attrs = torch.randn(6, 2)
    observed = torch.tensor([[1, 0], [1, 1], [0, 1], [1, 1], [1, 0], [0, 1]])

    def loss(part: slice, n: int | None) -> torch.Tensor:
        if name == "regression":
            return regression_loss(r[part], s[part], 1.0, 2.0, n).loss
        if name == "scaled":
            return scaled_bradley_terry_loss(r[part], r_other[part], w[part], None, n).loss
        heads = torch.stack([r, r * 0.5], dim=1)  # (6, 2)
        cells = None if n is None else int(observed.sum())
        return attribute_regression_loss(heads[part], attrs[part], observed[part], cells).loss

    whole = loss(slice(0, 6), None)
    (grad_whole,) = torch.autograd.grad(whole, r)
    parts = loss(slice(0, 4), 6) + loss(slice(4, 6), 6)
    (grad_parts,) = torch.autograd.grad(parts, r)
    assert parts.item() == pytest.approx(whole.item(), abs=1e-6)
    assert torch.allclose(grad_parts, grad_whole, atol=1e-7)


def test_float32_whatever_the_inputs_precision():
    r, s = torch.tensor([0.5, 1.5], dtype=torch.bfloat16), torch.tensor([1.0, 2.0], dtype=torch.bfloat16)
    assert regression_loss(r, s).loss.dtype == torch.float32
    assert scaled_bradley_terry_loss(r, s, torch.ones(2)).loss.dtype == torch.float32
