"""What a reward model trained on ratings or strengths is measured by (issue #31, item 4): pure functions
over rewards and labels, so training's evaluation, score.py and the model card can report the same numbers.

- Ratings: RMSE against the (standardised) rating, Pearson's r and Spearman's ρ between reward and rating,
  and the accuracy on the pairs the ratings imply within each prompt (the pairwise view of a pointwise
  model; equal ratings imply no pair).
- Strength: accuracy per strength bucket. A reward model that learned the label gets the strong
  preferences (|strength| 3) right nearly always and the slight ones less often; one that did not is flat.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from reward.labels.loss import implied_pairs


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; None when either side is constant (no linear relation to measure).

    >>> pearson([1, 2, 3], [2, 4, 7])
    0.9933992677987828
    """
    n = len(x)
    if n < 2:
        return None
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return None if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (what Spearman's ρ needs).

    >>> ranks([10, 30, 20, 30])
    [1.0, 3.5, 2.0, 3.5]
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            out[i] = (start + end) / 2 + 1
        start = end + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's ρ: Pearson's r of the ranks (ties averaged).

    >>> spearman([1, 2, 3, 4], [1, 4, 9, 16])   # monotone: 1 whatever the curve
    1.0
    """
    return pearson(ranks(x), ranks(y))


def rating_metrics(
    rewards: list[float], scores: list[float], groups: list[int], mean: float = 0.0, std: float = 1.0
) -> dict[str, float | int | None]:
    """RMSE on the rating scale (reward × std + mean against the score: the regression trained the reward
    toward (score − mean) / std), Pearson, Spearman, and the accuracy over the pairs the ratings imply inside
    each prompt (`groups`: completions per prompt, in order).

    >>> m = rating_metrics([0.9, -1.2, 0.1], [3.0, 1.0, 2.0], groups=[2, 1], mean=2.0)
    >>> round(m["rmse"], 4), m["pearson"] > 0.9, m["spearman"], m["implied_pairs"], m["implied_pair_accuracy"]
    (0.1414, True, 1.0, 1, 1.0)
    """
    targets = [(s - mean) / std for s in scores]
    rmse = std * math.sqrt(sum((r - t) ** 2 for r, t in zip(rewards, targets)) / max(len(rewards), 1))
    nested, at = [], 0
    for k in groups:
        nested.append(scores[at : at + k])
        at += k
    better, worse = implied_pairs(nested)
    right = sum(rewards[b] > rewards[w] for b, w in zip(better, worse))
    return {
        "rated": len(rewards),
        "rmse": rmse,
        "pearson": pearson(rewards, scores),
        "spearman": spearman(rewards, scores),
        "implied_pairs": len(better),
        "implied_pair_accuracy": right / len(better) if better else None,
    }


def accuracy_by_strength(delta: list[float], strength: list[float]) -> dict[int, dict[str, float | int]]:
    """{|strength| bucket: {"pairs", "accuracy"}} over pairs whose Δ = r_chosen − r_rejected is given; a pair
    is right when Δ > 0 (a tie in the rewards counts as wrong, as the pair accuracy does).

    >>> accuracy_by_strength([1.0, -0.5, 2.0, 0.0], [3, 1, -3, 1])
    {1: {'pairs': 2, 'accuracy': 0.0}, 3: {'pairs': 2, 'accuracy': 1.0}}
    """
    buckets: dict[int, list[bool]] = {}
    for d, s in zip(delta, strength):
        buckets.setdefault(int(round(abs(s))), []).append(d > 0)
    return {level: {"pairs": len(hits), "accuracy": sum(hits) / len(hits)} for level, hits in sorted(buckets.items())}
