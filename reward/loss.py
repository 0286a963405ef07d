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
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # for the annotations only
    from datasets import Dataset

    from reward.collate import MicroBatch, PairMicroBatch


@dataclass
class LossOutput:
    """A loss and what its metrics are computed from, every number a tensor on the rewards' device: turning
    them into Python numbers waits on the GPU, so reward/metrics.py does it once per step, not per call."""

    loss: torch.Tensor  # scalar, float32, differentiable: Σ ℓ_i / N
    loss_sum: torch.Tensor  # scalar, detached: Σ ℓ_i over this call's pairs (the reported loss, before / pairs)
    num_pairs: int  # the pairs (comparisons) this call trained; from the shapes, so no sync
    delta: torch.Tensor  # (B',) detached r_c − r_r of the decided pairs: accuracy is mean(Δ > 0), margin mean(Δ)
    rewards: torch.Tensor  # (R,) detached: every reward the metrics are over (a pair's two)


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float | None = None,
    label_smoothing: float = 0.0,
    num_pairs_in_step: int | None = None,
    weight: torch.Tensor | None = None,
) -> LossOutput:
    """Pairwise loss of B pairs, and the tensors its metrics come from.

    r_chosen, r_rejected, margin, weight: (B,). `num_pairs_in_step` is N above (default: B, i.e. the mean).
    `weight` multiplies each pair's ℓ_i (scaled Bradley–Terry on a preference strength, docs/loss.md §10).

    Worked example (checked in tests/test_loss.py):

    >>> out = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))
    >>> round(out.loss.item(), 4)   # (−log σ(2) − log σ(−1)) / 2 = (0.1269 + 1.3133) / 2
    0.7201
    >>> out.delta   # Δ: accuracy mean(Δ > 0) = 0.5, margin mean(Δ) = 0.5 (reward/metrics.py)
    tensor([ 2., -1.])
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
        if weight is not None:
            per_pair = weight.to(dtype) * per_pair  # (B,)
        n = num_pairs_in_step if num_pairs_in_step is not None else r_c.numel()
        loss = per_pair.sum() / n
    return LossOutput(
        loss=loss,
        loss_sum=per_pair.detach().sum(),
        num_pairs=r_c.numel(),
        delta=delta.detach(),
        rewards=torch.cat([r_c, r_r]).detach(),  # (2B,)
    )


# --- the objective: what the loop asks of a loss ----------------------------------------------------
class Objective(Protocol):
    """The loss of one micro-batch from its rewards, and what counts in an optimizer step's divisor N. Pairs
    are `PairObjective` (below); rankings are reward/ranked/loss.py `RankingObjective`."""

    def row_units(self, rows: Dataset) -> list[int] | None:
        """What each training row adds to its step's N (None: 1 each, a pair). Read from the rows before any
        is collated, since a step's N counts every rank's rows (reward/batching.py `optimizer_steps`)."""
        ...

    def units(self, batch: MicroBatch) -> int:
        """What one micro-batch adds to N (when the step's N is not given)."""
        ...

    def __call__(self, rewards: torch.Tensor, batch: MicroBatch, units_in_step: int | None = None) -> LossOutput:
        """The loss of `batch` from its `rewards` (as `batch.rewards(model)` returns them), Σ / units_in_step."""
        ...


@dataclass(frozen=True)
class PairObjective:
    """The Bradley–Terry loss above for a micro-batch of pairs, whose rewards come stacked [all chosen;
    all rejected] (reward/collate.py) and which carries each pair's `margin` (B,), 0 where absent, and
    `weight` (B,), None when no pair has one."""

    center_rewards_coefficient: float | None = None
    label_smoothing: float = 0.0

    def row_units(self, rows: Dataset) -> None:
        return None  # a pair counts 1

    def units(self, batch: PairMicroBatch) -> int:
        return batch.margin.numel()  # its pairs

    def __call__(self, rewards: torch.Tensor, batch: PairMicroBatch, units_in_step: int | None = None) -> LossOutput:
        r_chosen, r_rejected = rewards.chunk(2)  # (B,), (B,)
        margin = batch.margin.to(rewards.device)  # (B,)
        weight = batch.weight.to(rewards.device) if batch.weight is not None else None  # (B,)
        return bradley_terry_loss(
            r_chosen, r_rejected, margin, self.center_rewards_coefficient, self.label_smoothing, units_in_step, weight
        )
