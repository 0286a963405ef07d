r"""Losses for labels other than "A beats B": pointwise ratings, preference strength, several attributes.

Each is a pure function in reward/loss.py's style: float32 whatever the autocast, a sum of per-item
terms divided once by N, the items of the *optimizer step*, so that k accumulated micro-batches give
exactly the gradient of one batch of their union (docs/loss.md §7), and a `LossOutput` for the metrics.

**Regression on ratings** (NeMo-Aligner's regression reward model; HelpSteer2's 0–4 helpfulness). A
completion y_i rated s_i; with the ratings standardised by the training set's mean μ and std σ
(μ = 0, σ = 1: the raw scale):

    t_i = (s_i − μ) / σ          ℓ_i = (r_i − t_i)²          L = Σ_i ℓ_i / N     N = rated completions

The reward then estimates the standardised rating, and (r − 0)·σ + μ maps it back. ∂L/∂r_i = 2 (r_i − t_i) / N.

**Ratings plus the pairs they imply** (NeMo's combination): two completions of one prompt rated
s_i > s_j are also a Bradley–Terry pair, so

    L = [ Σ_i ℓ_i  +  β · Σ_(i,j) −log σ(r_i − r_j) ] / N        N = rated completions in the step

with β = `pair_weight` (0: regression only). One count divides both terms: it is what the loop counts
per row (a prompt's completions), so k accumulated micro-batches still give exactly the gradient of
their union; β is then the weight of the implied pairs per rated completion (a prompt of K completions
with distinct ratings implies K(K − 1)/2 pairs: for K = 4, six pair terms beside four squared errors).

**Scaled Bradley–Terry on preference strength** (HelpSteer3-Preference's −3..3, INF-ORM's magnitudes):
the pair's loss is multiplied by a weight w(strength) from a stated table (`STRENGTH_WEIGHTS`, e.g.
|strength| 1, 2, 3 → 1, 2, 3):

    ℓ_i = w_i · [−log σ(Δ_i − m_i)]            L = Σ_i ℓ_i / N        N = pairs in the step

N stays the number of pairs, not Σ w: then the weights scale each pair's gradient, ∂L/∂r_c,i =
−w_i (1 − σ(z_i)) / N, and accumulation is exact as for plain pairs (a step's N is known before any
forward; Σ w would be too, but it would make one strong pair's weight depend on the others' in its
step). The alternative reading is TRL's margin column: m_i = strength_i, the pair must be won *by*
the strength, ∂L/∂r_c,i = −(1 − σ(Δ_i − m_i)) / N. docs/loss.md §10 compares them.

**Several attributes** (HelpSteer's helpfulness, correctness, coherence, ...; ArmoRM's objectives): a
head of A outputs r_i ∈ R^A, targets t_i ∈ R^A with a mask o_i ∈ {0, 1}^A of the attributes rated:

    L = Σ_i Σ_a o_ia (r_ia − t_ia)² / N_o      N_o = observed (completion, attribute) cells in the step

and the single reward is the stated combination R_i = Σ_a c_a r_ia (`combined_reward`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow.compute as pc  # datasets' own storage layer
import torch
import torch.nn.functional as F

from reward.loss import LossOutput

if TYPE_CHECKING:  # for the annotations only
    from datasets import Dataset

    from reward.ranked.collate import RankedBatch

# |strength| -> weight (HelpSteer3-Preference: 1 slightly, 2 better, 3 much better; 0 a tie, not trained)
STRENGTH_WEIGHTS = {1: 1.0, 2: 2.0, 3: 3.0}


def fp32(*tensors: torch.Tensor) -> list[torch.Tensor]:
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)  # bf16/fp16 -> fp32; fp64 stays
    return [t.to(dtype) for t in tensors]


def regression_loss(
    rewards: torch.Tensor,
    scores: torch.Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    num_in_step: int | None = None,
) -> LossOutput:
    """Squared error between each reward and its standardised rating; rewards, scores: (B,).

    Worked example (tests/test_label_losses.py): ratings 3 and 1 with μ = 2, σ = 1 are targets 1 and −1:

    >>> out = regression_loss(torch.tensor([0.5, -1.0]), torch.tensor([3.0, 1.0]), mean=2.0, std=1.0)
    >>> round(out.loss.item(), 4)   # ((0.5 − 1)² + (−1 + 1)²) / 2
    0.125
    """
    with torch.autocast(device_type=rewards.device.type, enabled=False):
        r, s = fp32(rewards, scores)  # (B,), (B,)
        target = (s - mean) / std  # (B,)
        per_item = (r - target) ** 2  # (B,)
        n = num_in_step if num_in_step is not None else r.numel()
        loss = per_item.sum() / n
    return LossOutput(loss, per_item.detach().sum(), r.numel(), (r - target).detach(), r.detach())


def implied_pairs(scores: list[list[float]]) -> tuple[list[int], list[int]]:
    """(better, worse) indices into the flattened completions of every pair one prompt's ratings imply
    (s_i > s_j; equal ratings imply nothing).

    >>> implied_pairs([[3.0, 1.0, 3.0], [2.0]])
    ([0, 2], [1, 1])
    """
    better, worse, offset = [], [], 0
    for group in scores:
        for i, s_i in enumerate(group):
            for j, s_j in enumerate(group):
                if s_i > s_j:
                    better.append(offset + i)
                    worse.append(offset + j)
        offset += len(group)
    return better, worse


def regression_with_pairs_loss(
    rewards: torch.Tensor,
    scores: torch.Tensor,
    better: torch.Tensor,
    worse: torch.Tensor,
    pair_weight: float,
    mean: float = 0.0,
    std: float = 1.0,
    num_in_step: int | None = None,
) -> LossOutput:
    """NeMo's combination: the regression loss plus `pair_weight` × the Bradley–Terry loss of the pairs the
    ratings imply within each prompt, both summed and divided by the one count N. rewards, scores: (B,);
    better, worse: (M,) indices into them (`implied_pairs`). The output's Δ is the implied pairs' r_better −
    r_worse, whatever the weight: the accuracy it gives is the pairwise view of the ratings.

    >>> out = regression_with_pairs_loss(torch.tensor([1.0, -1.0]), torch.tensor([3.0, 1.0]),
    ...                                  torch.tensor([0]), torch.tensor([1]), 1.0, mean=2.0)
    >>> round(out.loss.item(), 4)   # (regression 0 (on target) + 1 × −log σ(1 − (−1))) / 2 = 0.1269 / 2
    0.0635
    """
    with torch.autocast(device_type=rewards.device.type, enabled=False):
        r, s = fp32(rewards, scores)  # (B,), (B,)
        per_item = (r - (s - mean) / std) ** 2  # (B,)
        delta = r[better.to(r.device)] - r[worse.to(r.device)]  # (M,)
        total = per_item.sum()
        if pair_weight:
            total = total + pair_weight * (-F.logsigmoid(delta)).sum()
        n = num_in_step if num_in_step is not None else r.numel()
        loss = total / n
    return LossOutput(loss, total.detach(), r.numel(), delta.detach(), r.detach())


def strength_weights(strength: torch.Tensor, table: dict[int, float] | None = None) -> torch.Tensor:
    """(B,) the weight of each pair from its |strength| and the table (default STRENGTH_WEIGHTS); a strength
    missing from the table is an error, not a silent weight.

    >>> strength_weights(torch.tensor([1, -3, 2]))
    tensor([1., 3., 2.])
    """
    table = STRENGTH_WEIGHTS if table is None else table
    levels = [int(v) for v in strength.abs().round().tolist()]
    if missing := sorted({level for level in levels if level not in table}):
        raise ValueError(f"no weight for strength {missing} (the table has {sorted(table)})")
    return torch.tensor([table[level] for level in levels], dtype=torch.float32, device=strength.device)


def scaled_bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    weight: torch.Tensor,
    margin: torch.Tensor | None = None,
    num_pairs_in_step: int | None = None,
) -> LossOutput:
    """Σ_i w_i · −log σ(Δ_i − m_i) / N over B pairs; all arguments (B,).

    >>> out = scaled_bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([3.0, 1.0]))
    >>> round(out.loss.item(), 4)   # (3 × 0.1269 + 1 × 1.3133) / 2
    0.847
    """
    with torch.autocast(device_type=r_chosen.device.type, enabled=False):
        r_c, r_r, w = fp32(r_chosen, r_rejected, weight)  # (B,) each
        delta = r_c - r_r  # (B,)
        z = delta if margin is None else delta - margin.to(delta.dtype)  # (B,)
        per_pair = -F.logsigmoid(z)  # (B,)
        n = num_pairs_in_step if num_pairs_in_step is not None else r_c.numel()
        loss = (w * per_pair).sum() / n
    return LossOutput(loss, (w * per_pair).detach().sum(), r_c.numel(), delta.detach(), torch.cat([r_c, r_r]).detach())


def attribute_regression_loss(
    rewards: torch.Tensor, targets: torch.Tensor, observed: torch.Tensor, num_observed_in_step: int | None = None
) -> LossOutput:
    """Masked squared error over the attributes each completion was rated on; rewards, targets, observed:
    (B, A), `observed` 1 where a rating exists (a missing one is skipped, never read as 0).

    >>> r = torch.tensor([[1.0, 0.0], [2.0, 5.0]]); t = torch.tensor([[0.0, 9.0], [2.0, 3.0]])
    >>> round(attribute_regression_loss(r, t, torch.tensor([[1, 0], [1, 1]])).loss.item(), 4)  # (1 + 0 + 4) / 3
    1.6667
    """
    with torch.autocast(device_type=rewards.device.type, enabled=False):
        r, t = fp32(rewards, targets)  # (B, A), (B, A)
        o = observed.to(r.dtype)  # (B, A)
        per_cell = o * (r - torch.where(o.bool(), t, r)) ** 2  # (B, A): an unobserved target is never read
        n = num_observed_in_step if num_observed_in_step is not None else int(o.sum().item())
        loss = per_cell.sum() / max(n, 1)
    return LossOutput(loss, per_cell.detach().sum(), int(o.sum().item()), (r - t).detach()[o.bool()], r.detach())


def combined_reward(rewards: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """(B,) the single reward R = Σ_a c_a r_a of an A-output head, c = `weights` (saved with the model).

    >>> combined_reward(torch.tensor([[1.0, 2.0], [0.0, -1.0]]), [0.5, 0.25])
    tensor([ 1.0000, -0.2500])
    """
    c = torch.tensor(weights, dtype=rewards.dtype, device=rewards.device)  # (A,)
    if c.numel() != rewards.shape[-1]:
        raise ValueError(f"{c.numel()} combination weights for {rewards.shape[-1]} attributes")
    return rewards @ c  # (B,)


# --- the objective: what the loop asks of a loss (reward/loss.py `Objective`) ------------------------
@dataclass(frozen=True)
class RegressionObjective:
    """Regression on ratings (+ β × the pairs they imply) for micro-batches of prompts, each with its rated
    completions (reward/labels/rated.py rows, collated by reward/ranked/collate.py: `batch.scores` (S,),
    `batch.comparisons` the implied pairs). A step's N is its rated completions, on every rank."""

    mean: float = 0.0
    std: float = 1.0
    pair_weight: float = 0.0

    def row_units(self, rows: Dataset) -> list[int]:
        """A prompt's rated completions, from its Arrow list length."""
        table = rows.select_columns(["scores"]).with_format("arrow")[:]
        return pc.list_value_length(table["scores"]).to_pylist()

    def units(self, batch: RankedBatch) -> int:
        return batch.scores.numel()

    def __call__(self, rewards: torch.Tensor, batch: RankedBatch, units_in_step: int | None = None) -> LossOutput:
        """rewards: (S,), every completion of the batch's prompts, prompt by prompt (`RankedBatch.rewards`)."""
        pairs = batch.comparisons
        scores = batch.scores.to(rewards.device)  # (S,)
        options = (self.pair_weight, self.mean, self.std, units_in_step)
        return regression_with_pairs_loss(rewards, scores, pairs.better, pairs.worse, *options)
