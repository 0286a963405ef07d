"""Load preference rows, detect their format, validate them, and split off a held-out set.

Sources: a local `.jsonl`/`.json`/`.csv`/`.parquet` file, a folder of such files (split names from
file names, as `datasets` infers them: `train.jsonl`, `test.jsonl`, ...), a dataset on the Hugging
Face Hub, or a `datasets.Dataset`/`DatasetDict` passed in from Python (the generated tasks, e.g.
`synthetic`, are built by reward/presets/synthetic.py and passed in as one, under their name).

Formats (detected from the columns and the first row):

    explicit       {"prompt": str, "chosen": str, "rejected": str}
    implicit       {"chosen": str, "rejected": str}            (full texts, prompt included)
    conversational {"prompt"?: [msg], "chosen": [msg], "rejected": [msg]}  msg = {"role", "content"}
    ranked         {"prompt"?: str | [msg], "completions": [K texts or K message lists],
                    "scores": [K numbers, higher is better] | "ranking": [K indices, best first]}

Any pair format may carry a numeric `margin` column (how much better chosen is; Llama 2's margin loss).
Ranked rows are validated here and held out by whole prompts, so no prompt's comparisons land on both
sides; reward/ranked/rows.py turns them into the comparisons the pair path trains.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Value, load_dataset
from pyarrow import ArrowException, parquet  # pyarrow: what `datasets` stores rows in

from reward.errors import UserError, first_line

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
EXPLICIT, IMPLICIT, CONVERSATIONAL, RANKED = "explicit prompt", "implicit prompt", "conversational", "ranked"
ROLES = {"system", "user", "assistant", "tool", "developer"}
SHOWN_BAD_ROWS = 5  # how many bad rows an error message lists
SUBSET_COLUMNS = ("subset", "category")  # the column naming each pair's subset, looked up in this order
# A ranking of K responses trains as its C(K, 2) comparisons, each a pair of texts (reward/ranked/rows.py):
# the work and memory per row grow as K², so training takes at most this many (8,128 comparisons a row).
# Scoring has no such bound: it scores the K responses and counts comparisons without listing them.
MAX_RANKED_COMPLETIONS = 128


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
        """The start-up line: source, format, sizes."""
        held, margin = len(self.test) if self.test is not None else 0, " + margin" if self.has_margin else ""
        return f"data: {self.source} | format: {self.format}{margin} | train {len(self.train)} pairs | held-out {held}"


def load_raw(
    name: str | Dataset | DatasetDict, config: str | None = None, source: str | None = None
) -> tuple[DatasetDict, str]:
    """Return every split of the source as a DatasetDict, plus a name for messages (`source`, for rows
    passed in as a Dataset; default "<Dataset>")."""
    if isinstance(name, Dataset):
        return DatasetDict({"train": name}), source or "<Dataset>"
    if isinstance(name, DatasetDict):
        return name, source or "<DatasetDict>"
    files = data_files(name)
    if files is None:
        return _load(name, config), name  # a Hub dataset id
    path = Path(name)
    if path.is_file():
        builder = FILE_BUILDERS[path.suffix.lower()]
        return _load(builder, data_files={"train": str(path)}, **(csv_as_text(path) if builder == "csv" else {})), str(
            path
        )
    all_csv = all(p.suffix.lower() == ".csv" for p in files)
    return _load(str(path), **(csv_as_text(files[0]) if all_csv else {})), str(path)


def data_files(name: str) -> list[Path] | None:
    """The local files `name` names (a file, or a folder's), each checked: readable, and holding a row; None
    for a Hub id. Reads no more than a file's first rows (a parquet file's footer): preflight runs it."""
    path = Path(name)
    if path.is_file():
        if path.suffix.lower() not in FILE_BUILDERS:
            raise UserError(f"{path}: unsupported file type (use {', '.join(FILE_BUILDERS)})")
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in FILE_BUILDERS and seen(p, path))
        if not files:
            raise UserError(f"{path}: folder has no {'/'.join(FILE_BUILDERS)} files")
    elif path.suffix.lower() in FILE_BUILDERS or name.startswith((".", "/", "~")):
        raise UserError(f"{name}: no such file or folder")
    else:
        return None
    for file in files:  # in a folder too: one empty file fails `datasets` ("corresponds to no data!")
        check_data_file(file)
    return files


def seen(file: Path, folder: Path) -> bool:
    """A file `datasets` reads from a folder: none under a hidden (`.ipynb_checkpoints/`) or `__special__` part."""
    return file.is_file() and not any(part.startswith((".", "__")) for part in file.relative_to(folder).parts)


def check_data_file(path: Path) -> None:
    """A data file must be readable, UTF-8 if it is text, and hold at least one row: say so plainly, naming
    it, before `datasets` tries (its errors name neither the file nor the problem)."""
    try:
        if path.suffix.lower() == ".parquet":
            has_rows = parquet_rows(path) > 0
        else:
            with open(path, encoding="utf-8", newline="") as f:
                if path.suffix.lower() == ".csv":
                    rows = csv.reader(f)
                    has_rows = next(rows, None) is not None and next(rows, None) is not None  # header + 1 row
                else:
                    has_rows = any(line.strip() not in ("", "[]") for line in f)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); re-save it as UTF-8") from exc
    except OSError as exc:
        raise UserError(f"{path}: could not read it ({first_line(exc)})") from exc
    if not has_rows:
        raise UserError(f"{path}: the file is empty (no preference rows)")


def parquet_rows(path: Path) -> int:
    """How many rows a parquet file's footer says it holds (nothing else is read)."""
    try:
        return parquet.read_metadata(path).num_rows
    except ArrowException as exc:  # not parquet: no magic bytes, a damaged footer
        raise UserError(f"{path}: not a parquet file ({first_line(exc)})") from exc


