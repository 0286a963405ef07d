"""The output-dir policy (a non-empty folder needs --resume_from_checkpoint or --overwrite_output_dir;
an unwritable folder or too little disk fails before training, in one line) and what a checkpoint may
contain (safetensors and a weights-only training state; no pickled code; trust_remote_code off).

`train.main` / `train.cli` in-process on the tiny model, a step or two each.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from conftest import checkpoint_steps, read_metrics, small_run

import reward.run.checkpoints
import train
from reward.config import TrainConfig, parse_config
from reward.run.checkpoints import LATEST_FILE, STATE_FILE

pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")


# --- 5. output-dir policy ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-step run with a checkpoint per step (read-only: copy it to change it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        train.main(parse_config(small_run(out, "--max_steps", "2", "--save_steps", "1")))
    return out


def test_non_empty_output_dir_needs_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("someone's file")
    assert train.cli(small_run(out, "--max_steps", "2")) == 2
    captured = capsys.readouterr()
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith("error: ") and str(out) in line and "Traceback" not in captured.err
    assert "--resume_from_checkpoint" in line and "--overwrite_output_dir" in line
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing touched
    assert "data:" not in captured.out  # stopped before loading anything


def test_overwrite_output_dir_starts_a_fresh_run(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    assert checkpoint_steps(out) == [1, 2] and len(read_metrics(out)) == 2
    result = train.main(parse_config(small_run(out, "--max_steps", "1", "--overwrite_output_dir")))
    assert result.steps == 1
    assert checkpoint_steps(out) == [1] and (out / LATEST_FILE).read_text().strip() == "checkpoint-1"
    assert [r["step"] for r in read_metrics(out)] == [1]


def test_overwrite_output_dir_removes_the_previous_final_model(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    cfg = parse_config(small_run(out, "--max_steps", "3", "--overwrite_output_dir"))
    assert train.main(cfg, should_stop=lambda step: step == 1).stopped
    assert not (out / "model.safetensors").exists()


def test_unwritable_output_dir_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "run"  # its parent is a regular file: cannot be created, even as root
    assert train.cli(small_run(out, "--max_steps", "2")) == 2
    captured = capsys.readouterr()
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith("error: ") and str(out) in line and "not writable" in line
    assert "Traceback" not in captured.err and "data:" not in captured.out and "step 1" not in captured.out


def test_disk_space_shortfall_fails_before_training(tmp_path, monkeypatch, capsys):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(reward.run.checkpoints.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    out = tmp_path / "run"
    assert train.cli(small_run(out, "--max_steps", "2")) == 2
    captured = capsys.readouterr()
    line = captured.err.strip().splitlines()[-1]
    assert line.startswith("error: not enough disk space") and str(out) in line and "--save_total_limit" in line
    assert "Traceback" not in captured.err and "step 1" not in captured.out
    assert not (out / "metrics.jsonl").exists() and not list(out.glob("checkpoint-*"))


# --- 6. what a checkpoint may contain -------------------------------------------------------------
def test_checkpoints_hold_safetensors_and_a_weights_only_training_state(finished_run):
    for step in (1, 2):
        folder = finished_run / f"checkpoint-{step}"
        state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
        assert {"step", "optimizer", "scheduler", "rng"} <= set(state)
        pickles = [
            p.name
            for p in folder.rglob("*")
            if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt") and p.name != STATE_FILE
        ]
        assert pickles == [] and (folder / "model.safetensors").exists()
    assert not [p for p in finished_run.glob("*.bin")]


def test_trust_remote_code_is_off_by_default(finished_run):
    assert TrainConfig().trust_remote_code is False
    assert parse_config([]).trust_remote_code is False
    assert json.loads((finished_run / "training_config.json").read_text())["trust_remote_code"] is False
