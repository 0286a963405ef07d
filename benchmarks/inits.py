"""The shared starting point of every benchmark run: one random init (or a warm start) that both
systems load, the generated data, and a worker's device and precision.

- `MODELS`: Llama shapes by name (tiny, small ~20M, smollm2-135m); any other name is a model folder
  or Hub id, loaded as training would load it.
- `build_init`: save the init (+ tokenizer) once; every worker process loads it.
- `pretrain`: `--pretrain_steps`, a warm start with our train.py on the short generated task.
- `start_worker`: a worker's threads, device, precision and the loaded init.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


# Llama shapes by name (random init: throughput does not depend on the weights).
MODELS = {
    "tiny": None,  # reward.presets.tiny.tiny_config
    "small": dict(
        hidden_size=512, intermediate_size=1408, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8
    ),  # ~20M parameters with the tiny vocabulary
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
}


def build_init(model: str, out: Path, seed: int) -> None:
    """Save one random init (+ tokenizer) that both systems load."""
    from transformers import AutoModelForSequenceClassification

    from reward.model import configure_for_reward, load_model
    from reward.presets.tiny import build_tiny_tokenizer, tiny_config

    tokenizer = build_tiny_tokenizer()
    if model in MODELS:
        config = tiny_config(tokenizer)
        for key, value in (MODELS[model] or {}).items():
            setattr(config, key, value)
        config.head_dim = config.hidden_size // config.num_attention_heads
        torch.manual_seed(seed)
        net = AutoModelForSequenceClassification.from_config(config)
        configure_for_reward(net, tokenizer)
    else:  # a user's --model: load it as training would
        from reward.tokenizer import ensure_pad_token, load_tokenizer

        tokenizer = load_tokenizer(model)
        ensure_pad_token(tokenizer)
        net = load_model(model, tokenizer, seed=seed)
    net.save_pretrained(out)
    tokenizer.save_pretrained(out)


# The warm start behind --pretrain_steps: train.py on the short generated task (reward/presets/synthetic.py)
PRETRAIN_ARGS = [
    "--dataset_name",
    "synthetic",
    "--synthetic_num_pairs",
    "6000",
    "--per_device_train_batch_size",
    "32",
    "--learning_rate",
    "1e-4",
]


def pretrain(init: Path, steps: int, seed: int, out: Path) -> str:
    """Train the random init for `steps` on the short generated task with our train.py; return its held-out line.

    Why: reward models start from a pretrained LM, and a random-init model of this size stays at
    chance on the long-prompt task for well over a hundred steps (it has to learn the words first),
    so held-out accuracy after a benchmark-sized run says nothing. From a model that already
    knows the short task, both systems must still learn the long prompts (histories, trailing
    sentences) within the benchmark's steps. Both then start from this model, like any --model."""
    cmd = [
        sys.executable,
        "train.py",
        "--model_name_or_path",
        str(init),
        *PRETRAIN_ARGS,
        "--max_steps",
        str(steps),
        "--eval_steps",
        str(steps),
        "--seed",
        str(seed),
        "--output_dir",
        str(out),
        "--overwrite_output_dir",
        "--disable_tqdm",
        "true",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"pretraining failed:\n{proc.stderr[-4000:]}")
    return next(line for line in proc.stdout.splitlines() if line.startswith("held-out:"))


def load_rows(data: str, num_pairs: int, seed: int):
    """The rows train.py reads for `--dataset_name data` (10 % held out; rankings as their pairs)."""
    from reward.config import TrainConfig
    from reward.run.rows import read_preferences

    return read_preferences(TrainConfig(dataset_name=data, synthetic_num_pairs=num_pairs, seed=seed), data)


def start_worker(args: argparse.Namespace):
    """A worker's threads, device, precision, and the shared init (tokenizer, model) on that device."""
    from reward.model import load_model, pick_device, resolve_precision
    from reward.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    device = pick_device()
    tokenizer = load_tokenizer(args.init)
    model = load_model(args.init, tokenizer, seed=args.seed).to(device)
    return device, resolve_precision(args.bf16, False, device), tokenizer, model
