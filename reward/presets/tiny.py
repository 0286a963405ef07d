"""The `tiny` preset: a small random-init Llama-style reward model plus a tokenizer trained offline.

Nothing here touches the network: the tokenizer is a byte-level BPE trained in about a second with
the `tokenizers` library on the generated task's text (byte-level, so any other text still
tokenizes), and the model is `LlamaForSequenceClassification` built from a config. It is what
`python train.py` uses by default and what the tests train.

The core loads models and tokenizers by name and knows no preset: the recipe (and the Python API)
resolve the name `tiny` here, with `tokenizer_for` and `model_config_for`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from reward.model import load_model
from reward.presets.synthetic import generate_pairs
from reward.tokenizer import load_tokenizer

TINY = "tiny"

# A minimal chat template in the usual shape: role header, content, end-of-turn token. BOS comes from
# the template, so `apply_chat_template(tokenize=True)` does not add a second one.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A Llama-style byte-level BPE tokenizer: `<pad>`=0, `<s>`=1 (added in front), `</s>`=2.

    >>> tok = build_tiny_tokenizer()
    >>> tok("Name a fruit.")["input_ids"][0] == tok.bos_token_id
    True
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [r["prompt"] + r["chosen"] + r["rejected"] for r in generate_pairs(2000, seed=1234)]
    corpus += ["system", "user", "assistant", "<|", "|>"]
    tok.train_from_iterator(corpus, trainer)
    # Like Llama tokenizers: BOS is prepended by `tokenizer(text)`, EOS is not appended.
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )


def tiny_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """A 2-layer Llama (hidden 256, 8 heads, ~1.8M parameters) with one output label.

    Sized so the generated task is learned reliably: with hidden 128 / 4 heads the run sat at chance
    for 300-600+ steps depending on the seed; this size leaves the plateau by step ~250 for every
    seed tried (1, 2, 42) at the default lr 1e-4 + 10 % warmup.
    """
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        num_labels=1,
    )


def tokenizer_for(name: str, trust_remote_code: bool = False, revision: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer of a model name: built for `tiny`, else loaded (reward/tokenizer.py)."""
    return build_tiny_tokenizer() if name == TINY else load_tokenizer(name, trust_remote_code, revision)


def model_config_for(name: str, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig | None:
    """The config `tiny` is built from (reward/model.py `load_model(config=...)`); None for a name to load."""
    return tiny_config(tokenizer) if name == TINY else None


def tiny_model(tokenizer: PreTrainedTokenizerBase, **options: Any) -> PreTrainedModel:
    """The `tiny` reward model, fresh from its config: `load_model`'s options (seed, dtype, ...) apply.

    >>> tiny_model(build_tiny_tokenizer(), seed=0).num_parameters() > 1_000_000
    True
    """
    return load_model(TINY, tokenizer, config=tiny_config(tokenizer), **options)


def save_tiny_policy(out: str | Path, seed: int = 0) -> Path:
    """A random causal LM of the tiny family, smaller (hidden 64), with the tiny tokenizer and its chat
    template: the GRPO policy of the offline tests and examples/grpo_step.py."""
    from transformers import LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer)
    shape = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2}
    config.update({**shape, "head_dim": 16, "max_position_embeddings": 512})
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Path(out)
