"""The Bradley–Terry loss against hand-worked numbers (torchtune style)."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from reward.loss import PairObjective, bradley_terry_loss
from reward.metrics import loss_metrics


def softplus(x: float) -> float:  # -log(sigmoid(-x)) = log(1 + e^x), by hand
    return math.log1p(math.exp(x))


def test_hand_worked_mean():
    # pair 1: Δ = 2 → -log σ(2) = log(1 + e^-2) = 0.126928
    # pair 2: Δ = -1 → -log σ(-1) = log(1 + e^1) = 1.313262
    out = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert out.loss.item() == pytest.approx((0.126928 + 1.313262) / 2, abs=1e-6)
    assert out.loss_sum.item() == pytest.approx(0.126928 + 1.313262, abs=1e-6)
    assert out.delta.tolist() == [2.0, -1.0]  # what accuracy and the mean margin are read from (test_metrics.py)
    assert out.rewards.tolist() == [2.0, 0.0, 0.0, 1.0]  # [chosen; rejected]
    assert out.num_pairs == 2
    assert not (out.loss_sum.requires_grad or out.delta.requires_grad or out.rewards.requires_grad)


def test_margin_shifts_the_logit():
    # Δ = 1, margin 3 → -log σ(1 - 3) = log(1 + e^2) = 2.126928
    out = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=torch.tensor([3.0]))
    assert out.loss.item() == pytest.approx(softplus(2.0), abs=1e-6)
    assert out.loss.item() == pytest.approx(2.126928, abs=1e-6)
    assert out.delta.tolist() == [1.0]  # the margin shifts the logit, not Δ (accuracy is r_c > r_r)


def test_centering_term():
    # r_c = 1, r_r = 2: -log σ(-1) + 0.01 * (1 + 2)^2 = 1.313262 + 0.09
    out = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([2.0]), center_rewards_coefficient=0.01)
    assert out.loss.item() == pytest.approx(1.313262 + 0.09, abs=1e-6)


def test_ties_count_as_wrong():
    out = bradley_terry_loss(torch.tensor([1.0, 1.0, 3.0]), torch.tensor([1.0, 0.0, 3.0]))
    assert loss_metrics(out)["accuracy"] == pytest.approx(1 / 3)
    assert out.loss.item() == pytest.approx((math.log(2) + softplus(-1.0) + math.log(2)) / 3, abs=1e-6)


def test_normalised_by_pairs_in_step_not_in_call():
    r_c, r_r = torch.tensor([0.3, -0.2]), torch.tensor([0.1, 0.4])
    out = bradley_terry_loss(r_c, r_r, num_pairs_in_step=5)
    assert out.loss.item() == pytest.approx(-F.logsigmoid(r_c - r_r).sum().item() / 5, abs=1e-7)
    assert out.loss_sum.item() == pytest.approx(out.loss.item() * 5, abs=1e-6)


def test_gradient_matches_closed_form():
    # ∂L/∂r_c,i = -(1 - σ(Δ_i)) / N and ∂L/∂r_r,i = +(1 - σ(Δ_i)) / N
    r_c = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    r_r = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    bradley_terry_loss(r_c, r_r).loss.backward()
    expected = -(1 - torch.sigmoid(r_c.detach() - r_r.detach())) / 3
    assert torch.allclose(r_c.grad, expected, atol=1e-7)
    assert torch.allclose(r_r.grad, -expected, atol=1e-7)


def test_fp32_under_autocast_and_stable_for_huge_gaps():
    r_c = torch.tensor([-8192.0, 8192.0], dtype=torch.bfloat16, requires_grad=True)  # exact in bf16
    r_r = torch.zeros(2, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = bradley_terry_loss(r_c, r_r)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(8192 / 2, rel=1e-6)  # -log σ(-x) ≈ x; -log σ(x) ≈ 0
    out.loss.backward()
    assert torch.isfinite(r_c.grad).all()


def test_label_smoothing_hand_worked():
    # Δ = 2, ε = 0.1: 0.9 · log(1 + e^-2) + 0.1 · log(1 + e^2) = 0.9 · 0.126928 + 0.1 · 2.126928
    out = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0]), label_smoothing=0.1)
    assert out.loss.item() == pytest.approx(0.9 * 0.126928 + 0.1 * 2.126928, abs=1e-6)
    # minimised where σ(Δ) = 1 − ε: the gradient vanishes at Δ = logit(0.9) = log 9
    delta = torch.tensor([math.log(9.0)], requires_grad=True)
    bradley_terry_loss(delta, torch.zeros(1), label_smoothing=0.1).loss.backward()
    assert abs(delta.grad.item()) < 1e-6


def test_equals_bce_with_logits_against_label_one():
    g = torch.Generator().manual_seed(0)
    r_c, r_r, m = torch.randn(16, generator=g), torch.randn(16, generator=g), torch.rand(16, generator=g)
    bce = torch.nn.BCEWithLogitsLoss()
    assert bradley_terry_loss(r_c, r_r).loss.item() == pytest.approx(bce(r_c - r_r, torch.ones(16)).item(), abs=1e-6)
    assert bradley_terry_loss(r_c, r_r, m).loss.item() == pytest.approx(bce(r_c - r_r - m, torch.ones(16)).item(), 1e-6)
    smoothed = bradley_terry_loss(r_c, r_r, label_smoothing=0.2).loss.item()
    assert smoothed == pytest.approx(bce(r_c - r_r, torch.full((16,), 0.8)).item(), abs=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"margin": True},
        {"center_rewards_coefficient": 0.05},
        {"label_smoothing": 0.1},
        {"margin": True, "center_rewards_coefficient": 0.01, "label_smoothing": 0.2, "num_pairs_in_step": 9},
    ],
    ids=["plain", "margin", "centering", "smoothing", "all"],
)
def test_gradcheck_float64(options):
    g = torch.Generator().manual_seed(1)
    r_c = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    r_r = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    margin = torch.rand(5, dtype=torch.float64, generator=g) if options.pop("margin", False) else None
    assert bradley_terry_loss(r_c, r_r, margin, **options).loss.dtype == torch.float64  # no downcast

    def loss(a, b):
        return bradley_terry_loss(a, b, margin, **options).loss

    assert torch.autograd.gradcheck(loss, (r_c, r_r), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_loss_and_gradients_at_huge_gaps(dtype):
    for gap in (1e4, -1e4):
        r_c = torch.tensor([gap, 0.0], dtype=dtype, requires_grad=True)
        r_r = torch.tensor([0.0, 0.0], dtype=dtype, requires_grad=True)
        out = bradley_terry_loss(r_c, r_r, center_rewards_coefficient=0.01, label_smoothing=0.1)
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(r_c.grad).all() and torch.isfinite(r_r.grad).all()
    # naive log(sigmoid(x)) is where it breaks: that is why logsigmoid is used
    assert torch.isinf(torch.log(torch.sigmoid(torch.tensor(-1e4))))


def test_the_pair_objective_reads_the_batch_it_is_given():
    """`PairObjective`: rewards stacked [all chosen; all rejected], each pair shifted by its batch's margin,
    N the step's units; one unit per pair. Any layout with a `margin` (B,) and a `weight` (B,) or None is a
    pair batch to it; a weight scales its pair's term (a preference strength, docs/loss.md §10)."""
    batch = SimpleNamespace(margin=torch.tensor([3.0, 0.0]), weight=None)  # a packed or padded batch alike
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])  # r_chosen (1, 0), r_rejected (0, 1)
    out = PairObjective()(rewards, batch, units_in_step=4)
    assert out.loss.item() == pytest.approx((softplus(2.0) + softplus(1.0)) / 4, abs=1e-6)  # −log σ(1 − 3), −log σ(−1)
    assert out.delta.tolist() == [1.0, -1.0] and PairObjective().units(batch) == 2
    assert PairObjective().row_units(None) is None  # every pair counts 1 in its step
    weighted = SimpleNamespace(margin=torch.tensor([3.0, 0.0]), weight=torch.tensor([2.0, 0.5]))
    out = PairObjective()(rewards, weighted, units_in_step=4)
    assert out.loss.item() == pytest.approx((2 * softplus(2.0) + 0.5 * softplus(1.0)) / 4, abs=1e-6)
