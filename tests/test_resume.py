"""Checkpoints and resuming: bit-for-bit continuation, crash safety (SIGKILL mid-save), clean stops on
SIGINT/SIGTERM. The output-dir policy and what a checkpoint may contain:
tests/test_output_dir.py; non-finite steps: tests/test_nonfinite.py.

Real subprocesses are used where the behaviour is about a process (signals, SIGKILL); everything else
runs `train.main` / `train.cli` in-process on the tiny model, a few optimizer steps each.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import all_finite, checkpoint_steps, latest, read_metrics, small_run, weights, without_timing
from transformers import AutoModelForSequenceClassification

import train
from reward.batching import BatchPlan, step_plan
from reward.collate import PairBatch
from reward.config import parse_config, pick
from reward.data import load_preferences
from reward.fast.packing import PackedBatch
from reward.presets.synthetic import synthetic_dataset
from reward.run.checkpoints import STATE_FILE

pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
MODEL_FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


# --- helpers -------------------------------------------------------------------------------------
def assert_complete_checkpoint(folder: Path, step: int) -> None:
    for name in (*MODEL_FOLDER_FILES, STATE_FILE):
        assert (folder / name).is_file(), f"{folder} lacks {name}"
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)  # no pickled code
    assert state["step"] == step
    assert all_finite(weights(folder))


def subprocess_env() -> dict[str, str]:
    # one intra-op thread each: two training processes share the 2 cores without oversubscribing
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def resume_command(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("resume with: ")]
    assert len(lines) == 1, stdout[-3000:]
    return lines[0].removeprefix("resume with: ")


def interrupt_on_call(monkeypatch, call: int) -> None:
    """Send this process a real SIGINT (as Ctrl-C does) during the `call`-th reward forward pass
    (of either layout: a plain padded `PairBatch` or a packed `PackedBatch`)."""
    calls = itertools.count(1)
    for layout in (PairBatch, PackedBatch):
        real = layout.rewards

        def forward(batch, model, _real=real):
            if next(calls) == call:
                os.kill(os.getpid(), signal.SIGINT)
            return _real(batch, model)

        monkeypatch.setattr(layout, "rewards", forward)


# --- 1. bit-for-bit resume -----------------------------------------------------------------------
def test_stopped_and_resumed_run_equals_the_uninterrupted_run(tmp_path):
    k = 3
    options = [
        "--synthetic_num_pairs",
        "50",
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "3",
        "--max_steps",
        str(2 * k),
        "--logging_steps",
        "1",
        "--eval_steps",
        "3",
        "--save_steps",
        "2",
        "--save_total_limit",
        "2",
        "--disable_tqdm",
        "--use_cpu",  # CPU fp32: reproducible bit for bit
    ]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    cfg = parse_config([*options, "--output_dir", str(full)])
    assert not (cfg.bf16 or cfg.fp16)

    # the stop lands mid-epoch, the run crosses an epoch boundary, and epochs end on a short micro-batch
    rows = synthetic_dataset("synthetic", 50)
    num_train = len(load_preferences(rows, eval_split_size=cfg.eval_split_size).train)
    per_epoch, total = step_plan(num_train, pick(BatchPlan, cfg))
    assert (per_epoch, total) == (4, 2 * k)
    assert k % per_epoch != 0 and k < per_epoch < 2 * k
    assert num_train % cfg.per_device_train_batch_size != 0

    whole = train.main(cfg)

    stopped = train.main(parse_config([*options, "--output_dir", str(resumed)]), should_stop=lambda step: step == k)
    assert stopped.stopped and stopped.steps == k
    assert latest(resumed) == f"checkpoint-{k}"
    assert_complete_checkpoint(resumed / f"checkpoint-{k}", k)
    assert [r["step"] for r in read_metrics(resumed)] == list(range(1, k + 1))
    assert not (resumed / "model.safetensors").exists()  # no final export for a stopped run

    result = train.main(parse_config([*options, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"]))
    assert not result.stopped and result.steps == 2 * k

    # every per-step record (loss, accuracy, rewards, lr, grad norm, eval) is identical
    full_records, resumed_records = read_metrics(full), read_metrics(resumed)
    assert [r["step"] for r in full_records] == list(range(1, 2 * k + 1))
    assert without_timing(resumed_records) == without_timing(full_records)
    assert any("eval_loss" in r for r in full_records[:k]) and any("eval_loss" in r for r in full_records[k:])
    assert (result.train, result.eval) == (whole.train, whole.eval)

    # identical final weights, byte for byte, and identical optimizer state in the last checkpoint
    assert (full / "model.safetensors").read_bytes() == (resumed / "model.safetensors").read_bytes()
    a, b = weights(full), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    state_a = torch.load(full / f"checkpoint-{2 * k}" / STATE_FILE, weights_only=True)
    state_b = torch.load(resumed / f"checkpoint-{2 * k}" / STATE_FILE, weights_only=True)
    moments_a, moments_b = state_a["optimizer"]["state"], state_b["optimizer"]["state"]
    assert moments_a.keys() == moments_b.keys() and moments_a  # both ways: the same parameters have moments
    for param, moments in moments_a.items():
        assert moments.keys() == moments_b[param].keys(), param
        for name, value in moments.items():
            assert torch.equal(value, moments_b[param][name]), (param, name)
    assert state_a["scheduler"] == state_b["scheduler"]

    # --save_total_limit 2 keeps the two newest checkpoints; `latest` names the newest
    for out in (full, resumed):
        assert checkpoint_steps(out) == [4, 6], sorted(p.name for p in out.iterdir())
        assert latest(out) == "checkpoint-6"


# --- 2. SIGKILL in the middle of a checkpoint save -----------------------------------------------
KILL_WRAPPER = """\
import os, signal, sys
sys.path.insert(0, {root!r})
import reward.run.checkpoints

