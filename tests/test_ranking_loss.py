"""reward/ranked/loss.py against hand-worked numbers, against reward/loss.py when every ranking is a pair,
and against torch.autograd for the gradients its docstring states."""

from __future__ import annotations

import math

import pytest
import torch

from reward.loss import bradley_terry_loss
from reward.metrics import loss_metrics
from reward.ranked.loss import all_comparisons, all_pairs_loss, plackett_luce_loss


def softplus(x: float) -> float:  # −log σ(−x) = log(1 + e^x)
    return math.log1p(math.exp(x))


# --- hand-worked --------------------------------------------------------------------------------------
def test_all_pairs_by_hand_both_normalisations():
    # prompt 0: scores [3, 1, 2], rewards [1, 0, 1] -> (0≻1, Δ=1), (0≻2, Δ=0), (2≻1, Δ=1)
    # prompt 1: scores [1, 0], rewards [0, 2] -> (3≻4, Δ=−2)
    c = all_comparisons([[3.0, 1.0, 2.0], [1.0, 0.0]])
    r = torch.tensor([1.0, 0.0, 1.0, 0.0, 2.0])
    p0 = 2 * softplus(-1) + math.log(2)  # 2 · 0.313262 + 0.693147
    p1 = softplus(2)  # 2.126928
    assert all_pairs_loss(r, c).loss.item() == pytest.approx((p0 + p1) / 4, abs=1e-6)  # 0.861650
    assert all_pairs_loss(r, c, normalization="prompt").loss.item() == pytest.approx((p0 / 3 + p1) / 2, abs=1e-6)
    out = all_pairs_loss(r, c)
    assert (out.num_pairs, loss_metrics(out)["accuracy"]) == (4, 0.5)  # Δ = 1, 0, 1, −2: a tie in reward is wrong


def test_ties_are_skipped_and_counted_or_trained_toward_a_half():
    skip = all_comparisons([[1.0, 1.0, 0.0]])
    assert (skip.ties_skipped, skip.per_prompt.tolist()) == (1, [2])
    half = all_comparisons([[1.0, 1.0]], ties="half")
    assert half.tied.tolist() == [True]
    r = torch.tensor([1.0, 0.0], requires_grad=True)
    out = all_pairs_loss(r, half)
    assert out.loss.item() == pytest.approx((softplus(-1) + softplus(1)) / 2, abs=1e-6)  # 0.813262
    out.loss.backward()
    assert r.grad.tolist() == pytest.approx([torch.sigmoid(torch.tensor(1.0)).item() - 0.5, 0.5 - 0.731059], abs=1e-6)
    zero = torch.zeros(2, requires_grad=True)
    all_pairs_loss(zero, half).loss.backward()
    assert zero.grad.tolist() == [0.0, 0.0]  # minimised at r_i = r_j: a tie pulls the rewards together
    assert out.delta.numel() == 0 and out.num_pairs == 1  # no decided comparison; the tie is trained
    assert loss_metrics(out)["accuracy"] == 0.0
    with pytest.raises(ValueError, match="ties must be one of"):
        all_comparisons([[1.0, 0.0]], ties="win")


def test_plackett_luce_by_hand():
    # order [0, 1, 2] with rewards [2, 1, 0]: −[(2 − log(e² + e + 1)) + (1 − log(e + 1))]
    r = torch.tensor([2.0, 1.0, 0.0])
    expected = -((2 - math.log(math.e**2 + math.e + 1)) + (1 - math.log(math.e + 1)))  # 0.720868
    out = plackett_luce_loss(r, [torch.tensor([0, 1, 2])])
    assert out.loss.item() == pytest.approx(expected / 2, abs=1e-6)  # "comparison": / (K − 1) choices
    per_prompt = plackett_luce_loss(r, [torch.tensor([0, 1, 2])], normalization="prompt")
    assert per_prompt.loss.item() == pytest.approx(expected / 2, abs=1e-6)  # one prompt: the same
    assert loss_metrics(out)["accuracy"] == 1.0


