"""Rows with ratings or strengths: which kind a file holds, every row checked with its row and field named,
and the one line that describes the labels (issue #31, item 1).

    rated       prompt?, completion, score            a rating of one completion (HelpSteer2's 0-4)
    attributes  prompt?, completion, scores {a: s}    a rating per attribute; a missing one is null
    strength    prompt?, chosen, rejected, strength   how much better chosen is (HelpSteer3's 1..3)

A file that could be read two ways is read one way and says so: a pair row with both `margin` and
`strength` uses `strength` (the margin column is TRL's reading of the same idea, docs/loss.md §10).
Row numbers are 1-based, as reward/data.py names them.
"""

from __future__ import annotations

import math
from collections import Counter

from reward.data import MAX_RANKED_COMPLETIONS, margin_value, text_problem

RATED, ATTRIBUTES, STRENGTH = "rated", "attributes", "strength"


def label_kind(columns: set[str]) -> tuple[str | None, str | None]:
    """(kind, a note when the columns could be read another way), or (None, None) for plain pairs/rankings.

    >>> label_kind({"prompt", "completion", "score"})
    ('rated', None)
    >>> label_kind({"prompt", "chosen", "rejected", "strength", "margin"})[1]
    "both 'strength' and 'margin': trained on 'strength' (a weight per pair); 'margin' is not used"
    >>> label_kind({"chosen", "rejected", "completion", "score"})
    (None, "both pair columns and rated ones: read as pairs (as score.py reads it); 'completion', 'score' not used")
    """
    rated = "completion" in columns and ("score" in columns or "scores" in columns)
    if {"chosen", "rejected"} <= columns:  # pair columns first, in training and score.py (reward/eval/inputs.py)
        notes = ["both 'strength' and 'margin': trained on 'strength' (a weight per pair); 'margin' is not used"]
        notes = notes if {"strength", "margin"} <= columns else []
        if rated:
            unused = ", ".join(f"'{c}'" for c in ("completion", "score", "scores") if c in columns)
            notes.append(f"both pair columns and rated ones: read as pairs (as score.py reads it); {unused} not used")
        return (STRENGTH if "strength" in columns else None), "; ".join(notes) or None
    if rated:
        return (ATTRIBUTES if "scores" in columns else RATED), None
    return None, None


def number(value: object) -> float | None:
    """A finite number (CSV cells arrive as text), else None."""
    return margin_value(value)


def rated_row_problem(row: dict, kind: str = RATED) -> str | None:
    """Why a rated (or per-attribute rated) row cannot be trained on, naming the field, or None."""
    completion = row.get("completion")
    chat = isinstance(completion, list)
    prompt = row.get("prompt")
    if prompt not in (None, "") and (problem := text_problem("prompt", prompt, chat, may_be_empty=True)):
        return problem
    answered = not chat and isinstance(prompt, str) and bool(prompt.strip())  # an empty answer to a prompt (TRL)
    if problem := text_problem("completion", completion, chat, may_be_empty=answered):
        return problem
    if kind == RATED:
        return (
            None
            if number(row.get("score")) is not None
            else f"field 'score' must be a finite number, got {row.get('score')!r}"
        )
    scores = row.get("scores")
    if not isinstance(scores, dict) or not scores:
        return f"field 'scores' must be an object of attribute -> rating, got {scores!r:.60}"
    for name, value in scores.items():
        if value is not None and number(value) is None:
            return f"field 'scores' attribute {name!r} must be a finite number or null, got {value!r}"
    if all(value is None for value in scores.values()):
        return "field 'scores' rates no attribute (all null)"
    return None


def strength_problem(row: dict) -> str | None:
    """Why a pair row's strength cannot be used: a finite number > 0 (chosen is the better one by the row's
    own naming, so a negative strength contradicts it; 0 is a tie, which is no preference to train)."""
    value = number(row.get("strength"))
    if value is None:
        return f"field 'strength' must be a finite number, got {row.get('strength')!r}"
    if value < 0:
        return f"field 'strength' is {value:g}: chosen is the better response by name; give |strength| or swap them"
    if value == 0:
        return "field 'strength' is 0: a tie is no preference (drop the row, or use rankings with ties)"
    return None


def label_row_problem(row: dict, kind: str) -> str | None:
    """Why a row of label `kind` cannot be used, naming the field: reward/data.py `validate`'s `problem`, which
    lists the bad rows with their line numbers (a strength row is checked by the pair rule first)."""
    return strength_problem(row) if kind == STRENGTH else rated_row_problem(row, kind)


def describe_scores(scores: list[float], name: str = "scores") -> str:
    """One line: the range, mean and spread, and how the labels are distributed (each level's share when
    there are at most 10 levels, else quartiles).

    >>> describe_scores([0, 1, 1, 3])
    'scores 0..3 (mean 1.25, std 1.09): 0 25 %, 1 50 %, 3 25 %'
    >>> describe_scores([float(i) for i in range(20)]).split(": ")[1]
    'quartiles 4.75, 9.5, 14.25'
    """
    if not scores:
        return f"{name}: none"
    n, mean = len(scores), sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / n)
    head = f"{name} {min(scores):g}..{max(scores):g} (mean {mean:.2f}, std {std:.2f})"
    levels = Counter(scores)
    if len(levels) <= 10:
        return (
            head
            + ": "
            + ", ".join(f"{level:g} {count / n:.0%}".replace("%", " %") for level, count in sorted(levels.items()))
        )
    ordered = sorted(scores)
    quartiles = [quantile(ordered, q) for q in (0.25, 0.5, 0.75)]
    return head + ": quartiles " + ", ".join(f"{q:g}" for q in quartiles)


def quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    at = q * (len(ordered) - 1)
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def group_by_prompt(rows: list[dict], max_group: int = MAX_RANKED_COMPLETIONS) -> list[list[int]]:
    """Indices of each run of adjacent rows with one prompt, in order: the completions training packs as
    one segment [P | C1' | ... ] (the prompt computed once) and whose ratings imply pairs; score.py
    groups the same way, so its implied-pair accuracy is training's. Runs, not every row of a prompt
    wherever it is: rated data lists a prompt's responses together (HelpSteer2), and a prompt that recurs
    across a file (a common instruction) would otherwise be one group of thousands. A row without a
    prompt is a group of one; a run longer than `max_group` is cut. A `group` column splits runs further
    (a run is then one prompt *and* one group value; it never joins two prompts): the held-out file a rated
    run writes names each row's group, so score.py re-forms the groups training evaluated even where two
    adjacent held-out groups have the same prompt text.

    >>> group_by_prompt([{"prompt": "a"}, {"prompt": "a"}, {"prompt": ""}, {"prompt": "b"}, {"prompt": "a"}])
    [[0, 1], [2], [3], [4]]
    >>> group_by_prompt([{"prompt": "a", "group": 0}, {"prompt": "a", "group": 1}, {"prompt": "b", "group": 1}])
    [[0], [1], [2]]
    """
    groups: list[list[int]] = []
    for i, row in enumerate(rows):
        last = groups[-1] if groups else None
        if row.get("prompt") and last and key_of(rows[last[0]]) == key_of(row) and len(last) < max_group:
            last.append(i)
        else:
            groups.append([i])
    return groups


def key_of(row: dict) -> tuple:
    """What `group_by_prompt` groups a row by: its prompt, and its `group` when the rows name one."""
    return (row.get("prompt"), row.get("group"))
