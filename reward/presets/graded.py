"""Generated tasks with graded labels (issue #31, item 5): pointwise ratings and preference strength, on the
default task's categories (reward/presets/synthetic.py).

The rule: **a response names three things; its rating is how many belong to the category the prompt
asks for** (0..3).

    prompt:      "Name three fruits, please."
    completion:  " I would go with mango, violin and pear."          score 2
    pair:        chosen 3 right, rejected 1 right                    strength 2

Why this task:
- It cannot be solved by length: every response names exactly three items in one of the same
  templates, and a right item is drawn from the asked category, a wrong one from another, with the
  asked category uniform: item lengths carry no signal (`length_correlation` measures it; a test
  holds |r| < 0.05).
- It cannot be solved from one side without the prompt: every item is right as often as it is wrong.
- The grades are spread evenly: ratings uniform over 0..3; a strength-s pair for s = 1, 2, 3 equally often.
- It is deterministic: the same seed and size give the same rows (only Python's `random.Random`).
"""

from __future__ import annotations

import random

from reward.presets.synthetic import CATEGORIES

PROMPTS = [
    "Name three {cats}, please.",
    "Could you list three {cats}?",
    "Give me three examples of a {cat}.",
    "I need three {cats} for a quiz. Which would you pick?",
]
LISTS = [
    " {a}, {b} and {c}.",
    " I would go with {a}, {b} and {c}.",
    " Sure: {a}, {b}, {c}.",
    " Three that come to mind are {a}, {b} and {c}, in no particular order.",
]


def plural(cat: str) -> str:
    """The category's plural, as the prompts say it.

    >>> plural("fruit"), plural("country")
    ('fruits', 'countries')
    """
    return cat[:-1] + "ies" if cat.endswith("y") else cat + "s"


def prompt_for(rng: random.Random, asked: str) -> str:
    return rng.choice(PROMPTS).format(cat=asked, cats=plural(asked))


def response(rng: random.Random, asked: str, right: int) -> str:
    """Three items, `right` of them from the asked category, the rest each from another one, in random order."""
    others = [c for c in sorted(CATEGORIES) if c != asked]
    items = rng.sample(CATEGORIES[asked], right) + [
        rng.choice(CATEGORIES[rng.choice(others)]) for _ in range(3 - right)
    ]
    rng.shuffle(items)
    return rng.choice(LISTS).format(a=items[0], b=items[1], c=items[2])


def generate_ratings(num_prompts: int = 1000, completions: int = 4, seed: int = 0) -> list[dict]:
    """Pointwise rows {"prompt", "completion", "score"}: `completions` per prompt, each rated 0..3 uniformly.
    A prompt's rows are adjacent, as rated datasets list them: training packs each run of rows with one
    prompt as one segment (reward/labels/rated.py `group_ratings`).

    >>> rows = generate_ratings(2, completions=2, seed=0)
    >>> rows[0]["prompt"], [r["score"] for r in rows]
    ('I need three tools for a quiz. Which would you pick?', [0, 1, 2, 3])
    """
    rng = random.Random(seed)
    rows = []
    for _ in range(num_prompts):
        asked = rng.choice(sorted(CATEGORIES))
        prompt = prompt_for(rng, asked)
        for _ in range(completions):
            score = rng.randint(0, 3)
            rows.append({"prompt": prompt, "completion": response(rng, asked, score), "score": score})
    return rows


def generate_strength_pairs(num_pairs: int = 3000, seed: int = 0) -> list[dict]:
    """Pair rows {"prompt", "chosen", "rejected", "strength"}: chosen names `strength` more right items than
    rejected (strength 1, 2, 3 equally often)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_pairs):
        asked = rng.choice(sorted(CATEGORIES))
        strength = rng.randint(1, 3)
        worse = rng.randint(0, 3 - strength)
        rows.append(
            {
                "prompt": prompt_for(rng, asked),
                "chosen": response(rng, asked, worse + strength),
                "rejected": response(rng, asked, worse),
                "strength": strength,
            }
        )
    return rows


def length_correlation(rows: list[dict]) -> float:
    """Pearson's r between a rated completion's character length and its score (near 0: length says nothing)."""
    from reward.labels.metrics import pearson

    return pearson([float(len(r["completion"])) for r in rows], [float(r["score"]) for r in rows]) or 0.0