# --- K = 2 is the pair loss ---------------------------------------------------------------------------------
@pytest.mark.parametrize("normalization", ["comparison", "prompt"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"center_rewards_coefficient": 0.01}])
def test_pairs_as_rankings_give_the_pair_loss_and_its_gradients(normalization, options):
    torch.manual_seed(0)
    r_c, r_r = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    reference = bradley_terry_loss(r_c, r_r, **options)
    reference.loss.backward()
    flat = torch.stack([r_c.detach(), r_r.detach()], dim=1).reshape(-1).requires_grad_()  # (12,) c0 r0 c1 r1 ...
    ranked = all_pairs_loss(flat, all_comparisons([[1.0, 0.0]] * 6), normalization=normalization, **options)
    assert ranked.loss.item() == pytest.approx(reference.loss.item(), abs=1e-6)
    ranked.loss.backward()
    grads = flat.grad.reshape(6, 2)
    assert torch.allclose(grads[:, 0], r_c.grad, atol=1e-7) and torch.allclose(grads[:, 1], r_r.grad, atol=1e-7)
    got, want = loss_metrics(ranked), loss_metrics(reference)
    assert (got["accuracy"], got["margin"]) == pytest.approx((want["accuracy"], want["margin"]))


def test_plackett_luce_with_k_2_is_the_pair_loss():
    torch.manual_seed(1)
    r_c, r_r = torch.randn(5), torch.randn(5)
    flat = torch.stack([r_c, r_r], dim=1).reshape(-1)  # (10,)
    orders = [torch.tensor([2 * i, 2 * i + 1]) for i in range(5)]
    assert plackett_luce_loss(flat, orders).loss.item() == pytest.approx(bradley_terry_loss(r_c, r_r).loss.item())


# --- gradients as the docstring states them -------------------------------------------------------------------
def test_all_pairs_gradient_formula():
    torch.manual_seed(2)
    scores = [[4.0, 2.0, 3.0, 1.0]]
    c = all_comparisons(scores)
    r = torch.randn(4, requires_grad=True)
    eps = 0.1
    all_pairs_loss(r, c, label_smoothing=eps).loss.backward()
    expected = torch.zeros(4)
    for i, j in zip(c.better.tolist(), c.worse.tolist()):
        g = torch.sigmoid(r[i] - r[j]).item() - (1 - eps)  # ∂ℓ_ij/∂r_i = σ(Δ) − (1 − ε)
        expected[i] += g / len(c.better)
        expected[j] -= g / len(c.better)
    assert torch.allclose(r.grad, expected, atol=1e-6)


def test_plackett_luce_gradient_formula():
    torch.manual_seed(3)
    r = torch.randn(4, requires_grad=True)
    order = torch.tensor([2, 0, 3, 1])
    plackett_luce_loss(r, [order], normalization="prompt").loss.backward()  # / (K − 1) = 3
    ranked = r.detach()[order]
    expected_ranked = torch.zeros(4)
    for t in range(3):  # stage t: softmax over the responses left, minus 1 for the one chosen
        expected_ranked[t:] += torch.softmax(ranked[t:], dim=0)
        expected_ranked[t] -= 1
    expected = torch.zeros(4)
    expected[order] = expected_ranked / 3
    assert torch.allclose(r.grad, expected, atol=1e-6)


# --- accumulation: micro-batches with the step's count give the step's loss -----------------------------------
@pytest.mark.parametrize("normalization", ["comparison", "prompt"])
def test_micro_batches_with_the_steps_count_sum_to_one_big_batch(normalization):
    torch.manual_seed(4)
    scores = [[3.0, 2.0, 1.0, 0.0], [1.0, 0.0], [2.0, 0.0, 1.0]]
    rewards = [torch.randn(len(s)) for s in scores]
    whole = all_pairs_loss(torch.cat(rewards), all_comparisons(scores), normalization=normalization)
    units = sum(len(s) * (len(s) - 1) // 2 for s in scores) if normalization == "comparison" else len(scores)
    first = all_pairs_loss(torch.cat(rewards[:2]), all_comparisons(scores[:2]), normalization, units_in_step=units)
    second = all_pairs_loss(rewards[2], all_comparisons(scores[2:]), normalization, units_in_step=units)
    assert (first.loss + second.loss).item() == pytest.approx(whole.loss.item(), abs=1e-6)


def test_losses_stay_float32_under_bf16_inputs():
    r = torch.tensor([1.0, 0.0, 2.0], dtype=torch.bfloat16)
    assert all_pairs_loss(r, all_comparisons([[2.0, 1.0, 0.0]])).loss.dtype == torch.float32
    assert plackett_luce_loss(r, [torch.tensor([0, 1, 2])]).loss.dtype == torch.float32
