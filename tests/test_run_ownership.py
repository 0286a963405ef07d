"""A run owns its output dir and never loses a checkpoint: the lock a second run is refused by, temp folders
only a dead process's save left, resumes that would skip or repeat pairs refused, and what a hostile new
user's first runs used to break (one pair, an output dir that is a file, a collapsed model)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_bad_input import assert_clean_error, invoke

import train
from reward.export import save_reward_model
from reward.presets.tiny import build_tiny_tokenizer, tiny_model
from reward.run.checkpoints import LATEST_FILE, STATE_FILE, list_checkpoints, save_training_checkpoint
from reward.run.output_dir import LOCK_FILE
from reward.run.train_cli import parse_train

pytestmark = pytest.mark.usefixtures("quiet_datasets")
ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--synthetic_num_pairs", "64", "--per_device_train_batch_size", "8", "--disable_tqdm"]


def write_lock(out: Path, pid: int, host: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-12-01T10:00:00"}
    (out / LOCK_FILE).write_text(json.dumps(owner))


@pytest.fixture()
def live_process():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no process has this pid (until the OS reuses it, rarely this soon)


# --- the lock ----------------------------------------------------------------------------------------
def test_a_second_run_on_a_locked_output_dir_is_refused(tmp_path, live_process, capsys):
    out = tmp_path / "run"
    write_lock(out, live_process)
    code, _, err = invoke(train.cli, [*SMALL, "--max_steps", "2", "--output_dir", str(out)], capsys)
    assert_clean_error(code, err, [f"is in use by another run (pid {live_process} on {socket.gethostname()}"])
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == live_process  # not taken, not removed


def test_a_lock_from_another_host_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    write_lock(out, os.getpid(), host="some-other-node")
    code, _, err = invoke(train.cli, [*SMALL, "--max_steps", "2", "--output_dir", str(out)], capsys)
    assert_clean_error(code, err, ["on some-other-node", f"delete {out / LOCK_FILE}"])


def test_a_dead_runs_lock_is_taken_over_and_released_at_the_end(tmp_path, capsys):
    out = tmp_path / "run"
    pid = dead_pid()
    write_lock(out, pid)
    code, printed, _ = invoke(
        train.cli, [*SMALL, "--max_steps", "2", "--output_dir", str(out), "--overwrite_output_dir"], capsys
    )
    assert code == 0
    assert f"taking over the lock of a run that is gone (pid {pid})" in printed
    assert not (out / LOCK_FILE).exists()  # released when the run ended


def test_a_save_removes_only_temp_folders_of_processes_that_are_gone(tmp_path, live_process):
    mine_dead = tmp_path / f".tmp-checkpoint-3-{dead_pid()}"
    theirs = tmp_path / f".tmp-checkpoint-3-{live_process}"
    for folder in (mine_dead, theirs):
        folder.mkdir()
    tokenizer = build_tiny_tokenizer()
    model = tiny_model(tokenizer)
    save = lambda path: save_reward_model(model, tokenizer, path, {})  # noqa: E731
    save_training_checkpoint(tmp_path, 4, save, {"step": 4})
    assert not mine_dead.exists() and theirs.exists()
    assert (tmp_path / "checkpoint-4" / STATE_FILE).is_file()


@pytest.mark.slow
def test_two_runs_started_at_once_on_one_output_dir(tmp_path):
    """The real race: exactly one of two train.py processes owns the folder; the other stops with one line."""
    out = tmp_path / "run"
    # long enough (60 steps) that the later starter always finds the earlier one still running
    args = [sys.executable, "train.py", *SMALL, "--max_steps", "60", "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [r[2][-2000:] for r in results]
    loser = next(err for code, _, err in results if code == 2)
    assert "is in use by another run" in loser.strip().splitlines()[-1]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [10, 20, 30, 40, 50, 60]  # one run's log, not two
    assert (out / (out / LATEST_FILE).read_text().strip() / STATE_FILE).is_file()


# --- checkpoints and resumes -------------------------------------------------------------------------
def test_save_total_limit_keeps_the_newest_and_latest_is_complete(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [*SMALL, "--max_steps", "3", "--save_steps", "1", "--save_total_limit", "2", "--output_dir", str(out)]
    code, _, _ = invoke(train.cli, argv, capsys)
    assert code == 0
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-3"]
    assert (out / (out / LATEST_FILE).read_text().strip() / STATE_FILE).is_file()


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory) -> Path:
    """A run with checkpoints at steps 2 and 4 (batch 8, accumulation 1, one process)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    assert train.cli([*SMALL, "--max_steps", "4", "--save_steps", "2", "--output_dir", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    "changed, needle",
    [
        (["--per_device_train_batch_size", "4"], "--per_device_train_batch_size: the checkpoint was trained with 8"),
        (["--gradient_accumulation_steps", "2"], "--gradient_accumulation_steps: the checkpoint was trained with 1"),
        (["--seed", "7"], "--seed: the checkpoint was trained with 42"),
        (["--group_by_length", "false"], "--group_by_length: the checkpoint was trained with True"),
    ],
    ids=["batch", "accumulation", "seed", "grouping"],
)
def test_a_resume_that_would_skip_or_repeat_pairs_is_refused(checkpointed, changed, needle, capsys):
    argv = [*SMALL, "--max_steps", "6", "--output_dir", str(checkpointed), "--resume_from_checkpoint", "latest"]
    code, out, err = invoke(train.cli, [*argv, *changed], capsys)
    assert_clean_error(code, err, [needle])
    assert "data:" not in out  # refused before the data loaded


def test_a_resume_with_another_number_of_processes_is_refused(checkpointed, tmp_path, capsys):
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(checkpointed), str(copy)], check=True)
    state = torch.load(copy / "checkpoint-4" / STATE_FILE, weights_only=True)
    torch.save({**state, "world_size": 2}, copy / "checkpoint-4" / STATE_FILE)
    argv = [*SMALL, "--max_steps", "6", "--output_dir", str(copy), "--resume_from_checkpoint", "latest"]
    code, _, err = invoke(train.cli, argv, capsys)
    assert_clean_error(code, err, ["saved by 2 process(es), this run has 1"])


