"""The rows score.py scores: read from a file, a folder, a Hub dataset or standard input (`--input -`), their
kind detected from the columns, every row checked as training checks its rows.

    pairs      chosen, rejected (+ prompt, margin, strength: accuracy per strength too)
    rankings   prompt, completions (+ scores | ranking | best)
    rated      completion, score (+ prompt): rewards against the ratings (reward/labels/metrics.py)
    texts      text
    responses  prompt, response (strings or messages)
    chats      messages

Standard input holds JSON Lines or one JSON array of rows. It goes through the same loader as a file
(written to a temporary .jsonl/.json file first), so every check and message is the file's, with the
file named `<stdin>`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TextIO

from reward.data import detect_format, ranking_problem, text_problem, validate
from reward.errors import UserError
from reward.labels.rows import RATED as RATED_LABELS
from reward.labels.rows import STRENGTH, label_row_problem
from reward.run.writes import as_write_error
from reward.sources import load_raw

PAIRS, RANKINGS, TEXTS, RESPONSES, CHATS, RATED = "pairs", "rankings", "texts", "responses", "chats", "rated"
STDIN, STDIN_NAME = "-", "<stdin>"


def detect_kind(columns: list[str], source: str = "input") -> str:
    if "chosen" in columns or "rejected" in columns:
        return PAIRS
    if "completions" in columns:
        return RANKINGS
    if "completion" in columns and "score" in columns:
        return RATED
    if "text" in columns:
        return TEXTS
    if "prompt" in columns and "response" in columns:
        return RESPONSES
    if "messages" in columns:
        return CHATS
    raise UserError(
        f"{source}: cannot tell what to score from columns {', '.join(columns)}: expected chosen/rejected "
        "(pairs), prompt/completions (rankings), completion/score (ratings), text, prompt/response, or messages"
    )


def load_rows(path: str, stdin: TextIO | None = None) -> tuple[list[dict], str]:
    """All rows of a file, a folder or a Hub dataset (first split), or of standard input for "-", and their
    kind; pair files are validated like training data."""
    if path == STDIN:
        return load_stdin_rows(stdin or sys.stdin)
    if not Path(path).exists() and (path.count("/") > 1 or "\\" in path):  # a Hub id is "name" or "owner/name"
        raise UserError(f"{path}: no such file or folder")
    splits, source = load_raw(path)
    ds = next(iter(splits.values()))
    if len(ds) == 0:
        raise UserError(f"{source}: no rows to score")
    kind = detect_kind(ds.column_names, source)
    if kind == PAIRS:
        validate(ds, detect_format(ds.column_names, ds[0], source), source, "input")
        if "strength" in ds.column_names:
            validate(ds, STRENGTH, source, "input", problem=label_row_problem)
    elif kind == RATED:
        validate(ds, RATED_LABELS, source, "input", problem=label_row_problem)
    else:
        validate(ds, kind, source, "input", problem=scoring_row_problem)
    return ds.to_list(), kind


def load_stdin_rows(stream: TextIO) -> tuple[list[dict], str]:
    """Rows piped in: JSON Lines, or a JSON array (its first character is '[')."""
    if stream.isatty():
        raise UserError(
            "--input -: reads JSON Lines from standard input, but nothing is piped in "
            "(e.g. cat rows.jsonl | python score.py --model DIR --input -)"
        )
    try:
        text = stream.read()
    except UnicodeDecodeError as exc:
        raise UserError(f"{STDIN_NAME}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    suffix = ".json" if text.lstrip().startswith("[") else ".jsonl"
    with tempfile.TemporaryDirectory(prefix="score-stdin-") as folder:
        path = Path(folder) / f"stdin{suffix}"
        with as_write_error(path, len(text.encode()), kind=f"{STDIN_NAME} to the temporary file "):
            path.write_text(text, encoding="utf-8")
        try:
            return load_rows(str(path))
        except UserError as exc:  # the file's message, naming standard input instead of the temporary file
            raise UserError(str(exc).replace(str(path), STDIN_NAME)) from exc


def scoring_row_problem(row: dict, kind: str) -> str | None:
    """Why a texts/responses/chats/rankings row cannot be scored, or None."""
    if kind == TEXTS:
        return text_problem("text", row["text"], conversational=False)
    if kind == CHATS:
        return text_problem("messages", row["messages"], conversational=True)
    if kind == RANKINGS:
        return ranking_problem(row)
    chat = isinstance(row["response"], list)
    # an empty response after a prompt is one (a policy may stop at once), as training trains it (reward/data.py)
    return text_problem("prompt", row["prompt"], chat, may_be_empty=True) or text_problem(
        "response", row["response"], chat, may_be_empty=bool(row["prompt"])
    )
