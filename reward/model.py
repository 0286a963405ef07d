"""Load or build the reward model (`AutoModelForSequenceClassification`, one label), read its rewards,
and the device and precision it computes in.

Pad-token policy (the same as TRL): a tokenizer without a pad token gets `pad := eos`, and the
model config's `pad_token_id` is set from the tokenizer. The sequence-classification head reads the
reward at the rightmost token that is not `pad_token_id`, so with pad == eos the reward is read at
the token *before* the trailing EOS. That is consistent everywhere (training, `score.py` and
`pipeline("text-classification")` all use the model's own forward), which is what matters: the
reward we train is the reward the saved model returns. A tokenizer with a dedicated pad token (the
`tiny` preset has one) reads it at the EOS itself.

Where and in what precision it computes (`pick_device`, `resolve_precision` -> `Precision`): fp32,
bf16 autocast (CPU or GPU), or fp16 autocast + GradScaler (GPU). With the default `--dtype float32`
weights and optimizer state stay float32 in every mode (mixed precision, not half-precision
training): autocast runs the matmuls in 16 bits, and the loss is always computed in float32
(`reward/loss.py`). fp16 needs loss scaling because its small exponent range flushes tiny gradients
to zero; bf16 has float32's exponent range and does not. `--dtype bfloat16` (or `auto` on a bf16
checkpoint) loads the weights themselves in 16 bits, as TRL does when `model_init_kwargs` says so:
half the memory, AdamW's moments in bf16 too, updates rounded to bf16 (small ones can vanish);
the rewards are still cast to float32 before the loss.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from reward.errors import UserError, first_line
from reward.tokenizer import LOAD_ERRORS, check_model_source, folder_problem

REWARD_LABEL = "reward"
# Bidirectional encoders: their classification head pools the first token ([CLS] / <s>), and every
# token sees the whole sequence, so nothing can be packed or shared (reward/fast/packed_forward.py).
ENCODER_MODEL_TYPES = frozenset(
    "albert bert camembert deberta deberta-v2 distilbert electra modernbert mpnet roberta xlm-roberta".split()
)


def match_vocabulary(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """Room in the embeddings for tokens the tokenizer added (`--chat_template_path`: new rows drawn at
    random, as TRL's resize; TRL also rounds the size up to a multiple of 64, which changes no reward),
    and the tokenizer's EOS in the config. Returns how many rows were added."""
    added = len(tokenizer) - model.get_input_embeddings().num_embeddings
    if added > 0:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer.eos_token_id is not None:
        model.config.eos_token_id = tokenizer.eos_token_id
    return max(added, 0)


def trainable_problem(model: nn.Module) -> str | None:
    """Why a model (loaded, or handed over by the Python API) cannot be trained here, or None.

    A causal LM (one logit per vocabulary entry and token) or a base model (no logits) would fail in the loss
    after training started; a class named *ForSequenceClassification (every transformers one, a remote-code
    model's, a subclass of either) reads one score per sequence.

    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> print(trainable_problem(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2))))  # doctest: +ELLIPSIS
    GPT2LMHeadModel is not a sequence-classification model ...: load it with AutoModelForSequenceClassification...
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES as HEADS

    if hasattr(model, "peft_config"):
        return "a peft model: pass the base model with peft_config= (RewardTrainer) or --use_peft"
    if not any(kind.__name__.endswith("ForSequenceClassification") for kind in type(model).__mro__):
        name, model_type = type(model).__name__, getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in HEADS:
            return (
                f"{name} is not a sequence-classification model, and transformers has none for model_type "
                f"{model_type!r}: a reward model reads one score per sequence (a *ForSequenceClassification class)"
            )
        return (
            f"{name} is not a sequence-classification model (a reward model reads one score per sequence): "
            "load it with AutoModelForSequenceClassification.from_pretrained(name, num_labels=1)"
        )
    if getattr(model.config, "num_labels", 1) != 1:
        labels = model.config.num_labels
        return f"the model has num_labels={labels}: a reward model has one output (load it with num_labels=1)"
    if "float16" in weights_dtype(model).split("/"):
        return (
            "float16 weights: AdamW's moments underflow in float16 and its updates become inf; use --dtype bfloat16, "
            "or float32 weights with --fp16 (fp16 compute, float32 weights)"
        )
    return None


def load_model(
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    config: PretrainedConfig | None = None,
    seed: int = 42,
    disable_dropout: bool = True,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    revision: str | None = None,
    attn_implementation: str | None = None,
    init_kwargs: dict | None = None,
) -> PreTrainedModel:
    """A one-label sequence-classification model, its weights in `dtype` (float32, bfloat16, float16
    or auto: the checkpoint's), whose config is ready for the pipeline. `init_kwargs` go to
    `from_pretrained` as they are (TRL's `model_init_kwargs`). With `config`, the model is built from it
    with fresh random weights instead of loading `name`'s (the `tiny` preset: reward/presets/tiny.py).

    The random `score` head is drawn right after `torch.manual_seed(seed)`, so the same seed gives
    the same initial reward model.
    """
    torch.manual_seed(seed)
    loading = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if config is not None and init_kwargs:
        raise UserError(f"--model_init_kwargs go to from_pretrained; {name} is built from a config, not loaded")
    if config is None:
        check_model_source(name)
    try:
        if config is not None:
            model = AutoModelForSequenceClassification.from_config(config, **loading)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                name,
                num_labels=1,
                trust_remote_code=trust_remote_code,
                dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                revision=revision,
                use_safetensors=True,
                **loading,
                **(init_kwargs or {}),
            )
    except RuntimeError as exc:
        if "mismatch" not in str(exc).lower():
            raise
        raise UserError(
            f"{name}: its classification head does not have exactly 1 label; a reward model needs one "
            "output (start from the base model, or from a reward model with num_labels=1)"
        ) from exc
    # the backstops of what preflight checks (reward/run/loading.py): a key, an attention it could not vouch for
    except TypeError as exc:  # the model's __init__ got a key of --model_init_kwargs it does not take
        key = re.search(r"keyword argument '(\w+)'", str(exc))
        if not key or key[1] not in (init_kwargs or {}):
            raise
        raise UserError(f"--model_init_kwargs: {name} does not take {key[1]!r} ({first_line(exc)})") from exc
    except (*LOAD_ERRORS, ImportError) as exc:  # ImportError: e.g. flash_attention_2 without its package
        text, attention = str(exc).lower(), (attn_implementation or "").lower()
        if attention and any(word in text for word in (attention, "attention impl", "flashattention")):
            raise UserError(f"--attn_implementation {attn_implementation}: {first_line(exc)}") from exc
        problem = folder_problem(name) or f"{name}: could not load a sequence-classification model ({first_line(exc)})"
        raise UserError(problem) from exc
    ready_for_reward(model, tokenizer, disable_dropout)
    if config is not None and dtype != "auto":  # built in float32; from_pretrained loaded the others in `dtype`
        model.to(getattr(torch, dtype))
    return model


def ready_for_reward(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, disable_dropout: bool) -> None:
    """What every reward model gets, loaded here or handed over (RewardTrainer(model=...)): the config
    the pipeline needs and, as in TRL, no dropout."""
    configure_for_reward(model, tokenizer)
    if disable_dropout:
        turn_off_dropout(model)


def configure_for_reward(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Config fields that make the saved folder score raw rewards in `pipeline(...)`.

    - `pad_token_id`: the head needs it to find each sequence's last token.
    - one label: otherwise `num_labels` defaults to 2 and the (1, hidden) head will not load.
    - `problem_type="regression"`: the pipeline then applies no sigmoid and returns the raw reward.
    """
    model.config.pad_token_id = tokenizer.pad_token_id
    if hasattr(model.config, "get_text_config"):
        model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
    model.config.id2label = {0: REWARD_LABEL}
    model.config.label2id = {REWARD_LABEL: 0}
    model.config.problem_type = "regression"


def is_encoder(model: PreTrainedModel) -> bool:
    return model.config.model_type in ENCODER_MODEL_TYPES


def reward_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, templated: bool, append_eos: bool) -> str:
    """Where the model's own head reads the reward, in words (recorded in config.json `reward_format`).

    Decoder heads (`XxxForSequenceClassification`, GenericForSequenceClassification) take the rightmost
    token whose id is not pad_token_id; with pad == eos that is the token before a trailing EOS.
    Encoder heads pool the first token ([CLS]), ModernBERT optionally the mean of all tokens.
    `templated`: the sequences are chat-template renderings; `append_eos`: plain text got an EOS.
    """
    if is_encoder(model):
        if getattr(model.config, "classifier_pooling", "cls") == "mean":
            return "the mean over all tokens (ModernBERT classifier_pooling='mean')"
        return "the first token ([CLS]), through the model's pooler"
    last = "the last token that is not the pad token"
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == tokenizer.eos_token_id:
        return f"{last}; pad == eos, so the token before a trailing EOS"
    if templated:
        return f"{last}: the chat template's last token"
    return f"{last}: {'the appended EOS' if append_eos else 'the last text token (no EOS appended)'}"


def position_limit(model: PreTrainedModel) -> int | None:
    """The longest sequence a model with learned absolute position embeddings takes (BERT 512, GPT-2 1024),
    or None when positions are computed (RoPE: no table to run past)."""
    n = getattr(model.config, "max_position_embeddings", None)
    for name, module in model.named_modules():
        is_table = isinstance(module, nn.Embedding) and module.num_embeddings == n
        if is_table and ("position" in name or name.endswith("wpe")):
            # RoBERTa numbers positions from padding_idx + 1: 514 embeddings hold 512 tokens
            return n - (module.padding_idx + 1 if module.padding_idx is not None else 0)
    return None


def turn_off_dropout(model: nn.Module) -> None:
    """Zero every dropout: `nn.Dropout` modules and the functional attention-dropout floats.

    Dropout makes chosen and rejected see different noise in the same step, which adds variance
    to Δ for no benefit in reward modelling; TRL disables it too.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for attr in ("attention_dropout", "dropout"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)


def compute_rewards(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One scalar reward per row, as float32.

    input_ids, attention_mask: (N, T) right-padded -> rewards: (N,)
    """
    # no KV cache: nothing is generated, and building one costs time and memory in every forward
    # (only decoder configs have the switch; encoders such as BERT/DeBERTa take no such argument)
    no_cache = {"use_cache": False} if getattr(model.config, "use_cache", None) is not None else {}
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **no_cache).logits  # (N, 1)
    return logits.squeeze(-1).float()  # (N,)


def model_device(model: nn.Module) -> torch.device:
    """Where the model computes: its input embeddings' device (under FSDP, that of this process's shard)."""
    return model.get_input_embeddings().weight.device


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft model (with the LoRA layers in it); `model` itself otherwise.

    Its `.base_model` is the backbone (e.g. LlamaModel), its `.score` peft's wrapper of the head.
    """
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks: the modules whose class HF lists in `_no_split_modules` (e.g.
    LlamaDecoderLayer, GPT2Block), the units FSDP shards and `--torch_compile` compiles."""
    names = set(getattr(unwrap(model), "_no_split_modules", None) or [])
    return [module for module in model.modules() if type(module).__name__ in names]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weights_dtype(model: nn.Module) -> str:
    """The dtype(s) the weights are stored in, e.g. 'float32' or 'bfloat16' (`--dtype`)."""
    return "/".join(sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()}))


# --- where and in what precision the model computes -----------------------------------------------
@dataclass
class Precision:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: plain float32
    scaler: torch.amp.GradScaler | None  # fp16 only

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}[
            self.autocast_dtype
        ]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def pick_device(use_cpu: bool = False) -> torch.device:
    """CUDA when present (unless `use_cpu`): this process's GPU under torchrun (LOCAL_RANK), else CPU."""
    if torch.cuda.is_available() and not use_cpu:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def resolve_precision(bf16: bool, fp16: bool, device: torch.device) -> Precision:
    if bf16 and fp16:
        raise UserError("--bf16 and --fp16 are mutually exclusive; pick one")
    if fp16:
        if device.type != "cuda":
            raise UserError("--fp16 needs a CUDA GPU (fp16 autocast + gradient scaler); on CPU use --bf16 or fp32")
        return Precision(device, torch.float16, torch.amp.GradScaler("cuda"))
    if bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--bf16: this GPU does not support bfloat16; use --fp16")
        return Precision(device, torch.bfloat16, None)
    return Precision(device, None, None)
