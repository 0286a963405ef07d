"""What the commands show while they work, decided once: live progress bars on a terminal, lines in a file.

A progress bar redraws itself several times a second; on a terminal each frame replaces the last, but
in a file (`python train.py 2> log`) every frame is kept: a default run wrote ~110 KB of them, with
transformers' "Writing model shards" and datasets' "Tokenizing" bars among ours. When stderr is not a
terminal the train and score commands call `quiet_libraries_unless_tty` first: the libraries' bars are
off and ours are not drawn (the training loop's step lines, one per logging step, are its progress; the
consumer check prints a line per consumer). The Python API (`RewardTrainer`, `RewardScorer`) is left as
the libraries set it.
"""

from __future__ import annotations

import sys


def is_terminal() -> bool:
    """Whether progress bars go to a terminal (stderr, where tqdm draws them)."""
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def quiet_libraries_unless_tty() -> bool:
    """Turn the progress bars off unless stderr is a terminal; returns whether bars are live (a terminal)."""
    if is_terminal():
        return True
    import datasets  # here: the command has decided to run, and imports the stack anyway
    import transformers

    datasets.disable_progress_bars()  # map's "Tokenizing ...", to_json's "Creating json from Arrow format"
    transformers.utils.logging.disable_progress_bar()  # save_pretrained's "Writing model shards"
    return False
