r"""Losses over rankings: K responses to one prompt, ordered by their scores (pairs are K = 2).

**All-pairs Bradley–Terry** (InstructGPT, Ouyang et al. 2022, §3.5: every one of a prompt's C(K, 2)
comparisons in one batch element). For a prompt with rewards r_1..r_K and scores s_1..s_K (higher is
better), each comparison (i, j) with s_i > s_j is a Bradley–Terry pair, exactly as in reward/loss.py:

    ℓ_ij = −(1 − ε) log σ(r_i − r_j) − ε log σ(r_j − r_i) + λ (r_i + r_j)²

A tie (s_i = s_j) is never turned into a win. By default it is skipped and counted; with
`ties="half"` it is trained as "each wins with probability ½", the cross-entropy against the soft
label ½, which is label smoothing at ε = ½ (the same algebra, so the same line of code):

    ℓ_ij^tie = −½ log σ(r_i − r_j) − ½ log σ(r_j − r_i) + λ (r_i + r_j)²,   minimised at r_i = r_j

Normalisation, selectable, both equal to reward/loss.py's mean over pairs when every K is 2:

    "comparison":  L = Σ_prompts Σ_(i,j) ℓ_ij / N        N = comparisons in the optimizer step
    "prompt":      L = Σ_prompts (1 / C_p) Σ_(i,j) ℓ_ij / P   C_p = the prompt's comparisons,
                                                              P = prompts in the optimizer step

"comparison" weights every comparison equally (our exact-accumulation rule: k micro-batches give the
gradient of their union); "prompt" is InstructGPT's 1 / C(K, 2) per prompt, so a prompt with many
responses does not outweigh one with few.

**Plackett–Luce** (Plackett 1975, Luce 1959): the likelihood of the whole order π (best first) as K − 1
successive choices, each of the best remaining response among those left:

    ℓ_PL = −Σ_{t=1}^{K−1} [ r_π(t) − log Σ_{u ≥ t} exp(r_π(u)) ]

With K = 2 this is −log σ(r_1 − r_2): the pair loss again. It needs a strict order (no ties). Its
"comparison" count is K − 1 per prompt (one choice per stage), its "prompt" weight 1 / (K − 1).

Gradients, for reference: all-pairs ∂ℓ_ij/∂r_i = σ(Δ_ij) − (1 − ε) = −∂ℓ_ij/∂r_j (ε = ½ for a tie);
Plackett–Luce ∂ℓ_PL/∂r_π(u) = Σ_{t ≤ u, t ≤ K−1} softmax_t(r)_u − [u ≤ K − 1], where softmax_t is over
the responses left at stage t. Both are checked against autograd in tests/test_ranking_loss.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow.compute as pc  # datasets' own storage layer
import torch
import torch.nn.functional as F
from datasets import Dataset

from reward.loss import LossOutput
from reward.ranked.rows import ranked_comparisons

if TYPE_CHECKING:  # for the annotations only
    from reward.ranked.collate import RankedBatch

NORMALIZATIONS = ("comparison", "prompt")
RANKING_LOSSES = ("bradley_terry", "plackett_luce")
TIE_HANDLING = ("skip", "half")


@dataclass
class Comparisons:
    """A micro-batch's comparisons, as indices into its flat reward vector (R,) = all responses of all
    its prompts, in order. Built once per batch from the scores (`all_comparisons`)."""

    better: torch.Tensor  # (M,) long: the response preferred (or, for a tie, the first of the two)
    worse: torch.Tensor  # (M,) long
    tied: torch.Tensor  # (M,) bool: trained toward ½ (ties="half")
    prompt: torch.Tensor  # (M,) long: the batch-local prompt each comparison belongs to
    per_prompt: torch.Tensor  # (P,) long: C_p, the comparisons kept per prompt
    ties_skipped: int  # tied comparisons left out (ties="skip")


def all_comparisons(scores: list[list[float]], ties: str = "skip") -> Comparisons:
    """Every comparison of every prompt. `scores[p]` are prompt p's K_p scores, higher is better; the
    responses are numbered consecutively across prompts, as the collator lays them out.

    >>> c = all_comparisons([[3.0, 1.0, 2.0], [0.5, 0.5]])
    >>> c.better.tolist(), c.worse.tolist(), c.per_prompt.tolist(), c.ties_skipped
    ([0, 0, 2], [1, 2, 1], [3, 0], 1)
    """
    if ties not in TIE_HANDLING:
        raise ValueError(f"ties must be one of {TIE_HANDLING}, got {ties!r}")
    better, worse, tied, prompt, per_prompt, skipped, offset = [], [], [], [], [], 0, 0
    for p, row in enumerate(scores):
        comparisons, ties_here = ranked_comparisons(row)  # the same comparisons the data stage expands
        kept = [c for c in comparisons if ties == "half" or not c[2]]
        better += [offset + b for b, _, _ in kept]
        worse += [offset + w for _, w, _ in kept]
        tied += [t for _, _, t in kept]
        prompt += [p] * len(kept)
        per_prompt.append(len(kept))
        skipped += ties_here if ties == "skip" else 0
        offset += len(row)
    return Comparisons(
        better=torch.tensor(better, dtype=torch.long),
        worse=torch.tensor(worse, dtype=torch.long),
        tied=torch.tensor(tied, dtype=torch.bool),
        prompt=torch.tensor(prompt, dtype=torch.long),
        per_prompt=torch.tensor(per_prompt, dtype=torch.long),
        ties_skipped=skipped,
    )


def all_pairs_loss(
    rewards: torch.Tensor,
    comparisons: Comparisons,
    normalization: str = "comparison",
    center_rewards_coefficient: float | None = None,
    label_smoothing: float = 0.0,
    units_in_step: int | None = None,
) -> LossOutput:
    """All-pairs Bradley–Terry over a micro-batch of prompts. rewards: (R,). `units_in_step` is N
    (comparisons) or P (prompts) of the whole optimizer step, per `normalization` (default: this call's).

    Worked example (tests/test_ranking_loss.py): scores [3, 1, 2], rewards [1, 0, 1] give the
    comparisons (0 ≻ 1, Δ = 1), (0 ≻ 2, Δ = 0), (2 ≻ 1, Δ = 1), so
    L = (2 · log(1 + e^−1) + log 2) / 3 = (2 · 0.313262 + 0.693147) / 3 = 0.439890.

    >>> c = all_comparisons([[3.0, 1.0, 2.0]])
    >>> round(all_pairs_loss(torch.tensor([1.0, 0.0, 1.0]), c).loss.item(), 6)
    0.43989
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    with torch.autocast(device_type=rewards.device.type, enabled=False):
        r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))  # (R,)
        device = r.device
        better, worse = comparisons.better.to(device), comparisons.worse.to(device)  # (M,)
        tied = comparisons.tied.to(device)  # (M,)
        z = r[better] - r[worse]  # (M,)
        eps = torch.where(tied, torch.full_like(z, 0.5), torch.full_like(z, label_smoothing))  # (M,)
        per_comparison = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)  # (M,)
        if center_rewards_coefficient:
            per_comparison = per_comparison + center_rewards_coefficient * (r[better] + r[worse]) ** 2  # (M,)
        if normalization == "prompt":
            counts = comparisons.per_prompt.to(device)  # (P,)
            weight = 1.0 / counts[comparisons.prompt.to(device)].to(r.dtype)  # (M,): 1 / C_p
            total = (per_comparison * weight).sum()
            n = units_in_step if units_in_step is not None else int((comparisons.per_prompt > 0).sum())  # host
        else:
            total = per_comparison.sum()
            n = units_in_step if units_in_step is not None else z.numel()
        loss = total / max(n, 1)
    # the reported loss is Σ ℓ_ij over comparisons whatever the weighting: a mean per comparison, like the
    # held-out loss of the same comparisons evaluated as pairs
    decided = (~comparisons.tied).nonzero().squeeze(1)  # (M',) on the host, where the collator built it
    return summarize(loss, per_comparison.sum(), r, z, decided)


