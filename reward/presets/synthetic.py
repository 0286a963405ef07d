"""The generated preference task behind `python train.py` with no arguments.

The rule a reward model has to learn: **the chosen response names something from the category the
prompt asks for; the rejected response names something from another category.**

    prompt:   "Could you name a fruit for me?"
    chosen:   " Happy to help: mango."
    rejected: " Sure. I would say violin, that one comes to mind first."

Why this task:
- It cannot be solved by looking at one side alone: every item word is chosen as often as it is
  rejected (the asked category is uniform, the wrong one uniform over the others), so word counts
  carry no signal. The model must relate the response to the prompt.
- It cannot be solved by length: chosen and rejected draw their wording independently from the same
  templates, and a pair whose two responses have the same character length is redrawn, so chosen is
  the longer one in half of the pairs (`length_stats` measures it; a test checks 50 % ± 5 %).
- It is deterministic: the same `seed` and `num_pairs` give the same rows on every machine
  (only Python's `random.Random` is used).
"""

from __future__ import annotations

import random

from datasets import Dataset

CATEGORIES: dict[str, list[str]] = {
    "fruit": ["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "kiwi"],
    "animal": ["tiger", "horse", "rabbit", "eagle", "dolphin", "wolf", "otter", "camel", "lion", "fox"],
    "color": ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"],
    "vehicle": ["car", "bus", "truck", "bicycle", "train", "tram", "scooter", "boat", "plane", "van"],
    "tool": ["hammer", "wrench", "saw", "drill", "chisel", "pliers", "shovel", "rake", "axe", "file"],
    "country": ["France", "Japan", "Brazil", "Kenya", "Canada", "Peru", "Norway", "India", "Chile", "Spain"],
    "instrument": ["violin", "piano", "flute", "drum", "guitar", "cello", "trumpet", "harp", "oboe", "banjo"],
    "sport": ["tennis", "soccer", "rugby", "golf", "hockey", "boxing", "rowing", "cricket", "judo", "polo"],
}

PROMPTS = [
    "Name a {cat}.",
    "Could you name a {cat} for me?",
    "Give me one {cat}, please.",
    "Tell me the name of any {cat}.",
    "I need an example of a {cat}. What would you pick?",
    "Quick question: what is a {cat}?",
]

# Response wording; `{item}` is the answer. Short and long forms on purpose, so length says nothing.
RESPONSES = [
    " {item}.",
    " Sure: {item}.",
    " Happy to help: {item}.",
    " How about {item}?",
    " One example is {item}.",
    " Sure. I would say {item}, that one comes to mind first.",
    " A good answer here would be {item}, I think.",
    " Let me think about it for a moment. My answer is {item}.",
    " {item} is the first one I can think of.",
    " Certainly! You could go with {item}, it is a common choice.",
]


def make_pair(rng: random.Random) -> dict[str, str]:
    """Draw one explicit-prompt preference pair (see the module docstring for the rule)."""
    cats = sorted(CATEGORIES)
    asked = rng.choice(cats)
    wrong = rng.choice([c for c in cats if c != asked])
    prompt = rng.choice(PROMPTS).format(cat=asked)
    chosen = rng.choice(RESPONSES).format(item=rng.choice(CATEGORIES[asked]))
    while True:  # redraw until lengths differ, so "longer wins" is exactly a coin flip
        rejected = rng.choice(RESPONSES).format(item=rng.choice(CATEGORIES[wrong]))
        if len(rejected) != len(chosen):
            break
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def generate_pairs(num_pairs: int = 3000, seed: int = 0) -> list[dict[str, str]]:
    """`num_pairs` rows of {"prompt", "chosen", "rejected"}; the same arguments give the same rows.

    >>> generate_pairs(1, seed=0)[0]["prompt"]
    'Tell me the name of any tool.'
    """
    rng = random.Random(seed)
    return [make_pair(rng) for _ in range(num_pairs)]


def length_stats(rows: list[dict[str, str]]) -> float:
    """Share of pairs whose chosen response is longer (in characters) than the rejected one."""
    return sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / max(len(rows), 1)


# --- long-prompt variant (for benchmarks) --------------------------------------------------------
# Real preference data has prompts several times longer than the responses (multi-turn histories,
# pasted documents) and a wide spread of lengths. This variant keeps the same rule but puts a
# conversation history in front of the final question; chosen and rejected share all of it.
FILLER = (
    "the a we it was about then there some very really just also when because which this that what "
    "time day idea plan list note story place house school music garden water light paper window "
    "friend family city river morning evening weekend question answer reason detail example"
).split()


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(FILLER) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def make_long_prompt_pair(rng: random.Random) -> dict[str, str]:
    """One pair whose prompt is a multi-turn history (log-normal length) ending in the category question."""
    pair = make_pair(rng)
    turns = min(int(rng.lognormvariate(0.4, 0.9)), 10)  # median 1 earlier exchange, long tail
    history = []
    for _ in range(turns):
        history.append("User: " + _sentence(rng, rng.randint(3, 10)))
        history.append("Assistant: " + " ".join(_sentence(rng, rng.randint(3, 12)) for _ in range(rng.randint(1, 2))))
    history.append("User: " + pair["prompt"])
    return {
        "prompt": "\n".join(history) + "\nAssistant:",
        "chosen": pair["chosen"] + _tail(rng),
        "rejected": pair["rejected"] + _tail(rng),
    }


def _tail(rng: random.Random) -> str:
    """Responses go on with 0-3 unrelated sentences: response lengths vary widely too."""
    return "".join(" " + _sentence(rng, rng.randint(2, 12)) for _ in range(rng.randint(0, 3)))


def generate_long_prompt_pairs(num_pairs: int = 3000, seed: int = 0) -> list[dict[str, str]]:
    """The long-prompt variant: same rule, a shared conversation history in front of each question."""
    rng = random.Random(seed)
    return [make_long_prompt_pair(rng) for _ in range(num_pairs)]


# --- ranked variant: K = 4 responses with a real total order (reward/ranked) ------------------------
# The prompt asks for three things of one category; each response names three things, of which
# 0, 1, 2 or 3 are from that category (the others from other categories), and its score is that
# count. So the four responses of a prompt are totally ordered, by a rule that needs the prompt:
# every item word appears as often in good as in bad responses, and all four use the same list
# templates drawn independently, so length says nothing (`ranked_length_correlation` measures it).
RANKED_PROMPTS = ["Name three {cat}s.", "Could you list three {cat}s?", "Give me three examples of a {cat}."]
LIST_TEMPLATES = [" {a}, {b} and {c}.", " Sure: {a}, {b}, {c}.", " I would say {a}, then {b}, and finally {c}."]


def make_ranking(rng: random.Random) -> dict:
    """One ranked row: a prompt, four completions in random order, and their scores (right items named)."""
    cats = sorted(CATEGORIES)
    asked = rng.choice(cats)
    completions, scores = [], []
    for right in rng.sample(range(4), 4):
        items = rng.sample(CATEGORIES[asked], right)
        items += [rng.choice(CATEGORIES[rng.choice([c for c in cats if c != asked])]) for _ in range(3 - right)]
        rng.shuffle(items)
        completions.append(rng.choice(LIST_TEMPLATES).format(a=items[0], b=items[1], c=items[2]))
        scores.append(right)
    return {"prompt": rng.choice(RANKED_PROMPTS).format(cat=asked), "completions": completions, "scores": scores}


def generate_rankings(num_prompts: int = 3000, seed: int = 0) -> list[dict]:
    """`num_prompts` ranked rows of {"prompt", "completions" (4), "scores" (a permutation of 0..3)}.

    >>> sorted(generate_rankings(1, seed=0)[0]["scores"])
    [0, 1, 2, 3]
    """
    rng = random.Random(seed)
    return [make_ranking(rng) for _ in range(num_prompts)]


def generate_long_rankings(num_prompts: int = 3000, seed: int = 0) -> list[dict]:
    """The ranked task behind a multi-turn history (as the long-prompt pairs), each completion going on
    with 0-3 unrelated sentences: the benchmark's long-prompt K = 4 data (benchmarks/vs_trl_ranked.py)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_prompts):
        row = make_ranking(rng)
        history = []
        for _ in range(min(int(rng.lognormvariate(0.4, 0.9)), 10)):
            history.append("User: " + _sentence(rng, rng.randint(3, 10)))
            history.append("Assistant: " + _sentence(rng, rng.randint(3, 12)))
        history.append("User: " + row["prompt"])
        row["prompt"] = "\n".join(history) + "\nAssistant:"
        row["completions"] = [c + _tail(rng) for c in row["completions"]]
        rows.append(row)
    return rows


def ranked_length_correlation(rows: list[dict]) -> float:
    """Pearson correlation of a completion's character length with its score, over all completions."""
    pairs = [(len(c), s) for row in rows for c, s in zip(row["completions"], row["scores"])]
    n = len(pairs)
    mx, my = sum(x for x, _ in pairs) / n, sum(y for _, y in pairs) / n
    cov = sum((x - mx) * (y - my) for x, y in pairs)
    vx, vy = sum((x - mx) ** 2 for x, _ in pairs), sum((y - my) ** 2 for _, y in pairs)
    return cov / (vx * vy) ** 0.5


def generate_strength_pairs(num_pairs: int = 3000, seed: int = 0) -> list[dict]:
    """Pairs with a `strength` (reward/presets/graded.py: how many more right items chosen names)."""
    from reward.presets import graded  # graded builds on this module's categories

    return graded.generate_strength_pairs(num_pairs, seed)


def generate_rated_rows(num_rows: int = 4000, seed: int = 0) -> list[dict]:
    """Rated completions, four per prompt, each rated 0..3 (reward/presets/graded.py `generate_ratings`)."""
    from reward.presets import graded  # graded builds on this module's categories

    return graded.generate_ratings(max(1, num_rows // 4), completions=4, seed=seed)


# the generated tasks by name (--dataset_name), each a function of the number of rows
GENERATED = {
    "synthetic": generate_pairs,  # the category task (the default run's)
    "synthetic-long": generate_long_prompt_pairs,  # the same behind a shared multi-turn history (benchmarks)
    "synthetic-ranked": generate_rankings,  # four totally ordered responses per prompt (reward/ranked)
    "synthetic-ranked-long": generate_long_rankings,  # the same behind long histories (the ranked benchmark)
    "synthetic-strength": generate_strength_pairs,  # pairs with how much better chosen is (reward/labels)
    "synthetic-ratings": generate_rated_rows,  # rated completions, trained by regression (reward/labels)
}


def synthetic_dataset(name: str, num_rows: int) -> Dataset | None:
    """The generated task `name` as a Dataset of `num_rows` rows (pairs, or ranked prompts), or None when
    `name` is not one: then it is a file, a folder or a Hub id (reward/data.py)."""
    if name not in GENERATED:
        return None
    return Dataset.from_list(GENERATED[name](num_rows))
