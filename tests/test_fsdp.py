"""--fsdp (FSDP2 `fully_shard`) with 2 CPU processes (gloo) equals one process with the doubled batch."""

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import run  # the torchrun launcher of the data-parallel tests
from transformers import pipeline

import train
from reward.config import parse_config
from reward.errors import UserError

pytestmark = pytest.mark.slow  # subprocesses (torchrun / train.py)

# 55 pairs -> 44 train pairs -> global micro-batches of 8, 8, 8, 8, 8, 4: the 4-pair one is all
# rank 0's, so rank 1 runs a zero-weight filler pass there (FSDP's collectives are in the passes)
CASES = {
    "packed-accumulation-2-uneven": ["--synthetic_num_pairs", "55", "--gradient_accumulation_steps", "2"],
    "padded-rank-without-pairs": [
        "--synthetic_num_pairs",
        "55",
        "--max_steps",
        "6",
        "--padding_free",
        "false",
        "--share_prefix",
        "false",
        "--group_by_length",
        "false",
    ],
    "gradient-checkpointing": ["--gradient_accumulation_steps", "2", "--gradient_checkpointing", "true"],
    # 44 prompts: the last global micro-batch (4 prompts) is rank 0's, rank 1 runs a filler prompt batch
    "grouped-rankings-per-prompt": [
        "--dataset_name",
        "synthetic-ranked",
        "--synthetic_num_pairs",
        "55",
        "--gradient_accumulation_steps",
        "2",
        "--ranking_normalization",
        "prompt",
    ],
    # rated prompts of 4 completions: the regression + implied pairs over the step's completions on both ranks
    "rated-regression": [
        "--dataset_name",
        "synthetic-ratings",
        "--synthetic_num_pairs",
        "90",
        "--gradient_accumulation_steps",
        "2",
        "--rating_pair_weight",
        "0.5",
    ],
    # pairs with a strength 1..3: each pair's loss weighted 1, 2, 3 (scaled Bradley–Terry), uneven last batch
    "strength-weights": ["--dataset_name", "synthetic-strength", "--synthetic_num_pairs", "55"],
}


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", CASES.values(), ids=CASES.keys())
def test_fsdp_two_processes_equal_one_with_the_doubled_batch(extra, tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    run(single, 1, 8, extra)
    proc = run(sharded, 2, 4, [*extra, "--fsdp"])
    assert "x 2 processes" in proc.stdout and proc.stdout.count("optimizer steps:") == 1
    assert "padded forward" not in proc.stderr  # the packed cases ran packed: no fallback warning
    a, b = load_file(single / "model.safetensors"), load_file(sharded / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)  # full tensors, not one rank's shard
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    steps = len(records(single))
    last_checkpoint = load_file(sharded / f"checkpoint-{steps}" / "model.safetensors")
    assert all(torch.equal(b[k], last_checkpoint[k]) for k in b)
    for ra, rb in zip(records(single), records(sharded), strict=True):
        assert rb["step"] == ra["step"] and rb["pairs"] == ra["pairs"] and rb["accuracy"] == ra["accuracy"]
        assert abs(ra["loss"] - rb["loss"]) <= 1e-6  # the norm to fp32 rounding of its size (a regression's: ~20)
        assert rb["grad_norm"] == pytest.approx(ra["grad_norm"], rel=1e-6, abs=1e-5)
        if "eval_loss" in ra:  # every rank evaluated (the forward gathers), rank 0 recorded
            assert abs(ra["eval_loss"] - rb["eval_loss"]) <= 1e-6
    # an ordinary HF folder: the pipeline loads it and scores like the single-process model
    text = "Name a fruit. Sure: mango.</s>"
    scores = [
        pipeline("text-classification", model=str(out), device="cpu")(text)[0]["score"] for out in (single, sharded)
    ]
    assert abs(scores[0] - scores[1]) <= 1e-5
    # the format and statistics travel with the sharded run's folder too (statistics: every rank evaluated)
    configs = [json.loads((out / "config.json").read_text()) for out in (single, sharded)]
    assert configs[0]["reward_format"] == configs[1]["reward_format"]
    assert configs[1]["reward_stats"]["std"] == pytest.approx(configs[0]["reward_stats"]["std"], abs=1e-5)


def test_fsdp_resume_is_exact(tmp_path):
    """A --fsdp run resumed from its step-2 checkpoint (unsharded optimizer state) ends with the same weights."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run(full, 2, 4, ["--fsdp", "--save_steps", "2"])
    state = torch.load(full / "checkpoint-2" / "training_state.pt", weights_only=True)
    moments = state["optimizer"]["state"]["model.embed_tokens.weight"]["exp_avg"]
    assert moments.shape == load_file(full / "model.safetensors")["model.embed_tokens.weight"].shape  # whole
    resumed.mkdir()
    for name in ("checkpoint-2", "metrics.jsonl"):
        subprocess.run(["cp", "-r", str(full / name), str(resumed / name)], check=True)
    proc = run(
        resumed, 2, 4, ["--fsdp", "--save_steps", "2", "--resume_from_checkpoint", str(resumed / "checkpoint-2")]
    )
    assert "at optimizer step 2" in proc.stdout
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in records(resumed)] == [1, 2, 3, 4]


def test_fsdp_needs_torchrun_and_no_compile(tmp_path, capsys):
    assert train.cli(["--fsdp", "--output_dir", str(tmp_path / "out")]) == 2
    assert "--fsdp shards across processes: launch with torchrun" in capsys.readouterr().err
    with pytest.raises(UserError, match="--fsdp with --torch_compile"):
        parse_config(["--fsdp", "--torch_compile"])
