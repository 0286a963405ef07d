"""A command whose output is a file gets lines, not progress-bar frames (reward/run/console.py): with stderr
redirected, a default run once wrote ~110 KB of frames, "Writing model shards" among them."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
from transformers.utils import logging as hf_logging

from reward.run.console import is_terminal, quiet_libraries_unless_tty

ROOT = Path(__file__).resolve().parent.parent


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture()
def bars_restored():
    """The bars' process-wide switches as they were, whatever the test turned off."""
    was = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    yield
    (datasets.enable_progress_bars if was[0] else datasets.disable_progress_bars)()
    (hf_logging.enable_progress_bar if was[1] else hf_logging.disable_progress_bar)()


def test_a_file_turns_every_bar_off_and_a_terminal_leaves_them(monkeypatch, bars_restored):
    datasets.enable_progress_bars()
    hf_logging.enable_progress_bar()
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert is_terminal() and quiet_libraries_unless_tty() is True
    assert datasets.is_progress_bar_enabled() and hf_logging.is_progress_bar_enabled()

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not is_terminal() and quiet_libraries_unless_tty() is False
    assert not datasets.is_progress_bar_enabled() and not hf_logging.is_progress_bar_enabled()


@pytest.mark.slow
def test_a_run_logged_to_files_is_lines_not_frames(tmp_path):
    """`python train.py > out 2> err` on the default model, fewer pairs (the default run's 12,000 pairs print
    ~7.5 KB of step lines and nothing on stderr): the step lines are there; no bar frames, shards or Arrow bars."""
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    argv = [sys.executable, "train.py", "--output_dir", str(tmp_path / "run"), "--synthetic_num_pairs", "2000"]
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run(argv, cwd=ROOT, stdout=stdout, stderr=stderr, timeout=600, check=False)
    printed, warned = out.read_text(), err.read_text()
    assert done.returncode == 0, warned[-2000:]
    assert len((printed + warned).encode()) < 20_000, (len(printed), len(warned))
    for frame in ("Writing model shards", "Creating json from Arrow format", "Tokenizing", "it/s", "\r"):
        assert frame not in printed + warned, frame
    assert "step 10 |" in printed and "saved reward model to" in printed
