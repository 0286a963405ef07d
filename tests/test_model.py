"""Model loading (seeded head, dropout off, pad policy), optimizer groups, schedule, clipping, model card."""

import pytest
import torch
from conftest import build_gpt2_style_tokenizer
from transformers import GPT2Config, GPT2Model, LlamaModel

from reward.errors import UserError
from reward.model import load_model
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
