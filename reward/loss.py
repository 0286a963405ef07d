r"""The Bradley–Terry pairwise loss, as one pure function.

Bradley & Terry (1952) model the probability that response c is preferred to response r as

    P(c ≻ r) = σ(r_c − r_r),        σ(x) = 1 / (1 + e^(−x))

so maximum likelihood over preference pairs is logistic regression on Δ = r_c − r_r:

    z_i = Δ_i − m_i                                       (m_i = margin, 0 if absent; Llama 2)
    ℓ_i = −(1 − ε) log σ(z_i) − ε log σ(−z_i)             (ε = label_smoothing, 0 by default:
                                                          "chosen wins" with probability 1 − ε)
        + λ · (r_c,i + r_r,i)²                            (λ = center_rewards_coefficient;
                                                          Eisenstein et al. 2023, "Helping or herding?")
    L   = (1 / N) · Σ_i ℓ_i

With ε = 0 this is −log σ(Δ − m), TRL's loss. With ε > 0 it is the cross-entropy against a soft
label 1 − ε (conservative Bradley–Terry, as cDPO does for DPO): the loss no longer falls to 0 as
Δ → ∞ but is minimised at σ(z) = 1 − ε, so the model stops pushing rewards apart on noisy labels.

N is the number of pairs in the *optimizer step*, not in the micro-batch: summing per-pair terms and
dividing once by the step's pair count makes k accumulated micro-batches of b pairs (even when the
last one is smaller) give exactly the gradient of one batch of all their pairs.

`−log σ(x)` is computed with `logsigmoid`, which is stable for large |x| (log(sigmoid(x)) underflows
to log(0) = −inf for x ≲ −104 in fp32), and always in float32 (float64 stays float64) even inside a
bf16/fp16 autocast region.

Gradient, for reference (no centring): ∂L/∂r_c,i = (σ(z_i) − (1 − ε)) / N = −∂L/∂r_r,i,
which for ε = 0 is −(1 − σ(Δ_i)) / N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, float32, differentiable: Σ ℓ_i / N
    loss_sum: float  # Σ ℓ_i over this call's pairs (detached), for exact averages across calls
    num_pairs: int  # B, the pairs in this call
    accuracy: float  # mean(r_c > r_r); a tie counts as wrong
    margin: float  # mean(r_c − r_r)  (the reward gap, not the `margin` column)
    reward_mean: float  # over all 2B rewards
    reward_min: float
    reward_max: float
    num_rewards: int = 0  # rewards these metrics are over; 0 = 2B, a pair's two (rankings: every response)


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float | None = None,
    label_smoothing: float = 0.0,
    num_pairs_in_step: int | None = None,
) -> LossOutput:
    """Pairwise loss and metrics for B pairs.

    r_chosen, r_rejected, margin: (B,). `num_pairs_in_step` is N above (default: B, i.e. the mean).

    Worked example (checked in tests/test_loss.py):

    >>> out = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    >>> round(out.loss.item(), 4)   # (−log σ(2) − log σ(−1)) / 2 = (0.1269 + 1.3133) / 2
    0.7201
    >>> out.accuracy, out.margin
    (0.5, 0.5)
    """
    with torch.autocast(device_type=r_chosen.device.type, enabled=False):
        dtype = torch.promote_types(r_chosen.dtype, torch.float32)  # bf16/fp16 -> fp32; fp64 stays
        r_c = r_chosen.to(dtype)  # (B,)
        r_r = r_rejected.to(dtype)  # (B,)
        delta = r_c - r_r  # (B,)
        z = delta if margin is None else delta - margin.to(dtype)  # (B,)
        per_pair = -F.logsigmoid(z)  # (B,)
        if label_smoothing:
            per_pair = (1 - label_smoothing) * per_pair - label_smoothing * F.logsigmoid(-z)  # (B,)
        if center_rewards_coefficient:
            per_pair = per_pair + center_rewards_coefficient * (r_c + r_r) ** 2  # (B,)
        n = num_pairs_in_step if num_pairs_in_step is not None else r_c.numel()
        loss = per_pair.sum() / n
    with torch.no_grad():
        rewards = torch.cat([r_c, r_r])  # (2B,)
        return LossOutput(
            loss=loss,
            loss_sum=per_pair.sum().item(),
            num_pairs=r_c.numel(),
            accuracy=int((r_c > r_r).sum()) / r_c.numel(),
            margin=delta.mean().item(),
            reward_mean=rewards.mean().item(),
            reward_min=rewards.min().item(),
            reward_max=rewards.max().item(),
        )
