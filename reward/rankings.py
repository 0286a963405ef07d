"""Ranked rows (a prompt and K scored or ordered completions) as the comparisons they contain.

A ranking of K responses holds C(K, 2) comparisons. A tie (equal scores) is never a win: the data
stage skips and counts it (reward/data.py trains the rest as pairs); reward/ranking_loss.py can
instead train it toward ½. These functions are the one place that turns scores into comparisons.
"""

from __future__ import annotations

from datasets import Dataset

from reward.errors import UserError


def ranked_scores(row: dict) -> list[float]:
    """A ranked row's scores, higher is better (a `ranking`, best first, gives K−1, ..., 0)."""
    if row.get("scores") is not None:
        return [float(v) for v in row["scores"]]
    k = len(row["ranking"])
    scores = [0.0] * k
    for position, index in enumerate(row["ranking"]):
        scores[int(index)] = float(k - 1 - position)
    return scores


def ranked_comparisons(scores: list[float]) -> tuple[list[tuple[int, int, bool]], int]:
    """Every comparison (better, worse, tied) of one ranking, in index order, and how many are tied.

    >>> ranked_comparisons([3.0, 1.0, 2.0, 1.0])
    ([(0, 1, False), (0, 2, False), (0, 3, False), (2, 1, False), (1, 3, True), (2, 3, False)], 1)
    """
    out = []
    for i in range(len(scores)):
        for j in range(i + 1, len(scores)):
            better, worse = (i, j) if scores[i] >= scores[j] else (j, i)
            out.append((better, worse, scores[i] == scores[j]))
    return out, sum(tied for _, _, tied in out)


def expand_rankings(ds: Dataset | None, carried: list[str] = ()) -> tuple[Dataset | None, dict | None]:
    """Each ranked row as its C(K, 2) comparisons, the better response as `chosen`, ties skipped and
    counted; `carried` columns (the prompt, a subset) are copied onto each pair. Trained with every
    comparison weighted alike, this is exactly all-pairs Bradley–Terry (reward/ranking_loss.py
    `all_pairs_loss`, "comparison"; tests/test_rankings_data.py checks it)."""
    if ds is None:
        return None, None
    pairs, ks, ties = [], [], 0
    for index, row in enumerate(ds):
        comparisons, tied = ranked_comparisons(ranked_scores(row))
        ks.append(len(row["completions"]))
        ties += tied
        texts = row["completions"]
        for better, worse, is_tie in comparisons:
            if not is_tie:
                pair = {"chosen": texts[better], "rejected": texts[worse], "ranking_id": index}
                pairs.append({**{c: row[c] for c in carried}, **pair})
    if not pairs:
        raise UserError(f"the {len(ds)} ranked row(s) have no comparison that is not a tie")
    stats = {"prompts": len(ds), "k": {k: ks.count(k) for k in sorted(set(ks))}, "pairs": len(pairs), "ties": ties}
    return Dataset.from_list(pairs), stats
