"""reward.eval.explain: per-pair loss terms and gradients, against hand-worked numbers and torch.autograd
through `bradley_terry_loss` (the training loss), so the printed explanation is the training math."""

from __future__ import annotations

import math
import re

import pytest
import torch

from reward.eval.explain import explain_pairs, format_explanation
from reward.loss import bradley_terry_loss
from reward.metrics import loss_metrics


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


# --- hand-worked ------------------------------------------------------------------------------------
def test_plain_pairs_by_hand():
    # Δ = 2: ℓ = log(1 + e^-2) = 0.126928, p = σ(2) = 0.880797, ∂L/∂r_c = (p − 1)/2 = −0.059601
    # Δ = −1: ℓ = log(1 + e^1) = 1.313262, p = σ(−1) = 0.268941, ∂L/∂r_c = (p − 1)/2 = −0.365529
    e = explain_pairs(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))

    assert e.delta.tolist() == [2.0, -1.0]
    assert e.p_chosen.tolist() == pytest.approx([0.880797, 0.268941], abs=1e-6)
    assert e.loss.tolist() == pytest.approx([0.126928, 1.313262], abs=1e-6)
    assert e.grad_r_chosen.tolist() == pytest.approx([-0.059601, -0.365529], abs=1e-6)
    assert e.grad_r_rejected.tolist() == pytest.approx([0.059601, 0.365529], abs=1e-6)
    assert e.margin_term is None and e.center_term is None
    t = e.totals()
    assert t["pairs"] == 2 and t["accuracy"] == 0.5
    assert t["loss"] == pytest.approx((0.126928 + 1.313262) / 2, abs=1e-6)
    assert t["grad_r_chosen_sum"] == pytest.approx(-0.425131, abs=1e-6)
    assert t["grad_r_rejected_sum"] == pytest.approx(0.425131, abs=1e-6)


def test_margin_and_centering_by_hand():
    # r_c = 1, r_r = 0, m = 3: z = −2, p = σ(−2) = 0.119203, BT term log(1 + e^2) = 2.126928
    # λ = 0.01: center term 0.01 · (1 + 0)^2 = 0.01; ∂/∂r_c of it = 2 · 0.01 · 1 = 0.02 (N = 1)
    e = explain_pairs(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([3.0]), center_rewards_coefficient=0.01)

    assert e.margin_term.tolist() == [3.0]
    assert e.p_chosen.item() == pytest.approx(0.119203, abs=1e-6)
    assert e.center_term.item() == pytest.approx(0.01)
    assert e.loss.item() == pytest.approx(2.126928 + 0.01, abs=1e-6)
    assert e.grad_r_chosen.item() == pytest.approx(0.119203 - 1 + 0.02, abs=1e-6)
    assert e.grad_r_rejected.item() == pytest.approx(-(0.119203 - 1) + 0.02, abs=1e-6)
    assert e.totals()["accuracy"] == 1.0  # accuracy is r_c > r_r, whatever the margin
    assert set(e.rows()[0]) == {
        "r_chosen",
        "r_rejected",
        "delta",
        "margin_term",
        "p_chosen",
        "center_term",
        "loss",
        "grad_r_chosen",
        "grad_r_rejected",
    }


def test_label_smoothing_by_hand():
    # Δ = 0, ε = 0.1: ℓ = −0.9 log ½ − 0.1 log ½ = log 2; ∂ℓ/∂r_c = ½ − 0.9 = −0.4
    # Δ = log 9: σ(Δ) = 0.9 = 1 − ε, the minimum of the smoothed loss, so the gradient is 0
    r_c = torch.tensor([0.0, math.log(9)], dtype=torch.float64)  # float64: log 9 exactly enough for a 0 gradient
    e = explain_pairs(r_c, torch.zeros(2, dtype=torch.float64), label_smoothing=0.1)

    assert e.loss[0].item() == pytest.approx(math.log(2))
    assert e.grad_r_chosen.tolist() == pytest.approx([-0.4 / 2, 0.0], abs=1e-12)
    assert e.loss[1].item() == pytest.approx(-0.9 * math.log(0.9) - 0.1 * math.log(0.1))
    assert e.totals()["accuracy"] == 0.5  # the tie counts as wrong