def csv_as_text(path: Path) -> dict:
    """load_dataset options that read every CSV column as the text written in the file.

    pandas would otherwise guess types: a column of " 4", " 5" becomes integers and an empty prompt
    cell becomes NaN. (`margin` is parsed from its text by `margin_value`.)
    """
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f), [])
    return {"features": Features({name: Value("string") for name in header}), "keep_default_na": False}


def _load(*args, **kwargs) -> DatasetDict:
    try:
        return load_dataset(*args, **kwargs)
    except Exception as exc:  # datasets raises many types (DatasetNotFoundError, ArrowInvalid, ...)
        where = args[0] if not kwargs.get("data_files") else kwargs["data_files"]["train"]
        for path in [Path(where)] if Path(where).is_file() else sorted(Path(where).glob("*.jsonl")):
            first_bad_json_line(path)  # raises a precise error if a JSONL line does not parse
        raise UserError(f"{where}: could not load the dataset ({type(exc).__name__}: {first_line(exc)})") from exc


def first_bad_json_line(path: Path) -> None:
    """Raise a UserError naming the first line of a JSONL file that is not a JSON object."""
    if path.suffix.lower() != ".jsonl":
        return
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}: line {number}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(value, dict):
                raise UserError(f"{path}: line {number}: expected a JSON object, got {type(value).__name__}")


def detect_format(columns: list[str], first_row: dict, source: str = "data") -> str:
    """Name the format from the column names and the type of the first row's `chosen`.

    >>> detect_format(["prompt", "chosen", "rejected"], {"chosen": " yes"})
    'explicit prompt'
    """
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
    for c in completions:
        problem = problem or text_problem("completions", c, chat)
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
    for key in ("prompt", "chosen", "rejected"):
        if key in row and (problem := text_problem(key, row[key], conversational, may_be_empty=key == "prompt")):
            return problem
    if "margin" in row and margin_value(row["margin"]) is None:
        return f"field 'margin' must be a finite number, got {row['margin']!r}"
    return None


def jsonl_line_numbers(source: str) -> list[int] | None:
    """For a .jsonl file, the file line of each row (the loader skips blank lines); else None."""
    path = Path(source)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return [number for number, line in enumerate(f, start=1) if line.strip()]


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
) -> PreferenceData:
    """Load, detect, validate, and hold out `eval_split_size` (seeded) when there is no test split (ranked
    rows: whole prompts). `source` names rows passed in as a Dataset in messages."""
    splits, source = load_raw(name, config, source)
    if train_split not in splits:
        raise UserError(f"{source}: no split '{train_split}' (has {', '.join(splits)})")
    train = splits[train_split]
    if len(train) == 0:
        raise UserError(f"{source}: the '{train_split}' split is empty")
    fmt = detect_format(train.column_names, train[0], f"{source} [{train_split}]")
    train = validate(train, fmt, source, train_split, skip_bad_rows=skip_bad_rows)
    test, held_out = splits.get(test_split), False
    if test is not None:
        if detect_format(test.column_names, test[0] if len(test) else train[0], f"{source} [{test_split}]") != fmt:
            raise UserError(f"{source}: '{test_split}' is not in the same format as '{train_split}'")
        test = validate(test, fmt, source, test_split, skip_bad_rows=skip_bad_rows)
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
