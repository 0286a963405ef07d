"""The reward used in training equals what `pipeline("text-classification", model=DIR)` returns for
the same formatted string, loaded in a fresh process with no code of ours (≤ 1e-5, fp32)."""

import json
import subprocess
import sys
from functools import partial

import pytest
import torch
from conftest import build_gpt2_model, build_gpt2_style_tokenizer
from datasets import Dataset

from reward.collate import PairwiseCollator
from reward.config import TrainConfig
from reward.eval.model_card import render_model_card
from reward.export import save_reward_model
from reward.formatting import format_text, tokenize_pairs
from reward.metrics import MetricsWriter
from reward.model import compute_rewards, resolve_precision
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import build_tiny_tokenizer, tiny_model
from reward.run.parts import train_with

PIPELINE_SCRIPT = """
import json, sys
from transformers import pipeline
texts = json.loads(sys.stdin.read())
rm = pipeline("text-classification", model=sys.argv[1], device="cpu")
print(json.dumps([rm(t)[0]["score"] for t in texts]))
"""


def llama_with_pad():
    tokenizer = build_tiny_tokenizer()
    return tokenizer, tiny_model(tokenizer, seed=1)


def gpt2_pad_is_eos():
    tokenizer = build_gpt2_style_tokenizer()
    assert tokenizer.pad_token is None  # the case under test: no pad token of its own
    model = build_gpt2_model(tokenizer, seed=1)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    return tokenizer, model


@pytest.mark.slow
@pytest.mark.parametrize("build", [llama_with_pad, gpt2_pad_is_eos], ids=["llama-pad", "gpt2-pad-eq-eos"])
def test_training_rewards_equal_pipeline_scores(build, tmp_path):
    tokenizer, model = build()
    rows = generate_pairs(12, seed=3)
    ds, _ = tokenize_pairs(Dataset.from_list(rows), tokenizer, "explicit prompt", 1024)
    collate = PairwiseCollator(tokenizer.pad_token_id)
    precision = resolve_precision(False, False, torch.device("cpu"))
    cfg = TrainConfig(
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
        disable_tqdm=True,
        eval_strategy="no",
        logging_steps=1,
    )
    train_with(cfg, model, ds, collate=collate, precision=precision, writer=MetricsWriter(tmp_path / "m.jsonl"))

    # training-time rewards: the collated, right-padded (2B, T) batch through the training forward
    batch = collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        rewards = compute_rewards(model, batch.input_ids, batch.attention_mask).tolist()  # (2B,)
    n = len(rows)
    texts = [format_text(r["prompt"] + r["chosen"], tokenizer) for r in rows]
    texts += [format_text(r["prompt"] + r["rejected"], tokenizer) for r in rows]
    assert len(set(rewards)) > n  # distinct rewards: the comparison below is not trivial

    out = tmp_path / "rm"
    card = partial(render_model_card, cfg=cfg.to_dict(), card={"format": "explicit prompt"})
    save_reward_model(model, tokenizer, out, cfg.to_dict(), card=card)
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression"
    assert config["id2label"] == {"0": "reward"}
    assert config["pad_token_id"] == tokenizer.pad_token_id
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))

    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, str(out)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout.strip().splitlines()[-1])
    assert scores == pytest.approx(rewards, abs=1e-5)
    assert rewards[:n] != pytest.approx(rewards[n:], abs=1e-3)


def test_pad_equal_eos_reads_the_token_before_eos():
    """Documented consequence of pad == eos: the trailing EOS is treated as padding."""
    tokenizer = build_gpt2_style_tokenizer()
    model = build_gpt2_model(tokenizer)
    with_eos = tokenizer(["Name a fruit. mango" + tokenizer.eos_token], return_tensors="pt")
    without = tokenizer(["Name a fruit. mango"], return_tensors="pt")
    with torch.no_grad():
        r1 = compute_rewards(model, with_eos["input_ids"], with_eos["attention_mask"])
        r2 = compute_rewards(model, without["input_ids"], without["attention_mask"])
    assert torch.allclose(r1, r2, atol=1e-6)


def test_dedicated_pad_reads_the_eos_token(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer, seed=0).eval()
    with_eos = tiny_tokenizer(["Name a fruit. mango" + tiny_tokenizer.eos_token], return_tensors="pt")
    without = tiny_tokenizer(["Name a fruit. mango"], return_tensors="pt")
    with torch.no_grad():
        r1 = compute_rewards(model, with_eos["input_ids"], with_eos["attention_mask"])
        r2 = compute_rewards(model, without["input_ids"], without["attention_mask"])
    assert not torch.allclose(r1, r2, atol=1e-4)