# --- the formulas against autograd through the training loss -----------------------------------------
CASES = {
    "plain": dict(),
    "margin": dict(margin=torch.tensor([0.5, 0.0, 2.0, 1.0, 0.25, 3.0])),
    "center": dict(center_rewards_coefficient=0.05),
    "smoothing": dict(label_smoothing=0.2),
    "all": dict(
        margin=torch.tensor([1.0, 0.0, 2.0, 0.5, 0.5, 4.0]), center_rewards_coefficient=0.01, label_smoothing=0.1
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gradients_equal_autograd_of_bradley_terry_loss(case):
    options = CASES[case]
    # Δ from −20 (very wrong, tests the stable log σ) to large positive, rewards off-centre
    r_c = torch.tensor([1.5, -0.3, 0.7, 2.0, -20.0, 6.0], requires_grad=True)
    r_r = torch.tensor([0.5, 0.4, 0.7, -1.0, 0.0, -3.0], requires_grad=True)

    out = bradley_terry_loss(
        r_c,
        r_r,
        options.get("margin"),
        options.get("center_rewards_coefficient"),
        options.get("label_smoothing", 0.0),
    )
    out.loss.backward()
    e = explain_pairs(r_c, r_r, **options)

    assert e.grad_r_chosen.tolist() == pytest.approx(r_c.grad.tolist(), rel=1e-5, abs=1e-7)
    assert e.grad_r_rejected.tolist() == pytest.approx(r_r.grad.tolist(), rel=1e-5, abs=1e-7)
    assert e.totals()["loss"] == pytest.approx(out.loss.item(), rel=1e-6)
    assert e.totals()["accuracy"] == loss_metrics(out)["accuracy"]
    # each ℓ_i is the training loss of that pair alone
    for i in range(6):
        single = bradley_terry_loss(
            r_c[i : i + 1].detach(),
            r_r[i : i + 1].detach(),
            options["margin"][i : i + 1] if "margin" in options else None,
            options.get("center_rewards_coefficient"),
            options.get("label_smoothing", 0.0),
        )
        assert e.loss[i].item() == pytest.approx(single.loss.item(), rel=1e-6)


# --- the terminal table -----------------------------------------------------------------------------
def test_table_is_truncated_but_totals_cover_every_pair():
    g = torch.Generator().manual_seed(0)
    r_c, r_r = torch.randn(30, generator=g), torch.randn(30, generator=g)  # (30,), (30,)
    e = explain_pairs(r_c, r_r)

    text = format_explanation(e, max_rows=5)

    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["pair", "r_chosen"])
    body = lines[header + 1 : header + 6]
    assert [line.split()[0] for line in body] == ["1", "2", "3", "4", "5"]
    assert lines[header + 6].strip().startswith("... 25 more pairs")
    assert lines[header].split() == [
        "pair",
        "r_chosen",
        "r_rejected",
        "delta",
        "p_chosen",
        "loss",
        "grad_r_chosen",
        "grad_r_rejected",
    ]
    assert len({len(line) for line in lines[header : header + 6]}) == 1  # aligned columns
    # row 1's printed numbers are pair 1's
    cells = body[0].split()
    assert float(cells[1]) == pytest.approx(r_c[0].item(), abs=1e-4)
    assert float(cells[5]) == pytest.approx(e.loss[0].item(), abs=1e-4)
    # totals over all 30 pairs, not the 5 shown
    mean_loss = float(re.search(r"L = mean loss ([0-9.]+)", text).group(1))
    assert mean_loss == pytest.approx(e.loss.mean().item(), abs=1e-6)
    assert mean_loss != pytest.approx(e.loss[:5].mean().item(), abs=1e-6)
    assert "N 30" in text


def test_hand_check_line_reproduces_the_printed_loss():
    e = explain_pairs(
        torch.tensor([0.8, 1.0]), torch.tensor([-0.4, 0.0]), torch.tensor([0.5, 0.0]), 0.01, label_smoothing=0.1
    )
    text = format_explanation(e)

    line = next(line for line in text.splitlines() if line.startswith("check pair 1"))
    # z = 0.8 + 0.4 − 0.5 = 0.7; ℓ = −0.9 log σ(0.7) − 0.1 log σ(−0.7) + 0.01 · 0.4²
    expected = -0.9 * math.log(sigmoid(0.7)) - 0.1 * math.log(sigmoid(-0.7)) + 0.01 * 0.16
    assert "z = 0.8000 - (-0.4000) - 0.5000 = 0.7000" in line
    assert float(line.rsplit("= ", 1)[1]) == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx(e.loss[0].item(), abs=1e-6)  # inputs were float32
    assert "center_term" in text and "margin_term" in text and "-0.9 * log(p_chosen)" in text
