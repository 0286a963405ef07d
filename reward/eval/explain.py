r"""The training loss taken apart pair by pair, so one loss value can be checked by hand.

For B pairs with rewards r_c, r_r (and optional margin m, label smoothing ε, centring coefficient λ),
this is the loss of `reward/loss.py` written out term by term, in float64:

    Δ_i = r_c,i − r_r,i                 z_i = Δ_i − m_i
    p_i = σ(z_i)                         the probability, inside the loss, that chosen wins
    ℓ_i = −(1 − ε) log p_i − ε log(1 − p_i) + λ (r_c,i + r_r,i)²
    L   = Σ_i ℓ_i / N                    N = B: the mean over the pairs explained

and its gradient with respect to each reward (dℓ/dz = σ(z) − (1 − ε); dz/dr_c = 1, dz/dr_r = −1):

    ∂L/∂r_c,i = ( (p_i − (1 − ε)) + 2λ (r_c,i + r_r,i) ) / N
    ∂L/∂r_r,i = (−(p_i − (1 − ε)) + 2λ (r_c,i + r_r,i) ) / N

Why recompute the loss here instead of calling `bradley_terry_loss` (reward/loss.py)? That function
is built for training: one scalar, in float32, differentiated by autograd. The explanation prints
every term of every pair and a line that works pair 1's loss out from its printed numbers, so it
needs the terms themselves, and float64 keeps their rounding far below the digits printed. The two
are the same function: tests/test_explain.py::test_gradients_equal_autograd_of_bradley_terry_loss
checks the explained ℓ_i, L and both gradients against `bradley_terry_loss` and `torch.autograd`.

The gradient says what training would do to each reward: a negative ∂L/∂r_c means a descent step
raises r_c. With ε = 0 and no centring, ∂L/∂r_c,i = −(1 − p_i)/N: confidently right pairs
(p ≈ 1) barely move, wrong ones move the most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# the per-pair output fields, in table order (margin_term / center_term only when used)
FIELDS = ("r_chosen", "r_rejected", "delta", "margin_term", "p_chosen", "center_term", "loss")
GRAD_FIELDS = ("grad_r_chosen", "grad_r_rejected")


@dataclass
class Explanation:
    """Every term of the loss for B pairs; all tensors (B,) float64."""

    r_chosen: torch.Tensor
    r_rejected: torch.Tensor
    delta: torch.Tensor  # r_c − r_r
    margin_term: torch.Tensor | None  # m, None when the pairs have no margin
    p_chosen: torch.Tensor  # σ(Δ − m)
    center_term: torch.Tensor | None  # λ (r_c + r_r)², None when λ is 0 / None
    loss: torch.Tensor  # ℓ_i, including center_term
    grad_r_chosen: torch.Tensor  # ∂L/∂r_c,i with L = mean loss
    grad_r_rejected: torch.Tensor  # ∂L/∂r_r,i
    center_rewards_coefficient: float
    label_smoothing: float

    @property
    def num_pairs(self) -> int:
        return self.r_chosen.numel()

    def totals(self) -> dict[str, float]:
        """Over all pairs: N, L (the mean loss), accuracy (ties wrong, as in training), Σ gradients."""
        return {
            "pairs": self.num_pairs,
            "loss": self.loss.mean().item(),
            "accuracy": (self.r_chosen > self.r_rejected).double().mean().item(),
            "grad_r_chosen_sum": self.grad_r_chosen.sum().item(),
            "grad_r_rejected_sum": self.grad_r_rejected.sum().item(),
        }

    def fields(self) -> list[str]:
        """The per-pair fields in use: margin_term / center_term only when they are part of the loss."""
        return [f for f in FIELDS + GRAD_FIELDS if getattr(self, f) is not None]

    def rows(self) -> list[dict[str, float]]:
        """One dict per pair with the fields above, as Python floats (for JSONL)."""
        names = self.fields()
        columns = [getattr(self, name).tolist() for name in names]
        return [dict(zip(names, values)) for values in zip(*columns)]


def explain_pairs(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float | None = None,
    label_smoothing: float = 0.0,
) -> Explanation:
    """Loss terms and gradients of the mean Bradley–Terry loss over these pairs (see the module doc).

    r_chosen, r_rejected, margin: (B,). Arguments mean what they mean to `bradley_terry_loss`.

    >>> e = explain_pairs(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    >>> [round(v, 4) for v in e.loss.tolist()]         # log(1 + e^-2), log(1 + e^1)
    [0.1269, 1.3133]
    >>> [round(v, 4) for v in e.grad_r_chosen.tolist()]  # (σ(Δ) − 1) / 2
    [-0.0596, -0.3655]
    """
    eps = float(label_smoothing or 0.0)
    lam = float(center_rewards_coefficient or 0.0)
    r_c = r_chosen.detach().double().cpu()  # (B,)
    r_r = r_rejected.detach().double().cpu()  # (B,)
    n = r_c.numel()
    delta = r_c - r_r  # (B,)
    m = margin.detach().double().cpu() if margin is not None else None  # (B,)
    z = delta - m if m is not None else delta  # (B,)
    # −(1 − ε) log σ(z) − ε log σ(−z), with logsigmoid so that |z| ≫ 1 cannot give log(0)
    loss = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)  # (B,)
    p = torch.sigmoid(z)  # (B,)
    dl_dz = p - (1 - eps)  # (B,) derivative of the pairwise term w.r.t. z
    center = lam * (r_c + r_r) ** 2 if lam else None  # (B,)
    d_center = 2 * lam * (r_c + r_r)  # (B,) the same for r_c and r_r: both enter as (r_c + r_r)
    if center is not None:
        loss = loss + center  # (B,)
    return Explanation(
        r_chosen=r_c,
        r_rejected=r_r,
        delta=delta,
        margin_term=m,
        p_chosen=p,
        center_term=center,
        loss=loss,
        grad_r_chosen=(dl_dz + d_center) / n,  # (B,)
        grad_r_rejected=(-dl_dz + d_center) / n,  # (B,)
        center_rewards_coefficient=lam,
        label_smoothing=eps,
    )


# --- the terminal table -----------------------------------------------------------------------------
def format_explanation(e: Explanation, max_rows: int = 20) -> str:
    """The formulas with this run's ε and λ, a table of the first `max_rows` pairs, the totals over
    all pairs, and pair 1's loss worked out from its printed numbers."""
    lines = [f"loss explained for N = {e.num_pairs} pairs:", *("  " + f for f in formulas(e))]
    names = e.fields()
    shown = min(max_rows, e.num_pairs)
    columns = {name: getattr(e, name)[:shown].tolist() for name in names}
    cells = [[str(i + 1) for i in range(shown)]] + [
        [f"{v:.4e}" if name in GRAD_FIELDS else f"{v:.4f}" for v in columns[name]] for name in names
    ]
    headers = ["pair", *names]
    widths = [max(len(h), *(len(c) for c in col)) if col else len(h) for h, col in zip(headers, cells)]
    lines.append("  " + "  ".join(h.rjust(w) for h, w in zip(headers, widths)))
    for i in range(shown):
        lines.append("  " + "  ".join(col[i].rjust(w) for col, w in zip(cells, widths)))
    if shown < e.num_pairs:
        lines.append(f"  ... {e.num_pairs - shown} more pairs not shown (--explain_rows); totals cover all")
    t = e.totals()
    lines.append(
        f"totals: N {t['pairs']} | L = mean loss {t['loss']:.6f} | accuracy {t['accuracy']:.4f} | "
        f"sum grad_r_chosen {t['grad_r_chosen_sum']:.4e} | sum grad_r_rejected {t['grad_r_rejected_sum']:.4e}"
    )
    if e.num_pairs:
        lines.append(hand_check(e, 0))
    return "\n".join(lines)


def formulas(e: Explanation) -> list[str]:
    """The loss and gradient formulas with ε, λ and the margin filled in (terms that are 0 left out)."""
    eps, lam = e.label_smoothing, e.center_rewards_coefficient
    z = "delta - margin_term" if e.margin_term is not None else "delta"
    minus_z = f"-({z})" if e.margin_term is not None else f"-{z}"
    target = f"{1 - eps:g}" if eps else "1"
    pair_term = f"-{1 - eps:g} * log(p_chosen) - {eps:g} * log(1 - p_chosen)" if eps else "-log(p_chosen)"
    center = f" + {lam:g} * (r_chosen + r_rejected)^2   [center_term]" if lam else ""
    grad_center = f" + 2 * {lam:g} * (r_chosen + r_rejected) / N" if lam else ""
    return [
        f"delta = r_chosen - r_rejected   p_chosen = sigmoid({z}) = 1 / (1 + exp({minus_z}))",
        f"loss = {pair_term}{center}   L = sum(loss) / N",
        f"grad_r_chosen = dL/dr_chosen = (p_chosen - {target}) / N{grad_center}",
        f"grad_r_rejected = dL/dr_rejected = -(p_chosen - {target}) / N{grad_center}",
    ]


def hand_check(e: Explanation, i: int) -> str:
    """Pair i's loss recomputed from its printed (rounded) numbers, as a reader would by hand."""
    eps, lam = e.label_smoothing, e.center_rewards_coefficient
    r_c, r_r = round(e.r_chosen[i].item(), 4), round(e.r_rejected[i].item(), 4)
    z = r_c - r_r - (round(e.margin_term[i].item(), 4) if e.margin_term is not None else 0.0)
    z_text = f"{r_c:.4f} - ({r_r:.4f})" + (f" - {e.margin_term[i].item():.4f}" if e.margin_term is not None else "")
    # stable log σ(z) for the worked number (z is a rounded reward gap, so it is never extreme in practice)
    log_p = -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))
    log_q = log_p - z  # log(1 − σ(z)) = log σ(z) − z
    value = -(1 - eps) * log_p - eps * log_q + lam * (r_c + r_r) ** 2
    steps = f"-{1 - eps:g} * ({log_p:.4f}) - {eps:g} * ({log_q:.4f})" if eps else f"-({log_p:.4f})"
    if lam:
        steps += f" + {lam:g} * ({r_c + r_r:.4f})^2"
    logs = f"log(p_chosen) = -log(1 + exp(-z)) = {log_p:.4f}; "
    if eps:
        logs += f"log(1 - p_chosen) = log(p_chosen) - z = {log_q:.4f}; "
    return f"check pair {i + 1} by hand: z = {z_text} = {z:.4f}; {logs}loss = {steps} = {value:.4f}"
