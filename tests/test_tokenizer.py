"""reward/tokenizer.py: the model source's checks, the tokenizer's options in TRL's order (eos / pad token,
chat template, pad := eos), and what each change prints. End to end through train.py:
tests/test_loading_options.py."""

from __future__ import annotations

import json

import pytest
from conftest import build_gpt2_style_tokenizer

from reward.errors import UserError
from reward.presets.tiny import build_tiny_tokenizer
from reward.tokenizer import (
    TokenizerOptions,
    check_model_source,
    ensure_pad_token,
    folder_problem,
    load_tokenizer,
    prepare_tokenizer,
)


def test_a_tokenizer_without_pad_gets_pad_eos_and_says_where_the_reward_is_read():
    tokenizer = build_gpt2_style_tokenizer()
    assert tokenizer.pad_token is None
    notes = prepare_tokenizer(tokenizer, TokenizerOptions(), from_checkpoint=False)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert notes == [
        "tokenizer has no pad token: using eos '<|endoftext|>' as pad (as TRL); "
        "the reward is read before a trailing EOS"
    ]
    assert prepare_tokenizer(tokenizer, TokenizerOptions(), from_checkpoint=False) == []  # nothing left to change


def test_eos_and_pad_options_take_tokens_of_the_vocabulary_only():
    tokenizer = build_tiny_tokenizer()
    notes = prepare_tokenizer(tokenizer, TokenizerOptions(eos_token="<pad>", pad_token="<s>"), from_checkpoint=False)
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<pad>", "<s>")
    assert notes == ["tokenizer eos_token: '<pad>'", "tokenizer pad_token: '<s>'"]
    with pytest.raises(UserError, match="--pad_token '<nope>' is not in the tokenizer's vocabulary"):
        prepare_tokenizer(tokenizer, TokenizerOptions(pad_token="<nope>"), from_checkpoint=False)


def test_a_jinja_chat_template_is_taken_but_not_again_from_a_checkpoint(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% endfor %}")
    options = TokenizerOptions(chat_template_path=str(template))
    tokenizer = build_tiny_tokenizer()
    notes = prepare_tokenizer(tokenizer, options, from_checkpoint=False)
    assert tokenizer.chat_template == template.read_text()
    assert notes == [f"chat template from {template} (EOS '</s>', 0 token(s) added)"]
    resumed = build_tiny_tokenizer()  # a checkpoint's tokenizer has its template already: left as saved
    assert prepare_tokenizer(resumed, options, from_checkpoint=True) == []
    assert resumed.chat_template != template.read_text()


def test_template_tokens_that_lora_cannot_train_are_refused(tmp_path):
    source = build_tiny_tokenizer()
    source.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    source.chat_template = "{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}"
    source.save_pretrained(tmp_path / "source")
    options = TokenizerOptions(chat_template_path=str(tmp_path / "source"), use_peft=True)
    with pytest.raises(UserError, match="added 1 token.s.: under LoRA"):
        prepare_tokenizer(build_tiny_tokenizer(), options, from_checkpoint=False)


def test_no_pad_and_no_eos_is_a_user_error():
    tokenizer = build_gpt2_style_tokenizer()
    tokenizer.eos_token = None
    with pytest.raises(UserError, match="neither a pad nor an eos token"):
        ensure_pad_token(tokenizer)


def test_a_path_that_is_not_a_folder_is_named_before_any_hub_lookup(tmp_path):
    for name in ("./missing", "/nowhere/model", str(tmp_path / "absent")):
        with pytest.raises(UserError, match="no such model folder"):
            check_model_source(name)
    check_model_source("org/model")  # a Hub id: left to the Hub (offline in tests)
    with pytest.raises(UserError, match="no such model folder"):
        load_tokenizer("./missing")


def test_the_first_damaged_file_of_a_model_folder_is_named(tmp_path):
    build_tiny_tokenizer().save_pretrained(tmp_path)
    assert folder_problem(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    assert folder_problem(tmp_path).startswith(f"{tmp_path / 'tokenizer_config.json'}: not valid JSON")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({}))
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 10)
    assert folder_problem(tmp_path).startswith(f"{tmp_path / 'model.safetensors'}: damaged safetensors file")