def plackett_luce_loss(
    rewards: torch.Tensor,
    orders: list[torch.Tensor],
    normalization: str = "comparison",
    units_in_step: int | None = None,
) -> LossOutput:
    """Listwise Plackett–Luce over a micro-batch of prompts. rewards: (R,); `orders[p]` are prompt p's
    response indices into `rewards`, best first (a strict order). `units_in_step`: Σ (K_p − 1) or P.

    >>> round(plackett_luce_loss(torch.tensor([2.0, 0.0]), [torch.tensor([0, 1])]).loss.item(), 4)  # −log σ(2)
    0.1269
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    with torch.autocast(device_type=rewards.device.type, enabled=False):
        r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))  # (R,)
        per_prompt, deltas = [], []
        for order in orders:
            ranked = r[order.to(r.device)]  # (K,) best first
            # log Σ_{u ≥ t} exp(r_π(u)) for every stage t: a reversed cumulative logsumexp
            tails = torch.logcumsumexp(ranked.flip(0), dim=0).flip(0)  # (K,)
            stages = ranked[:-1] - tails[:-1]  # (K − 1,) log-probability of each choice
            per_prompt.append(-stages.sum())
            deltas.append(ranked[:-1] - ranked[1:])  # (K − 1,) neighbours' reward gaps, for the metrics
        raw = torch.stack(per_prompt)  # (P,) ℓ_PL per prompt
        choices = sum(len(o) - 1 for o in orders)
        if normalization == "comparison":
            total, n = raw.sum(), choices
        else:  # each prompt weighted 1 / (K − 1)
            total, n = (raw / torch.tensor([len(o) - 1 for o in orders], device=r.device)).sum(), len(orders)
        loss = total / max(units_in_step if units_in_step is not None else n, 1)
    z = torch.cat(deltas).detach()  # (Σ K − 1,)
    return summarize(loss, raw.sum(), r, z)  # a strict order: every choice is decided


def summarize(
    loss: torch.Tensor, reported: torch.Tensor, r: torch.Tensor, z: torch.Tensor, decided: torch.Tensor | None = None
) -> LossOutput:
    """The loss with what the pair metrics are computed from (reward/metrics.py): `num_pairs` is every
    comparison trained, ties included, `reported` the unweighted sum of their losses; accuracy and the mean
    margin are over the `decided` (untied) comparisons' Δ, picked by an index built on the host: a boolean
    mask on the GPU would wait for it to count the True entries."""
    delta = z.detach() if decided is None else z.detach().index_select(0, decided.to(z.device))  # (M',)
    return LossOutput(loss=loss, loss_sum=reported.detach(), num_pairs=z.numel(), delta=delta, rewards=r.detach())


@dataclass(frozen=True)
class RankingObjective:
    """The loss of a micro-batch of ranked prompts (reward/loss.py `Objective`): which ranking loss
    (--ranking_loss), how it is normalised (--ranking_normalization), and the pair options the all-pairs
    loss shares with reward/loss.py (centring, label smoothing)."""

    loss: str = "bradley_terry"  # all-pairs Bradley–Terry, or "plackett_luce"
    normalization: str = "comparison"
    center_rewards_coefficient: float | None = None
    label_smoothing: float = 0.0

    def units_per_prompt(self, num_comparisons: list[int], num_responses: list[int]) -> list[int]:
        """What each prompt adds to the optimizer step's divisor: its comparisons (Plackett–Luce: its K − 1
        choices), or 1 for "prompt"; summed over the step's prompts on every rank, that is N or P above."""
        if self.normalization == "prompt":
            return [1] * len(num_responses)
        return num_comparisons if self.loss == "bradley_terry" else [k - 1 for k in num_responses]

    def row_units(self, rows: Dataset) -> list[int]:
        """Per grouped prompt (reward/ranked/rows.py `group_rankings`), from its Arrow list lengths."""
        table = rows.select_columns(["better", "scores"]).with_format("arrow")[:]
        comparisons = pc.list_value_length(table["better"]).to_pylist()
        return self.units_per_prompt(comparisons, pc.list_value_length(table["scores"]).to_pylist())

    def units(self, batch: RankedBatch) -> int:
        per_prompt = batch.comparisons.per_prompt.tolist()
        return sum(self.units_per_prompt(per_prompt, [len(o) for o in batch.orders]))

    def __call__(self, rewards: torch.Tensor, batch: RankedBatch, units_in_step: int | None = None) -> LossOutput:
        """rewards: (S,), every response of the batch's prompts, prompt by prompt (`RankedBatch.rewards`)."""
        if self.loss == "plackett_luce":
            return plackett_luce_loss(rewards, batch.orders, self.normalization, units_in_step)
        return all_pairs_loss(
            rewards,
            batch.comparisons,
            self.normalization,
            self.center_rewards_coefficient,
            self.label_smoothing,
            units_in_step,
        )


ALL_PAIRS = RankingObjective()  # the default: all-pairs Bradley–Terry, every comparison weighted alike
