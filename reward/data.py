"""Load preference rows, detect their format, validate them, and split off a held-out set.

Sources (files, folders, the Hub, a Dataset passed in from Python; each file checked first): reward/sources.py.
The generated tasks (e.g. `synthetic`) are built by reward/presets/synthetic.py and passed in as a Dataset.

Formats (detected from the columns and the first row):

    explicit       {"prompt": str, "chosen": str, "rejected": str}
    implicit       {"chosen": str, "rejected": str}            (full texts, prompt included)
    conversational {"prompt"?: [msg], "chosen": [msg], "rejected": [msg]}  msg = {"role", "content"}
    ranked         {"prompt"?: str | [msg], "completions": [K texts or K message lists],
                    "scores": [K numbers, higher is better] | "ranking": [K indices, best first]}

Any pair format may carry a numeric `margin` column (how much better chosen is; Llama 2's margin loss).
Ranked rows are validated here and held out by whole prompts, so no prompt's comparisons land on both
sides; reward/ranked/rows.py turns them into the comparisons the pair path trains.

An optional part adds a format through `RowFormat` (the recipe passes it in): reward/labels/rated.py's
rated completions {"prompt"?, "completion", "score"} are recognised, checked row by row, and grouped (each
run of adjacent rows with one prompt) before the split, so they are held out by whole groups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict

from reward.errors import UserError
from reward.sources import jsonl_line_numbers, load_raw

EXPLICIT, IMPLICIT, CONVERSATIONAL, RANKED = "explicit prompt", "implicit prompt", "conversational", "ranked"
ROLES = {"system", "user", "assistant", "tool", "developer"}
SHOWN_BAD_ROWS = 5  # how many bad rows an error message lists
SUBSET_COLUMNS = ("subset", "category")  # the column naming each pair's subset, looked up in this order
# A ranking of K responses trains as its C(K, 2) comparisons, each a pair of texts (reward/ranked/rows.py):
# the work and memory per row grow as K², so training takes at most this many (8,128 comparisons a row).
# Scoring has no such bound: it scores the K responses and counts comparisons without listing them.
MAX_RANKED_COMPLETIONS = 128


@dataclass(frozen=True)
class RowFormat:
    """A row format an optional part adds to detection and validation (reward/labels/rated.py: rated
    completions): its name, whether a table's columns are in it, why one row cannot be used (naming the
    field), and how the validated rows become the rows held out whole (one per prompt)."""

    name: str
    matches: Callable[[set[str]], bool]
    problem: Callable[[dict, str], str | None]
    group: Callable[[Dataset], Dataset]


@dataclass
class PreferenceData:
    train: Dataset
    test: Dataset | None
    format: str  # EXPLICIT, IMPLICIT, CONVERSATIONAL or RANKED
    has_margin: bool
    source: str  # what to name in messages: a path, a hub id, or the name a Dataset was given ("synthetic")
    held_out: bool  # True if `test` was split off `train` here (eval_split_size)
    rankings: dict | None = None  # pairs made from rankings: {"train": stats, "test": stats} (reward/ranked/rows.py)
    carried: tuple[str, ...] = ()  # columns besides the texts that tokenizing keeps (the rankings' bookkeeping)

    def describe(self) -> str:
        """The start-up line: source, format, sizes, and the pairs with an empty response (trained, as TRL)."""
        held, margin = len(self.test) if self.test is not None else 0, " + margin" if self.has_margin else ""
        empty = self.empty_responses()
        said = f" ({empty} with an empty response)" if empty else ""
        return (
            f"data: {self.source} | format: {self.format}{margin} | train {len(self.train)} pairs{said} | "
            f"held-out {held}"
        )

    def empty_responses(self) -> int:
        """Training pairs whose chosen or rejected text is empty (plain-text pairs; conversations are lists)."""
        if not {"chosen", "rejected"} <= set(self.train.column_names) or self.format == CONVERSATIONAL:
            return 0
        sides = self.train.select_columns(["chosen", "rejected"]).with_format("arrow")
        # Arrow, a batch at a time: no Python string per row, memory a batch's (a million pairs at start-up)
        return sum(pc.sum(pc.or_(blank(b["chosen"]), blank(b["rejected"]))).as_py() or 0 for b in sides.iter(65536))


def blank(texts: pa.ChunkedArray) -> pa.Array:
    """Which texts are empty (or only whitespace); a column of mixed types (rows --skip_bad_rows dropped) one by one."""
    if pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type):
        return pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0)
    return pa.array([isinstance(t, str) and not t.strip() for t in texts.to_pylist()])


def detect_format(columns: list[str], first_row: dict, source: str = "data", formats: Sequence[RowFormat] = ()) -> str:
    """Name the format from the column names and the type of the first row's `chosen`; an added `formats`
    entry whose columns match comes first.

    >>> detect_format(["prompt", "chosen", "rejected"], {"chosen": " yes"})
    'explicit prompt'
    """
    if added := next((f.name for f in formats if f.matches(set(columns))), None):
        return added
    if "completions" in columns:
        if "scores" not in columns and "ranking" not in columns:
            raise UserError(f"{source}: ranked rows need a scores or a ranking column to train on (found {columns})")
        return RANKED
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise UserError(
            f"{source}: missing column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'} "
            "(a preference row needs chosen and rejected, and optionally prompt and margin)"
        )
    if isinstance(first_row["chosen"], list):
        return CONVERSATIONAL
    return EXPLICIT if "prompt" in columns else IMPLICIT


def subset_column(columns) -> str | None:
    """The column that names each pair's subset: `subset`, else `category`, else None (per-subset accuracy)."""
    return next((c for c in SUBSET_COLUMNS if c in columns), None)


