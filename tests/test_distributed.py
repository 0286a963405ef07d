"""torchrun with 2 CPU processes (gloo) equals one process with the doubled batch."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow  # subprocesses (torchrun / train.py)

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(out: Path, nproc: int, batch: int, extra: list[str]) -> None:
    args = [
        "train.py",
        "--output_dir",
        str(out),
        "--synthetic_num_pairs",
        "60",
        "--eval_split_size",
        "0.2",
        "--per_device_train_batch_size",
        str(batch),
        "--max_steps",
        "4",
        "--learning_rate",
        "1e-5",
        "--logging_steps",
        "1",
        "--eval_steps",
        "2",
        "--disable_tqdm",
        *extra,
    ]
    launcher = [sys.executable]
    if nproc > 1:
        launcher += [
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
        ]
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(launcher + args, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def initial_weights() -> dict:
    """The weights train.py starts from (the tiny preset, its default seed 42), as a saved model holds them."""
    from reward.presets.tiny import build_tiny_tokenizer, tiny_model

    return tiny_model(build_tiny_tokenizer(), seed=42).state_dict()


@pytest.mark.parametrize(
    "extra",
    [
        [
            "--gradient_accumulation_steps",
            "1",
            "--group_by_length",
            "false",
            "--padding_free",
            "false",
            "--share_prefix",
            "false",
        ],
        ["--gradient_accumulation_steps", "2"],  # the defaults: grouped, packed, shared prefix
        ["--gradient_accumulation_steps", "2", "--gradient_checkpointing", "true"],
        # 48 prompts of K = 4 in one packed segment each; the divisor is the step's comparisons on both ranks
        ["--dataset_name", "synthetic-ranked", "--gradient_accumulation_steps", "2"],
        # rated prompts (4 completions each): regression + the implied pairs, N the step's completions on both ranks
        ["--dataset_name", "synthetic-ratings", "--gradient_accumulation_steps", "2", "--rating_pair_weight", "0.5"],
        # pairs with a strength 1..3, each pair's loss weighted 1, 2, 3 (scaled Bradley–Terry)
        ["--dataset_name", "synthetic-strength", "--gradient_accumulation_steps", "2"],
    ],
    ids=[
        "plain-no-accumulation",
        "packed-accumulation-2",
        "gradient-checkpointing",
        "grouped-rankings",
        "rated-regression",
        "strength-weights",
    ],
)
def test_two_processes_equal_one_with_the_doubled_batch(extra, tmp_path):
    single, double = tmp_path / "single", tmp_path / "ddp"
    run(single, 1, 8, extra)
    proc = run(double, 2, 4, extra)
    assert "x 2 processes" in proc.stdout  # rank 0 prints the summary, once
    assert proc.stdout.count("optimizer steps:") == 1
    a, b = load_file(single / "model.safetensors"), load_file(double / "model.safetensors")
    assert a.keys() == b.keys()
    last_checkpoint = load_file(double / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(b[k], last_checkpoint[k]) for k in b)  # rank 0 saved the trained weights
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    initial = initial_weights()
    assert max((a[k] - initial[k]).abs().max().item() for k in a) > 10 * 1e-6  # moved: measured 2.0e-5 (~2 lr)
    la = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(line) for line in (double / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in la] == [r["step"] for r in lb] == [1, 2, 3, 4]
    for ra, rb in zip(la, lb):  # global metrics: accuracy over all pairs, not a mean of per-rank means
        assert rb["pairs"] == ra["pairs"] and rb["accuracy"] == ra["accuracy"]
        assert abs(ra["loss"] - rb["loss"]) <= 1e-6 and abs(ra["grad_norm"] - rb["grad_norm"]) <= 1e-5
        if "eval_loss" in ra:
            assert abs(ra["eval_loss"] - rb["eval_loss"]) <= 1e-6
    assert torch.isfinite(torch.tensor(lb[-1]["loss"]))
    configs = [json.loads((out / "config.json").read_text()) for out in (single, double)]
    assert configs[0]["reward_format"] == configs[1]["reward_format"]  # rank 0 recorded it
    assert configs[1]["reward_stats"]["mean"] == pytest.approx(configs[0]["reward_stats"]["mean"], abs=1e-5)


def test_resume_with_two_processes(tmp_path):
    """A 2-process run resumed from its step-2 checkpoint ends with the same weights, bit for bit."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run(full, 2, 4, ["--save_steps", "2"])
    resumed.mkdir()
    for name in ("checkpoint-2", "metrics.jsonl"):
        src = full / name
        subprocess.run(["cp", "-r", str(src), str(resumed / name)], check=True)
    proc = run(resumed, 2, 4, ["--save_steps", "2", "--resume_from_checkpoint", str(resumed / "checkpoint-2")])
    assert "resuming from" in proc.stdout and "at optimizer step 2" in proc.stdout
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
