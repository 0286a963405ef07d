"""Ranked rows (a prompt and K scored or ordered completions) as the comparisons they contain.

A ranking of K responses holds C(K, 2) comparisons. A tie (equal scores) is never a win: the data
stage skips and counts it; with --tie_handling half it is kept and reward/ranked/loss.py trains it
toward ½. These functions are the one place that turns scores into comparisons: rankings are expanded
into pairs (so formatting, tokenization and every drop are the pair path's), and for grouped training
(reward/ranked/collate.py) the surviving pairs are grouped back into one row per prompt.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import replace

import torch
from datasets import Dataset

from reward.data import MAX_RANKED_COMPLETIONS, PreferenceData, detect_format, subset_column
from reward.errors import UserError

# what each expanded pair carries about its ranking, so evaluation can put the ranking back together
RANKING_COLUMNS = ("ranking_id", "chosen_index", "rejected_index", "chosen_score", "rejected_score")
GROUPED = "completion_ids"  # the column of a prompt grouped with its responses (`group_rankings`)


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


def expand_rankings(
    ds: Dataset | None, carried: list[str] = (), ties: str = "skip"
) -> tuple[Dataset | None, dict | None]:
    """Each ranked row as its C(K, 2) comparisons, the better response as `chosen`; ties skipped and
    counted, or (ties="half") kept with `tied` True, the lower index as `chosen`; `carried` columns (the
    prompt, a subset) are copied onto each pair. Trained with every comparison weighted alike, this is
    exactly all-pairs Bradley–Terry (reward/ranked/loss.py `all_pairs_loss`, "comparison";
    tests/test_rankings_data.py checks it). No pairs (None) when every comparison is a tie."""
    if ds is None:
        return None, None
    pairs, ks, tie_count = [], [], 0
    for index, row in enumerate(ds):
        scores = ranked_scores(row)
        comparisons, tied = ranked_comparisons(scores)
        ks.append(len(row["completions"]))
        tie_count += tied
        texts = row["completions"]
        for better, worse, is_tie in comparisons:
            if not is_tie or ties == "half":
                pair = {"chosen": texts[better], "rejected": texts[worse], "ranking_id": index}
                pair |= {"chosen_index": better, "rejected_index": worse}
                pair |= {"chosen_score": scores[better], "rejected_score": scores[worse], "tied": is_tie}
                pairs.append({**{c: row[c] for c in carried}, **pair})
    stats = {"prompts": len(ds), "k": {k: ks.count(k) for k in sorted(set(ks))}, "pairs": len(pairs)}
    stats |= {"ties": tie_count, "ties_trained": ties == "half"}
    if not any(not p["tied"] for p in pairs):  # every comparison a tie: nothing decided (the caller says what now)
        return None, stats
    return Dataset.from_list(pairs), stats


def expand_preferences(data: PreferenceData, ties: str = "skip", evaluation: bool = False) -> PreferenceData:
    """Ranked rows (reward/data.py's RANKED format) as the pairs the pair path trains: every comparison,
    ties skipped and counted (ties="half": the training split keeps them; the held-out one never does).
    The pairs carry their RANKING_COLUMNS and `tied` through tokenizing, for grouping and evaluation.

    Rows whose scores tie within every row decide nothing: training rows (or, with `evaluation`, an
    evaluation set handed over as rows) are refused, naming the file and split; a held-out split of them
    is dropped with a warning, and the run trains without evaluation."""
    train = data.train
    carried = [c for c in ("prompt", subset_column(train.column_names)) if c in train.column_names]
    (pairs, stats), (test, test_stats) = expand_rankings(train, carried, ties), expand_rankings(data.test, carried)
    split = "the evaluation set" if evaluation else "train"
    if pairs is None:
        raise UserError(
            f"{data.source} [{split}]: every comparison in its {len(train)} ranked row(s) is a tie (equal scores "
            f"within each row): nothing to {'evaluate' if evaluation else 'train'} on"
        )
    if data.test is not None and len(data.test) and test is None:
        held = "held out (--eval_split_size)" if data.held_out else "the test split"
        print(
            f"WARNING: {data.source} [{held}]: every comparison in its {len(data.test)} ranked row(s) is a tie, "
            "so there is nothing to evaluate: training without evaluation",
            file=sys.stderr,
        )
    return replace(
        data,
        train=pairs,
        test=test,
        format=detect_format(pairs.column_names, pairs[0], data.source),
        has_margin=False,  # a ranking has no margin per comparison
        rankings={"train": stats, "test": test_stats},
        carried=(*RANKING_COLUMNS, "tied"),
    )


def describe_rankings(rankings: dict) -> str:
    """The start-up line under the data line: the prompts, their K, and the comparisons made of them."""
    r = rankings["train"]
    ks = ", ".join(f"K={k}: {n}" for k, n in r["k"].items())
    ties = f"{r['ties']} ties {'trained toward 1/2' if r['ties_trained'] else 'skipped'}"
    line = f"rankings: {r['prompts']} prompts ({ks}) -> {r['pairs']} comparisons, {ties}"
    if t := rankings.get("test"):  # held out: ties are never evaluated, only counted
        line += f" | held-out {t['prompts']} prompts -> {t['pairs']} comparisons, {t['ties']} ties skipped"
        line += "" if t["pairs"] else " (all ties: not evaluated)"
    return line + f" (at most K={MAX_RANKED_COMPLETIONS} per prompt)"


def group_rankings(pairs: Dataset) -> Dataset:
    """Tokenized expanded pairs (after every drop) back into one row per prompt: `completion_ids` (the
    responses that are in a kept pair, in index order), their `scores`, and the kept comparisons as
    `better` / `worse` / `tied` indices into them. A prompt so keeps exactly the comparisons the pair path
    would train, and each response's tokens are the ones its pairs had."""
    columns = ["ranking_id", "chosen_index", "rejected_index", "chosen_score", "rejected_score"]
    cols = pairs.select_columns([*columns, "chosen_ids", "rejected_ids", "tied"]).to_dict()
    prompts: dict[int, dict] = {}
    for i, rid in enumerate(cols["ranking_id"]):
        entry = prompts.setdefault(rid, {"ids": {}, "scores": {}, "comparisons": []})
        for side in ("chosen", "rejected"):
            entry["ids"][cols[f"{side}_index"][i]] = cols[f"{side}_ids"][i]
            entry["scores"][cols[f"{side}_index"][i]] = cols[f"{side}_score"][i]
        entry["comparisons"].append((cols["chosen_index"][i], cols["rejected_index"][i], cols["tied"][i]))
    rows = []
    for rid in sorted(prompts):
        entry = prompts[rid]
        local = {index: n for n, index in enumerate(sorted(entry["ids"]))}  # completion index -> position
        better, worse, tied = zip(*entry["comparisons"])
        rows.append(
            {
                "ranking_id": rid,
                "completion_ids": [entry["ids"][i] for i in local],
                "scores": [entry["scores"][i] for i in local],
                "better": [local[i] for i in better],
                "worse": [local[i] for i in worse],
                "tied": list(tied),
            }
        )
    return Dataset.from_list(rows)


def ranking_metrics(r_chosen: torch.Tensor, r_rejected: torch.Tensor, pairs: list[tuple]) -> dict[str, float]:
    """Per-prompt metrics of ranked held-out data, from its expanded pairs' rewards: `pairs[i]` is pair i's
    RANKING_COLUMNS values. best_of_k_accuracy: the completion with the highest reward is a best-scored
    one; kendall_tau: Kendall's τ-b between rewards and scores, averaged over the prompts where both
    vary. A completion tied with every other one is in no pair, so it is not counted.

    >>> pairs = [(0, 0, 1, 2.0, 1.0), (0, 0, 2, 2.0, 0.0), (0, 1, 2, 1.0, 0.0)]
    >>> ranking_metrics(torch.tensor([3.0, 3.0, 1.0]), torch.tensor([1.0, 2.0, 2.0]), pairs)  # r = (3, 1, 2)
    {'ranked_prompts': 1, 'best_of_k_accuracy': 1.0, 'kendall_tau': 0.333333}
    """
    completions: dict[int, dict[int, tuple[float, float]]] = {}  # prompt -> completion -> (reward, score)
    for (prompt, ci, ri, cs, rs), rc, rr in zip(pairs, r_chosen.tolist(), r_rejected.tolist()):
        completions.setdefault(prompt, {})[ci] = (rc, cs)
        completions[prompt][ri] = (rr, rs)
    best, taus = 0, []
    for seen in completions.values():
        rewards, scores = zip(*seen.values())
        best += scores[max(range(len(rewards)), key=rewards.__getitem__)] == max(scores)
        if (tau := kendall_tau_b(rewards, scores)) is not None:
            taus.append(tau)
    return {
        "ranked_prompts": len(completions),
        "best_of_k_accuracy": best / max(len(completions), 1),
        "kendall_tau": round(sum(taus) / len(taus), 6) if taus else None,
    }


def held_out_ranking_metrics(r_chosen: torch.Tensor, r_rejected: torch.Tensor, pairs: Dataset) -> dict[str, float]:
    """`ranking_metrics` as evaluation's extra metrics (reward/evaluate.py `ExtraMetrics`): {} for pairs
    that did not come from rankings."""
    if "ranking_id" not in pairs.column_names:
        return {}
    return ranking_metrics(r_chosen, r_rejected, list(zip(*(pairs[c] for c in RANKING_COLUMNS))))


def pair_counts(x: Sequence[float], y: Sequence[float], chunk: int = 256) -> tuple[int, int, int, int, int]:
    """Over the n0 = K(K−1)/2 index pairs i < j: (n0, concordant, discordant, ties in x, ties in y).

    Counted from the signs of the differences, a chunk of rows of the K×K comparison at a time, so the
    memory is O(chunk·K) however large K is (score.py scores rows of thousands of completions; a list of
    their comparisons would not fit).

    >>> pair_counts((1.0, 2.0, 3.0, 3.0), (1.0, 1.0, 2.0, 3.0))
    (6, 4, 0, 1, 1)
    """
    xs, ys = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)  # (K,), (K,)
    k = len(xs)
    concordant = discordant = ties_x = ties_y = 0
    for start in range(0, k, chunk):
        rows = torch.arange(start, min(start + chunk, k))  # (c,)
        upper = torch.arange(k)[None, :] > rows[:, None]  # (c, K): j > i, each pair once
        dx, dy = xs[rows, None] - xs[None, :], ys[rows, None] - ys[None, :]  # (c, K), (c, K)
        agree = torch.sign(dx) * torch.sign(dy)  # (c, K) signs, not products: tiny differences stay non-zero
        concordant += int(((agree > 0) & upper).sum())
        discordant += int(((agree < 0) & upper).sum())
        ties_x += int(((dx == 0) & upper).sum())
        ties_y += int(((dy == 0) & upper).sum())
    return k * (k - 1) // 2, concordant, discordant, ties_x, ties_y


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ-b = (concordant − discordant) / √((n0 − ties_x)(n0 − ties_y)); None if x or y is constant.

    >>> kendall_tau_b((1.0, 2.0, 3.0), (10.0, 20.0, 30.0)), kendall_tau_b((1.0, 2.0, 3.0), (3.0, 2.0, 1.0))
    (1.0, -1.0)
    """
    n0, concordant, discordant, ties_x, ties_y = pair_counts(x, y)
    if n0 == ties_x or n0 == ties_y:
        return None
    return (concordant - discordant) / math.sqrt((n0 - ties_x) * (n0 - ties_y))


def ranking_summary(scores: list[list[float]], rewards: list[list[float]]) -> dict:
    """Scored rankings against a model's rewards: accuracy over every decided comparison (a reward tie is
    wrong), the tied comparisons apart, and Kendall's τ-b per prompt, averaged where both vary. With no
    decided comparison (every score ties) there is no accuracy: None, not 0.

    >>> ranking_summary([[3.0, 1.0, 2.0], [1.0, 1.0]], [[0.9, 0.1, 0.2], [0.3, 0.5]])
    {'comparisons': 3, 'comparison_accuracy': 1.0, 'ties': 1, 'kendall_tau': 1.0}
    >>> ranking_summary([[1.0, 1.0]], [[0.3, 0.5]])["comparison_accuracy"] is None
    True
    """
    right = decided = ties = 0
    taus = []
    for s, r in zip(scores, rewards):
        n0, concordant, discordant, ties_r, ties_s = pair_counts(r, s)
        decided, ties = decided + n0 - ties_s, ties + ties_s
        right += concordant  # a decided comparison the rewards order the same way, strictly
        if n0 != ties_r and n0 != ties_s:  # Kendall's τ-b, from the same counts
            taus.append((concordant - discordant) / math.sqrt((n0 - ties_r) * (n0 - ties_s)))
    return {
        "comparisons": decided,
        "comparison_accuracy": right / decided if decided else None,
        "ties": ties,
        "kendall_tau": round(sum(taus) / len(taus), 6) if taus else None,
    }