def text_problem(key: str, value, conversational: bool, may_be_empty: bool = False) -> str | None:
    """Why one text field (a string, or a list of messages) cannot be used, or None."""
    if conversational:
        if not isinstance(value, list) or (not value and not may_be_empty):
            return f"field '{key}' must be a non-empty list of messages"
        for msg in value:
            if not isinstance(msg, dict) or msg.get("role") not in ROLES:
                return f"field '{key}' has a message with a missing or unknown role (use {', '.join(sorted(ROLES))})"
            if not isinstance(msg.get("content"), str):
                return f"field '{key}' has a message without string content"
        return None
    if not isinstance(value, str):
        return f"field '{key}' must be a string, got {type(value).__name__}"
    if not may_be_empty and not value.strip():
        return f"field '{key}' is empty"
    return None


def margin_value(margin) -> float | None:
    """The margin as a float (CSV cells arrive as text), or None if it is not a finite number."""
    if isinstance(margin, bool):
        return None
    try:
        value = float(margin)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def ranking_problem(row: dict, fmt: str | None = None) -> str | None:
    """Why a prompt + completions row cannot be used (scored, or trained on when `fmt` is RANKED), or None."""
    completions = row["completions"]
    if not isinstance(completions, list) or not completions:
        return "field 'completions' must be a non-empty list"
    if fmt == RANKED and len(completions) < 2:
        return "field 'completions' must hold 2 or more responses to train on"
    if fmt == RANKED and len(completions) > MAX_RANKED_COMPLETIONS:
        return (
            f"field 'completions' holds {len(completions)} responses; training takes at most "
            f"{MAX_RANKED_COMPLETIONS} per prompt (their C(K, 2) comparisons are trained as pairs): keep the "
            f"{MAX_RANKED_COMPLETIONS} you need, or split the row"
        )
    chat = isinstance(completions[0], list)
    problem = text_problem("prompt", row.get("prompt") or ([] if chat else ""), chat, may_be_empty=True)
    answered = bool(row.get("prompt"))  # an empty completion to a prompt is an answer (TRL trains on it)
    for c in completions:
        problem = problem or text_problem("completions", c, chat, may_be_empty=answered and not chat)
    k = len(completions)
    if row.get("scores") is not None:
        scores = row["scores"]
        if not isinstance(scores, list) or len(scores) != k or any(margin_value(v) is None for v in scores):
            return f"field 'scores' must be a list of {k} finite numbers, one per completion"
    if row.get("ranking") is not None and sorted(map(str, row["ranking"])) != sorted(map(str, range(k))):
        return f"field 'ranking' must list the indices 0..{k - 1} once each, best first"
    if row.get("best") is not None and not (isinstance(row["best"], int) and 0 <= row["best"] < k):
        return f"field 'best' must be an index in 0..{k - 1}"
    if fmt == RANKED and row.get("scores") is None and row.get("ranking") is None:
        return "a ranked row needs 'scores' or 'ranking'"
    return problem


