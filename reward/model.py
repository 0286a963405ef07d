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
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from reward.errors import UserError, first_line
from reward.presets.tiny import TINY, build_tiny_tokenizer, tiny_config

REWARD_LABEL = "reward"
# Bidirectional encoders: their classification head pools the first token ([CLS] / <s>), and every
# token sees the whole sequence, so nothing can be packed or shared (reward/fast/packed_forward.py).
ENCODER_MODEL_TYPES = frozenset(
    "albert bert camembert deberta deberta-v2 distilbert electra modernbert mpnet roberta xlm-roberta".split()
)


def check_model_source(name: str) -> None:
    """A path-like name that is not a folder is a typo, not a Hub id: say so before any lookup."""
    if not os.path.isdir(name) and (name.startswith((".", "/", "~")) or os.path.exists(name)):
        raise UserError(f"{name}: no such model folder")


LOAD_ERRORS = (OSError, ValueError, SafetensorError)  # ValueError covers JSON and UTF-8 decoding errors
JSON_FILES = (
    "config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "generation_config.json",
)


def folder_problem(folder: str | Path) -> str | None:
    """The first file of a model folder that cannot be read, and why: what a loading error should name
    (transformers' own message often names neither the file nor the folder)."""
    path = Path(folder)
    if not path.is_dir():
        return None
    for name in JSON_FILES:
        if (path / name).is_file():
            try:
                json.loads((path / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                return f"{path / name}: not valid JSON ({first_line(exc)})"
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(weights, "pt"):
                pass
        except (OSError, SafetensorError) as exc:
            return f"{weights}: damaged safetensors file ({first_line(exc)})"
    return None


def load_tokenizer(name: str, trust_remote_code: bool = False, revision: str | None = None) -> PreTrainedTokenizerBase:
    if name == TINY:
        return build_tiny_tokenizer()
    check_model_source(name)
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
    except LOAD_ERRORS as exc:
        where = "" if os.path.isdir(name) else "no local folder of that name, and from the Hub: "
        raise UserError(
            folder_problem(name) or f"{name}: could not load a tokenizer ({where}{first_line(exc)})"
        ) from exc


def take_chat_template(tokenizer: PreTrainedTokenizerBase, path: str, trust_remote_code: bool = False) -> str:
    """TRL's `chat_template_path`: a .jinja/.j2 file becomes the chat template; a tokenizer folder or Hub
    id gives its template, its added tokens and its EOS (trl/chat_template_utils.py
    `clone_chat_template`; `match_vocabulary` then grows the embeddings). Returns what it did, in words."""
    if os.path.isfile(path) and path.endswith((".jinja", ".j2")):
        tokenizer.chat_template = Path(path).read_text(encoding="utf-8")
        return f"chat template from {path}"
    if os.path.isfile(path):
        raise UserError(f"--chat_template_path {path}: a template file must end in .jinja or .j2")
    source = load_tokenizer(path, trust_remote_code)
    if not source.chat_template:
        raise UserError(f"--chat_template_path {path}: that tokenizer has no chat template")
    tokenizer.chat_template = source.get_chat_template()
    new = [t for t in source.added_tokens_decoder.values() if t.content not in tokenizer.get_vocab()]
    tokenizer.add_tokens(new)
    if source.eos_token is not None:
        tokenizer.eos_token = source.eos_token
    return f"chat template, EOS {tokenizer.eos_token!r} and {len(new)} added token(s) from {path}"


def match_vocabulary(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """After `take_chat_template`: room in the embeddings for the added tokens (new rows drawn at random,
    as TRL's resize; TRL also rounds the size up to a multiple of 64, which changes no reward) and the
    tokenizer's EOS in the config."""
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    model.config.eos_token_id = tokenizer.eos_token_id


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give the tokenizer a pad token if it has none (pad := eos). Returns True if it did."""
    if tokenizer.pad_token is not None:
        return False
    if tokenizer.eos_token is None:
        raise UserError(
            f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token; "
            "set tokenizer.pad_token (and eos_token) before training"
        )
    tokenizer.pad_token = tokenizer.eos_token
    return True


def load_model(
    name: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
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
    `from_pretrained` as they are (TRL's `model_init_kwargs`).

    The random `score` head is drawn right after `torch.manual_seed(seed)`, so the same seed gives
    the same initial reward model.
    """
    torch.manual_seed(seed)
    loading = {"attn_implementation": attn_implementation} if attn_implementation else {}
    if name == TINY:
        if init_kwargs:
            raise UserError("--model_init_kwargs go to from_pretrained; the tiny preset is built, not loaded")
        model = AutoModelForSequenceClassification.from_config(tiny_config(tokenizer), **loading)
    else:
        check_model_source(name)
        try:
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
        except LOAD_ERRORS as exc:
            problem = (
                folder_problem(name) or f"{name}: could not load a sequence-classification model ({first_line(exc)})"
            )
            raise UserError(problem) from exc
    ready_for_reward(model, tokenizer, disable_dropout)
    return model if dtype == "auto" else model.to(getattr(torch, dtype))  # the tiny preset's "auto": float32


def loading_options(cfg: Any) -> dict[str, Any]:
    """`load_model`'s keyword arguments from a TrainConfig (the recipe and RewardTrainer load alike)."""
    names = ("seed", "disable_dropout", "trust_remote_code", "dtype", "attn_implementation")
    return {**{name: getattr(cfg, name) for name in names}, "init_kwargs": cfg.model_init_kwargs}


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


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft model (with the LoRA layers in it); `model` itself otherwise.

    Its `.base_model` is the backbone (e.g. LlamaModel), its `.score` peft's wrapper of the head.
    """
    return model.get_base_model() if hasattr(model, "get_base_model") else model


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
