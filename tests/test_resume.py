"""Checkpoints and resuming: bit-for-bit continuation, crash safety (SIGKILL mid-save), clean stops on
SIGINT/SIGTERM, skipped non-finite steps, the output-dir policy, and what a checkpoint may contain.

Real subprocesses are used where the behaviour is about a process (signals, SIGKILL); everything else
runs `train.main` / `train.cli` in-process on the tiny model, a few optimizer steps each.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

import reward.evaluate
import reward.run.checkpoints
import train
from reward.batching import step_plan
from reward.config import TrainConfig, parse_config
from reward.data import load_preferences
from reward.loop import NonFiniteError
from reward.run.checkpoints import LATEST_FILE, STATE_FILE

pytestmark = pytest.mark.usefixtures("quiet_datasets")

ROOT = Path(__file__).resolve().parents[1]
TIMING_FIELDS = {"pairs_per_s", "tokens_per_s"}  # wall-clock rates: the only fields allowed to differ
MODEL_FOLDER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Micro-batches of 4-8 tiny sequences run as fast on one thread, and two threads slow down ~10x as soon
    as another process is busy on the 2 cores (measured: 1 s vs 8-20 s for one 6-step run)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- helpers -------------------------------------------------------------------------------------
def small_run(out: Path, *extra: str) -> list[str]:
    """Options of a tiny, fast run (50 generated pairs, batch 8, a record every step)."""
    return [
        "--output_dir",
        str(out),
        "--synthetic_num_pairs",
        "50",
        "--per_device_train_batch_size",
        "8",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        *extra,
    ]


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def checkpoint_steps(out: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


def latest(out: Path) -> str:
    return (out / LATEST_FILE).read_text().strip()


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in tensors.values())


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
    (of either path: plain padded `compute_rewards` or packed `packed_rewards`)."""
    calls = itertools.count(1)
    for name in ("compute_rewards", "packed_rewards"):
        real = getattr(reward.evaluate, name)

        def forward(*args, _real=real):
            if next(calls) == call:
                os.kill(os.getpid(), signal.SIGINT)
            return _real(*args)

        monkeypatch.setattr(reward.evaluate, name, forward)


class NaNRewards:
    """Patches reward.evaluate.compute_rewards so the rewards are NaN during `bad_steps` (backward then
    yields NaN gradients, as a real overflow would). `should_stop` tracks the step and snapshots the
    weights after every step; pass it to `train.main`."""

    def __init__(self, monkeypatch, bad_steps, first_step: int = 1):
        self.bad, self.step, self.model = set(bad_steps), first_step, None
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        real = reward.evaluate.compute_rewards

        def compute_rewards(model, input_ids, attention_mask):
            self.model = model
            rewards = real(model, input_ids, attention_mask)
            return rewards * float("nan") if self.step in self.bad else rewards

        real_packed = reward.evaluate.packed_rewards

        def packed_rewards(model, batch):  # the packed path (padding-free / shared prefix)
            self.model = model
            r_chosen, r_rejected = real_packed(model, batch)
            if self.step in self.bad:
                return r_chosen * float("nan"), r_rejected * float("nan")
            return r_chosen, r_rejected

        monkeypatch.setattr(reward.evaluate, "compute_rewards", compute_rewards)
        monkeypatch.setattr(reward.evaluate, "packed_rewards", packed_rewards)

    def should_stop(self, step: int) -> bool:
        self.snapshots[step] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.step = step + 1
        return False


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
    num_train = len(load_preferences("synthetic", synthetic_num_pairs=50, eval_split_size=cfg.eval_split_size).train)
    per_epoch, total = step_plan(num_train, cfg)
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


# --- 4. non-finite loss --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def skipped_step_run(tmp_path_factory):
    """4 steps; the rewards (hence loss and gradients) of step 2 are NaN."""
    out = tmp_path_factory.mktemp("nonfinite") / "run"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(stdout):
        nan = NaNRewards(monkeypatch, bad_steps={2})
        result = train.main(
            parse_config(small_run(out, "--max_steps", "4", "--eval_split_size", "0")), None, nan.should_stop
        )
    return result, out, nan.snapshots, stdout.getvalue()


def test_nonfinite_step_is_skipped_counted_and_leaves_the_weights_alone(skipped_step_run):
    result, out, snapshots, stdout = skipped_step_run
    assert result.nonfinite_steps == 1 and result.steps == 4
    assert "step 2: non-finite loss or gradient" in stdout
    records = read_metrics(out)
    assert [r["nonfinite_steps"] for r in records] == [0, 1, 1, 1]
    assert records[1]["lr"] > 0  # step 2 would have moved the weights had it not been skipped

    assert all(all_finite(s) for s in snapshots.values())
    assert all(torch.equal(snapshots[2][k], snapshots[1][k]) for k in snapshots[1])  # step 2 changed nothing
    assert any(not torch.equal(snapshots[3][k], snapshots[2][k]) for k in snapshots[2])  # step 3 did update
    assert all_finite(weights(out))
    assert math.isfinite(result.train["loss"])


def test_metrics_of_a_skipped_step_are_strict_json(skipped_step_run):
    _, out, _, _ = skipped_step_run

    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=reject)


def test_consecutive_nonfinite_steps_stop_without_a_nonfinite_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = small_run(out, "--max_steps", "8", "--eval_split_size", "0", "--save_steps", "1")
    nan = NaNRewards(monkeypatch, bad_steps=range(2, 9))
    with pytest.raises(NonFiniteError, match="3 optimizer steps in a row"):
        train.main(parse_config([*args, "--max_nonfinite_steps", "3"]), None, nan.should_stop)
    # steps 2 and 3 were skipped (their checkpoints hold step 1's weights); step 4 raised before saving
    assert checkpoint_steps(out) == [1, 2, 3] and latest(out) == "checkpoint-3"
    for step in (1, 2, 3):
        assert all_finite(weights(out / f"checkpoint-{step}"))
    assert not (out / "model.safetensors").exists()  # no final export


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # every step skipped: AdamW never stepped
def test_cli_exits_3_with_one_error_line_on_nonfinite_training(tmp_path, monkeypatch, capsys):
    NaNRewards(monkeypatch, bad_steps={1})  # step never advances without should_stop: every step is NaN
    out = tmp_path / "run"
    code = train.cli(small_run(out, "--max_steps", "6", "--eval_split_size", "0", "--max_nonfinite_steps", "2"))
    err = capsys.readouterr().err
    assert code == 3
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: 2 optimizer steps in a row had a non-finite loss or gradient")
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in err
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()


def test_nonfinite_count_survives_a_resume(tmp_path, monkeypatch):
    base = ["--max_steps", "4", "--eval_split_size", "0"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    with monkeypatch.context() as m:
        whole = train.main(parse_config(small_run(full, *base)), None, NaNRewards(m, {2}).should_stop)
    with monkeypatch.context() as m:
        nan = NaNRewards(m, {2})
        train.main(parse_config(small_run(resumed, *base)), None, lambda step: nan.should_stop(step) or step == 3)
    with monkeypatch.context() as m:
        nan = NaNRewards(m, {2}, first_step=4)
        cfg = parse_config(small_run(resumed, *base, "--resume_from_checkpoint", "latest"))
        result = train.main(cfg, None, nan.should_stop)
    assert without_timing(read_metrics(resumed)) == without_timing(read_metrics(full))
    assert result.nonfinite_steps == whole.nonfinite_steps == 1


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
    assert checkpoint_steps(out) == [1] and latest(out) == "checkpoint-1"
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