def row_problem(row: dict, fmt: str) -> str | None:
    """Why a preference row cannot be used (naming the field), or None if it is fine."""
    if fmt == RANKED:
        return ranking_problem(row, fmt)
    conversational = fmt == CONVERSATIONAL
    # an empty response to a prompt is a legitimate answer (TRL trains on it; PreferenceData.describe counts it);
    # an empty text with no prompt before it leaves nothing to score. Missing fields and wrong types are refused.
    prompted = isinstance(row.get("prompt"), str) and bool(row["prompt"].strip())
    for key in ("prompt", "chosen", "rejected"):
        may_be_empty = key == "prompt" or (prompted and not conversational)
        if key in row and (problem := text_problem(key, row[key], conversational, may_be_empty)):
            return problem
    if "margin" in row and margin_value(row["margin"]) is None:
        return f"field 'margin' must be a finite number, got {row['margin']!r}"
    return None


def validate(
    ds: Dataset, fmt: str, source: str, split: str, problem=row_problem, skip_bad_rows: bool = False
) -> Dataset:
    """Check every row; one UserError lists the bad ones (1-based: the line of a JSONL file, the
    data row of a CSV). With `skip_bad_rows` they are dropped instead, and counted in the log."""
    line_of = jsonl_line_numbers(source)
    bad = [(line_of[i] if line_of else i + 1, p) for i, row in enumerate(ds) if (p := problem(row, fmt))]
    if not bad:
        return ds
    shown = "; ".join(f"row {n}: {p}" for n, p in bad[:SHOWN_BAD_ROWS])
    more = f" (and {len(bad) - SHOWN_BAD_ROWS} more)" if len(bad) > SHOWN_BAD_ROWS else ""
    report = f"{source} [{split}]: {len(bad)} bad row(s): {shown}{more}"
    if not skip_bad_rows:
        raise UserError(report + " (--skip_bad_rows drops them instead)")
    if len(bad) == len(ds):
        raise UserError(report + "; no good rows left")
    print(f"skipping {report}")
    bad_index = {line_of.index(n) if line_of else n - 1 for n, _ in bad}
    return ds.select([i for i in range(len(ds)) if i not in bad_index])


def load_preferences(
    name: str | Dataset | DatasetDict,
    *,
    config: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    eval_split_size: float = 0.1,
    seed: int = 42,
    skip_bad_rows: bool = False,
    source: str | None = None,
    formats: Sequence[RowFormat] = (),
) -> PreferenceData:
    """Load, detect, validate, and hold out `eval_split_size` (seeded) when there is no test split (ranked
    rows and added `formats`: whole prompts). `source` names rows passed in as a Dataset in messages."""
    splits, source = load_raw(name, config, source)
    if train_split not in splits:
        raise UserError(f"{source}: no split '{train_split}' (has {', '.join(splits)})")
    train = splits[train_split]
    if len(train) == 0:
        raise UserError(f"{source}: the '{train_split}' split is empty")
    fmt = detect_format(train.column_names, train[0], f"{source} [{train_split}]", formats)
    added = next((f for f in formats if f.name == fmt), None)
    check = dict(problem=added.problem if added else row_problem, skip_bad_rows=skip_bad_rows)
    train = validate(train, fmt, source, train_split, **check)
    train = added.group(train) if added else train
    test, held_out = splits.get(test_split), False
    if test is not None:
        first = test[0] if len(test) else train[0]
        if detect_format(test.column_names, first, f"{source} [{test_split}]", formats) != fmt:
            raise UserError(f"{source}: '{test_split}' is not in the same format as '{train_split}'")
        test = validate(test, fmt, source, test_split, **check)
        test = added.group(test) if added and len(test) else test
    elif eval_split_size > 0:
        if len(train) - math.ceil(eval_split_size * len(train)) < 1:  # datasets' rule: >= 1 pair on each side
            raise UserError(
                f"{source}: {len(train)} pair(s) are too few to hold out --eval_split_size {eval_split_size:g} "
                "(it would leave no training pair); add a test split, or pass --eval_split_size 0 to train on "
                "all of them without evaluation"
            )
        parts = train.train_test_split(test_size=eval_split_size, seed=seed)  # ranked: whole prompts
        train, test, held_out = parts["train"], parts["test"], True
    return PreferenceData(train, test, fmt, "margin" in train.column_names, source, held_out)
