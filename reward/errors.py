"""Errors a user can fix by changing their input or options, and the one command-line shell that
prints them.

`train.py` and `score.py` print these as one line (`error: ...`) and exit with code 2, without a
traceback (`--debug`, as a flag or `debug: true` in an options file, shows it). Everything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any


class UserError(ValueError):
    """Bad input or options; the message says what to change (file, row, field, flag)."""


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (a library's multi-line error inside a one-line one)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_cli(
    argv: list[str], parse: Callable[[list[str]], Any], run: Callable[[Any], int], failures: dict | None = None
) -> int:
    """`run(parse(argv))`, with every expected failure as one `error:` line and its exit code: UserError
    2, plus `failures` ({exception class: code}, e.g. train.py's non-finite training: 3)."""
    codes = {UserError: 2, **(failures or {})}
    cfg = None
    try:
        cfg = parse(argv)
        return run(cfg)
    except tuple(codes) as exc:
        if getattr(cfg, "debug", False) or "--debug" in argv:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return next(code for kind, code in codes.items() if isinstance(exc, kind))
