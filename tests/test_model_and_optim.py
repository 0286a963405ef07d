"""Model loading (seeded head, dropout off, pad policy), optimizer groups, schedule, clipping, model card."""

import re
import subprocess
import sys

import pytest
import torch
from conftest import build_gpt2_style_tokenizer
from transformers import GPT2Config, GPT2Model, LlamaModel

from reward.config import TrainConfig
from reward.errors import UserError
from reward.eval.model_card import example_of
from reward.export import save_reward_model
from reward.loop import apply_update, build_optimizer, build_scheduler
from reward.model import load_model, resolve_precision
from reward.presets.tiny import tiny_config
from reward.tokenizer import ensure_pad_token


def test_score_head_of_a_pretrained_backbone_is_seeded(tiny_tokenizer, tmp_path):
    """A base model without a `score` head gets a fresh one: same seed, same head."""
    LlamaModel(tiny_config(tiny_tokenizer)).save_pretrained(tmp_path)
    heads = [load_model(str(tmp_path), tiny_tokenizer, seed=s).score.weight.detach().clone() for s in (3, 3, 4)]
    assert torch.equal(heads[0], heads[1])
    assert not torch.equal(heads[0], heads[2])
    model = load_model(str(tmp_path), tiny_tokenizer, seed=3)
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"
    assert model.config.pad_token_id == tiny_tokenizer.pad_token_id


def test_dropout_is_disabled(tmp_path):
    tokenizer = build_gpt2_style_tokenizer()
    ensure_pad_token(tokenizer)
    GPT2Model(
        GPT2Config(
            vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5
        )
    ).save_pretrained(tmp_path)
    model = load_model(str(tmp_path), tokenizer, seed=0).train()
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # no noise in train mode
    kept = load_model(str(tmp_path), tokenizer, seed=0, disable_dropout=False).train()
    assert not torch.equal(kept(input_ids=ids).logits, kept(input_ids=ids).logits)


def test_missing_model_folder_and_tokenizer_without_pad_or_eos(tiny_tokenizer):
    with pytest.raises(UserError, match="no such model folder"):
        load_model("./does-not-exist", tiny_tokenizer)
    tokenizer = build_gpt2_style_tokenizer()
    tokenizer.eos_token = None
    with pytest.raises(UserError, match="neither a pad nor an eos token"):
        ensure_pad_token(tokenizer)


def test_no_weight_decay_on_biases_and_norms(tiny_tokenizer):
    model = load_model("tiny", tiny_tokenizer)
    decay, no_decay = build_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all("norm" in names[id(p)] for p in no_decay["params"])  # Llama has no biases
    assert {names[id(p)] for p in decay["params"]} >= {"score.weight", "model.embed_tokens.weight"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("linear", [0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8]),  # warmup 2 steps, then (10 - s) / 8
        ("cosine", [0.0, 0.5, 1.0, 0.9619, 0.8536, 0.6913]),  # (1 + cos(π (s - 2) / 8)) / 2
    ],
)
def test_warmup_then_schedule(kind, expected, tiny_tokenizer):
    model = load_model("tiny", tiny_tokenizer)
    cfg = TrainConfig(learning_rate=1.0, warmup_ratio=0.2, lr_scheduler_type=kind)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps=10)
    lrs = []
    for _ in expected:
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx(expected, abs=1e-4)
    assert TrainConfig(warmup_steps=3, warmup_ratio=0.5).warmup_steps == 3


def test_clipping_reports_the_norm_before_and_clips_to_max(tiny_tokenizer):
    model = load_model("tiny", tiny_tokenizer)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.1)
    expected = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())).item()
    clipped = []

    class Recorder(torch.optim.SGD):  # records the gradient norm the update sees
        def step(self, closure=None):
            clipped.append(torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())).item())

    optimizer = Recorder(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    norm = apply_update(model, optimizer, scheduler, resolve_precision(False, False, torch.device("cpu")), 1.0)
    assert norm == pytest.approx(expected, rel=1e-4) and expected > 1  # fp32 sums of 0.5M squares
    assert clipped[0] == pytest.approx(1.0, rel=1e-4)


@pytest.mark.slow
def test_model_card_snippet_runs_and_returns_the_raw_reward(tiny_tokenizer, tmp_path):
    model = load_model("tiny", tiny_tokenizer, seed=5)
    out = tmp_path / "rm"
    save_reward_model(model, tiny_tokenizer, out, {"model_name_or_path": "tiny"}, card={"metrics": {"x": 1.0}})
    card = (out / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    printed = float(proc.stdout.strip().splitlines()[-1])
    prompt, response = example_of(None)  # the card's example when it is given none
    ids = tiny_tokenizer(prompt + response + tiny_tokenizer.eos_token, return_tensors="pt")
    with torch.no_grad():
        assert printed == pytest.approx(model(**ids).logits.item(), abs=1e-5)  # raw: no sigmoid applied
