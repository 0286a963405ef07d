"""A resume in a fresh process, with dropout on, continues the uninterrupted run bit for bit.

With dropout off and the data order drawn from seed + epoch, a resume that forgot the RNG state would
still pass tests/test_resume.py; here every training forward draws dropout masks from the torch RNG,
so the per-step losses after the checkpoint match only if the checkpoint's RNG state came back. The
first run writes checkpoint-3 in one process; a second `train.py --resume_from_checkpoint` process
continues from a copy of it, as after a crash.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_gpt2_style_tokenizer
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2ForSequenceClassification

from reward.model import load_model

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"pairs_per_s", "tokens_per_s"}


def gpt2_with_dropout(folder: Path) -> Path:
    """A random 2-layer GPT-2 reward model with GPT-2's own dropout (0.1 on embeddings, residuals, attention)."""
    tokenizer = build_gpt2_style_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256, num_labels=1)
    assert config.resid_pdrop == config.embd_pdrop == 0.1
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_process(out: Path, model: Path, *extra: str) -> None:
    args = [
        *("--model_name_or_path", str(model), "--disable_dropout", "false", "--output_dir", str(out)),
        *("--synthetic_num_pairs", "60", "--per_device_train_batch_size", "8", "--max_steps", "6"),
        *("--save_steps", "3", "--logging_steps", "1", "--eval_strategy", "no", "--use_cpu", "--disable_tqdm"),
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def records(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


@pytest.mark.slow
def test_a_fresh_process_resumes_a_run_with_dropout_bit_for_bit(tmp_path):
    model = gpt2_with_dropout(tmp_path / "gpt2-dropout")
    live = load_model(str(model), build_gpt2_style_tokenizer(), disable_dropout=False).train()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    assert not torch.equal(live(input_ids=ids).logits, live(input_ids=ids).logits)  # dropout really is on

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train_process(whole, model)
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-3", resumed / "checkpoint-3")
    lines = (whole / "metrics.jsonl").read_text().splitlines()
    (resumed / "metrics.jsonl").write_text("\n".join(lines[:3]) + "\n")  # what the stopped run had logged
    train_process(resumed, model, "--resume_from_checkpoint", str(resumed / "checkpoint-3"))

    assert [r["step"] for r in records(whole)] == list(range(1, 7))
    assert records(resumed) == records(whole)  # steps 4-6: loss, accuracy, rewards, grad norm, lr exactly
    a, b = load_file(whole / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    state_a = torch.load(whole / "checkpoint-6" / "training_state.pt", weights_only=True)
    state_b = torch.load(resumed / "checkpoint-6" / "training_state.pt", weights_only=True)
    moments_a, moments_b = state_a["optimizer"]["state"], state_b["optimizer"]["state"]
    assert moments_a.keys() == moments_b.keys() and len(moments_a) > 0  # both ways: the same parameters
    for param in moments_a:
        assert moments_a[param].keys() == moments_b[param].keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert all(torch.equal(moments_a[param][k], moments_b[param][k]) for k in moments_a[param]), param
    assert state_a["optimizer"]["param_groups"] == state_b["optimizer"]["param_groups"]
    assert state_a["scheduler"] == state_b["scheduler"]
    assert torch.equal(state_a["rng"]["torch"], state_b["rng"]["torch"])  # the same dropout draws since
