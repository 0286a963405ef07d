"""Errors a user can fix by changing their input or options.

`train.py` and `score.py` print these as one line (`error: ...`) and exit with code 2, without a
traceback (`--debug` shows it). Everything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Bad input or options; the message says what to change (file, row, field, flag)."""