real_save = reward.run.checkpoints.torch.save
saves = 0


def save_or_die(obj, f, *args, **kwargs):
    # reward.run.checkpoints writes training_state.pt with torch.save after the model folder is complete
    global saves
    saves += 1
    if saves == 2:  # second checkpoint: model folder written, training_state.pt not yet
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)


reward.run.checkpoints.torch.save = save_or_die  # the torch module attribute: fine in this throwaway process
import train

sys.exit(train.cli(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_mid_save_leaves_the_previous_checkpoint_usable(tmp_path):
    wrapper = tmp_path / "die_in_second_save.py"
    wrapper.write_text(KILL_WRAPPER.format(root=str(ROOT)))
    out = tmp_path / "run"
    args = small_run(out, "--max_steps", "3", "--save_steps", "1", "--eval_split_size", "0")

    proc = subprocess.Popen(
        [sys.executable, str(wrapper), *args],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, stdout[-2000:] + stderr[-2000:]

    # the kill came mid-save: a stale temporary with the model folder but no training state
    stale = list(out.glob(".tmp-checkpoint-*"))
    assert [p.name for p in stale] == [f".tmp-checkpoint-2-{proc.pid}"]
    assert (stale[0] / "model.safetensors").exists() and not (stale[0] / STATE_FILE).exists()
    # ... and the previous checkpoint is whole, loadable, and still the one `latest` names
    assert not (out / "checkpoint-2").exists()
    assert latest(out) == "checkpoint-1"
    assert_complete_checkpoint(out / "checkpoint-1", 1)
    model = AutoModelForSequenceClassification.from_pretrained(out / "checkpoint-1")
    assert model.config.num_labels == 1
    assert torch.equal(model.score.weight, weights(out / "checkpoint-1")["score.weight"])

    # resuming from `latest` completes the run and clears the stale temporary
    assert train.cli([*args, "--resume_from_checkpoint", "latest"]) == 0
    assert not list(out.glob(".tmp-checkpoint-*"))
    assert checkpoint_steps(out) == [1, 2, 3] and latest(out) == "checkpoint-3"
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3]
    assert_complete_checkpoint(out / "checkpoint-3", 3)


# --- 3. SIGINT / SIGTERM -------------------------------------------------------------------------
SIGNAL_MAX_STEPS = 120  # ~10 s at batch 8 on one core; the signal is sent right after step 1 is logged


def wait_for_first_step(proc: subprocess.Popen, metrics: Path, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited early ({proc.returncode}):\n{log.read_text()[-3000:]}"
        if metrics.exists() and metrics.read_text().strip():
            return
        time.sleep(0.02)
    raise AssertionError(f"no optimizer step after {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
def test_sigint_and_sigterm_save_a_checkpoint_and_print_a_resume_command(tmp_path):
    """Both signals run side by side (one core each) to keep the test short."""
    env, procs = subprocess_env(), {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            out = tmp_path / sig.name
            args = [
                "--output_dir",
                str(out),
                "--synthetic_num_pairs",
                "400",
                "--eval_split_size",
                "0",
                "--per_device_train_batch_size",
                "8",
                "--max_steps",
                str(SIGNAL_MAX_STEPS),
                "--logging_steps",
                "1",
                "--disable_tqdm",
            ]
            log = tmp_path / f"{sig.name}.log"
            with log.open("w") as f:
                procs[sig] = (
                    subprocess.Popen(
                        [sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
                    ),
                    out,
                    log,
                )
        for sig, (proc, out, log) in procs.items():
            wait_for_first_step(proc, out / "metrics.jsonl", log)
            proc.send_signal(sig)
        for proc, _, _ in procs.values():
            proc.wait(timeout=300)
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.kill()

    resumes = {}
    try:
        for sig, (proc, out, log) in procs.items():
            text = log.read_text()
            assert proc.returncode == 128 + sig, f"{sig.name}: exit {proc.returncode}\n{text[-3000:]}"
            assert f"received {sig.name}" in text
            step = int(re.search(r"stopped after optimizer step (\d+)", text).group(1))
            assert 1 <= step < SIGNAL_MAX_STEPS
            assert "Traceback" not in text

            # a complete checkpoint of the step it stopped at, named by `latest`
            assert latest(out) == f"checkpoint-{step}"
            assert_complete_checkpoint(out / f"checkpoint-{step}", step)
            assert not list(out.glob(".tmp-checkpoint-*"))
            assert [r["step"] for r in read_metrics(out)] == list(range(1, step + 1))
            assert not (out / "model.safetensors").exists()

            command = resume_command(text)
            parts = shlex.split(command)
            assert parts[:2] == ["python", "train.py"], command
            assert "--resume_from_checkpoint latest" in command
            resumed_log = tmp_path / f"{sig.name}-resumed.log"
            with resumed_log.open("w") as f:
                resumes[sig] = (
                    subprocess.Popen(
                        [sys.executable, *parts[1:]], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT
                    ),
                    out,
                    resumed_log,
                    step,
                )
        for proc, _, _, _ in resumes.values():
            proc.wait(timeout=300)
    finally:
        for proc, _, _, _ in resumes.values():
            if proc.poll() is None:
                proc.kill()

    for sig, (proc, out, log, step) in resumes.items():
        text = log.read_text()
        assert proc.returncode == 0, f"{sig.name} resume: exit {proc.returncode}\n{text[-3000:]}"
        assert f"resuming from {out / f'checkpoint-{step}'} at optimizer step {step}" in text
        assert [r["step"] for r in read_metrics(out)] == list(range(1, SIGNAL_MAX_STEPS + 1))
        assert latest(out) == f"checkpoint-{SIGNAL_MAX_STEPS}"
        assert (out / "model.safetensors").exists()


def test_resume_command_works_after_overwrite_output_dir_with_a_value(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = small_run(out, "--max_steps", "3", "--eval_split_size", "0", "--overwrite_output_dir", "true")
    interrupt_on_call(monkeypatch, 1)
    assert train.cli(args) == 130
    command = resume_command(capsys.readouterr().out)
    assert train.cli(shlex.split(command)[2:]) == 0


def test_resume_command_after_a_second_interrupt_resumes_from_the_newest_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    args = small_run(out, "--max_steps", "4", "--eval_split_size", "0", "--save_total_limit", "1")
    assert train.main(parse_config(args), should_stop=lambda step: step == 1).stopped
    interrupt_on_call(monkeypatch, 1)  # the first step after resuming: step 2
    assert train.cli([*args, "--resume_from_checkpoint", str(out / "checkpoint-1")]) == 130
    assert checkpoint_steps(out) == [2] and latest(out) == "checkpoint-2"
    command = resume_command(capsys.readouterr().out)
    assert train.cli(shlex.split(command)[2:]) == 0, capsys.readouterr().err
