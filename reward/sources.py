"""Where preference rows come from, read: a local `.jsonl`/`.json`/`.csv`/`.parquet` file, a folder of them
(split names from file names, as `datasets` infers them: `train.jsonl`, `test.jsonl`, ...), a dataset on the
Hugging Face Hub, or a `datasets.Dataset`/`DatasetDict` passed in from Python. Each local file is checked
first (readable, UTF-8, holding a row; a CSV row with the header's number of fields), so a bad file is one
line naming it, not `datasets`' traceback. What the rows mean (formats, validation, the held-out split):
reward/data.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Value, load_dataset
from pyarrow import ArrowException, parquet  # pyarrow: what `datasets` stores rows in

from reward.errors import UserError, first_line

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


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
                    has_rows = csv_rows(path, csv.reader(f)) > 0
                else:
                    has_rows = any(line.strip() not in ("", "[]") for line in f)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); re-save it as UTF-8") from exc
    except OSError as exc:
        raise UserError(f"{path}: could not read it ({first_line(exc)})") from exc
    if not has_rows:
        raise UserError(f"{path}: the file is empty (no preference rows)")


def csv_rows(path: Path, rows) -> int:
    """Data rows of a CSV file, each with the header's number of fields: pandas would fill a short row (a file
    cut off mid-row) with empty cells, and an empty response is a valid one."""
    header = next(rows, [])
    count = 0
    for count, row in enumerate(rows, start=1):  # noqa: B007 - the count is the result
        if row and len(row) != len(header):
            raise UserError(f"{path}: row {count} has {len(row)} fields, the header {len(header)} (a truncated file?)")
    return count


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


def jsonl_line_numbers(source: str) -> list[int] | None:
    """For a .jsonl file, the file line of each row (the loader skips blank lines); else None."""
    path = Path(source)
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return [number for number, line in enumerate(f, start=1) if line.strip()]