def test_checkpoints_record_the_number_of_processes(checkpointed):
    assert torch.load(checkpointed / "checkpoint-2" / STATE_FILE, weights_only=True)["world_size"] == 1


# --- a new user's first runs ---------------------------------------------------------------------------
def test_one_pair_is_too_few_to_hold_out_a_split(tmp_path, capsys):
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"prompt": "Name a fruit.", "chosen": " mango", "rejected": " violin"}) + "\n")
    argv = ["--dataset_name", str(data), "--max_steps", "1", "--disable_tqdm", "--output_dir", str(tmp_path / "o")]
    code, _, err = invoke(train.cli, argv, capsys)
    assert_clean_error(code, err, ["1 pair(s) are too few to hold out --eval_split_size 0.1", "--eval_split_size 0"])
    code, _, _ = invoke(train.cli, [*argv, "--eval_split_size", "0", "--overwrite_output_dir"], capsys)
    assert code == 0  # and with the hint followed, it trains


def test_an_output_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "taken"
    path.write_text("not a folder")
    code, _, err = invoke(train.cli, [*SMALL, "--output_dir", str(path)], capsys)
    assert_clean_error(code, err, [f"output_dir {path} is a file, not a folder"])
    assert path.read_text() == "not a folder"


def test_a_collapsed_model_is_saved_with_a_loud_warning_and_exit_code_4(tmp_path, capsys):
    """A model that gives every sequence the same reward (here: a zero score head that lr 0 never moves;
    a far too high learning rate saturates into the same) ranks nothing and must not pass as a success."""
    tokenizer = build_tiny_tokenizer()
    model = tiny_model(tokenizer, seed=0)
    with torch.no_grad():
        model.score.weight.zero_()
    base = tmp_path / "dead"
    save_reward_model(model, tokenizer, base, {"model_name_or_path": "tiny"})
    out = tmp_path / "run"
    argv = [
        *SMALL,
        "--model_name_or_path",
        str(base),
        "--learning_rate",
        "0",
        "--max_steps",
        "2",
        "--output_dir",
        str(out),
    ]
    started = time.time()
    code, _, err = invoke(train.cli, argv, capsys)
    assert code == 4, err[-2000:]
    warning = next(line for line in err.splitlines() if line.startswith("WARNING: the model collapsed"))
    assert "every reward is 0 (std 0.0e+00 over 14 sequences" in warning
    assert "> **Warning:** the model collapsed" in (out / "README.md").read_text()
    assert (out / "model.safetensors").stat().st_mtime >= started - 1  # saved all the same, for inspection


def test_a_resume_needs_only_the_output_dir_and_reports_a_changed_flag(checkpointed, tmp_path, capsys):
    """The checkpoint holds the run's options: `--output_dir DIR --resume_from_checkpoint latest` is a whole
    command, and a flag given again with another value is named (the saved 64 pairs and batch 8 stay)."""
    cfg = parse_train(["--output_dir", str(checkpointed), "--resume_from_checkpoint", "latest", "--max_steps", "6"])
    assert (cfg.synthetic_num_pairs, cfg.per_device_train_batch_size, cfg.max_steps) == (64, 8, 6)
    # how progress shows is the invocation's (a terminal now, a log file then): not taken from the checkpoint
    assert cfg.disable_tqdm is False and cfg.output_dir == str(checkpointed)
    assert "--max_steps: 4 in the checkpoint, 6 given: using the given value" in capsys.readouterr().out
    again = parse_train(["--output_dir", str(checkpointed), "--resume_from_checkpoint", "latest"])
    assert again.max_steps == 4 and "in the checkpoint" not in capsys.readouterr().out
