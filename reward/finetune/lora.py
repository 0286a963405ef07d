"""LoRA (Hu et al. 2021): low-rank adapters on the backbone, a fully trained score head, merged export.

Every targeted Linear layer W (frozen) of the backbone gets a trainable low-rank update:

    y = W x + (alpha / r) · B A x        A: (r, d_in), B: (d_out, r), B = 0 at init

so training starts from the base model exactly. The reward head `score` is not adapted but trained
in full (peft's `modules_to_save`, which task type SEQ_CLS sets for `score` / `classifier`): it is
a fresh random (1, hidden) layer, there is no pretrained head for a low-rank update to adapt, and it
is tiny. AdamW then keeps moments for A, B and the head only (reward/loop.py skips frozen weights).

What a `--use_peft` run writes, in OUTPUT_DIR and in every checkpoint-STEP folder:

    config.json, model.safetensors   the adapters merged into W: a plain transformers model that
                                     pipeline("text-classification") loads without peft
    adapter/                         the adapters + score head alone (PeftModel.save_pretrained),
                                     to load on top of the base model; a resumed run reads it

peft is an optional extra (`pip install -e ".[peft]"`), imported only here and only when needed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.errors import UserError, first_line
from reward.export import CardWriter, FolderWriter, save_reward_model
from reward.model import unwrap

ADAPTER_DIR = "adapter"  # inside OUTPUT_DIR and each checkpoint-STEP folder
ALL_LINEAR = "all-linear"  # peft's shorthand: every Linear layer except the output head
DEFAULT_TARGETS = "default"  # peft's own choice for the architecture (a LoraConfig without target_modules)


def require_peft() -> ModuleType:
    """Import peft, or stop with a one-line UserError saying how to install it."""
    try:
        import peft
    except ImportError as exc:
        raise UserError('--use_peft needs the peft extra: pip install -e ".[peft]" (peft>=0.13)') from exc
    return peft


@dataclass(frozen=True)
class LoraOptions:
    """The adapters' options (TrainConfig's names; `pick(LoraOptions, cfg)`)."""

    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: list[str]  # ["all-linear"], ["default"] or module names


def add_lora(model: PreTrainedModel, options: LoraOptions, adapter_dir: Path | None = None) -> nn.Module:
    """Wrap `model` in a peft LoRA model: new adapters from `options`, or the saved ones in `adapter_dir`.

    Call it after gradient checkpointing is set up (ours uses use_reentrant=False, so the frozen
    embeddings need no `enable_input_require_grads`). Loading `adapter_dir` onto the same base model
    rebuilds the saved training state exactly (the resume path); its LoRA options win over `options`.
    """
    peft = require_peft()
    if adapter_dir is not None:
        return peft.PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    targets = options.lora_target_modules
    config = peft.LoraConfig(
        task_type=peft.TaskType.SEQ_CLS,  # also puts the `score` head in modules_to_save: trained in full
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules={ALL_LINEAR: ALL_LINEAR, DEFAULT_TARGETS: None}.get(targets[0], targets),  # bare string / None
    )
    try:
        return peft.get_peft_model(model, config)
    except ValueError as exc:  # e.g. no module matches the given names
        raise UserError(f"--lora_target_modules {' '.join(targets)}: {first_line(exc)}") from exc


# LoraConfig fields beyond r / alpha / dropout / targets: plain LoRA runs only at their defaults
PLAIN_LORA = tuple(
    "bias use_rslora use_dora init_lora_weights layers_to_transform fan_in_fan_out rank_pattern alpha_pattern "
    "exclude_modules modules_to_save trainable_token_indices".split()
)


def lora_options(config: Any, disable_dropout: bool = True) -> dict[str, Any]:
    """TRL's `peft_config` (a `peft.LoraConfig`) as our --use_peft options. Without target_modules
    peft picks the architecture's own ('default', e.g. q_proj and v_proj for Llama); with
    `disable_dropout` the adapters' dropout is 0, as TRL's disable_dropout leaves it."""
    peft = require_peft()
    if not isinstance(config, peft.LoraConfig):
        raise UserError(f"peft_config must be a peft.LoraConfig (LoRA is what we run), got {type(config).__name__}")
    plain = peft.LoraConfig()
    if changed := [name for name in PLAIN_LORA if getattr(config, name) != getattr(plain, name)]:
        raise UserError(
            f"peft_config: {', '.join(changed)} not supported (plain LoRA: r, lora_alpha, lora_dropout, target_modules)"
        )
    targets = config.target_modules
    if isinstance(targets, str) and targets != ALL_LINEAR:
        raise UserError(f"peft_config target_modules {targets!r}: a regular expression; give module names")
    if targets is None or isinstance(targets, str):
        targets = [targets or DEFAULT_TARGETS]
    return {
        "use_peft": True,
        "lora_r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": 0.0 if disable_dropout else config.lora_dropout,
        "lora_target_modules": sorted(targets),
    }


def describe_lora(model: nn.Module) -> str:
    """One line for the run summary: the adapter settings and how many parameters are trained."""
    config = model.peft_config["default"]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in unwrap(model).parameters())
    targets = config.target_modules
    names = sorted({name.rsplit(".", 1)[-1] for name in targets}) if not isinstance(targets, str) else [targets]
    return (
        f"LoRA r {config.r}, alpha {config.lora_alpha}, dropout {config.lora_dropout} on {', '.join(names)} | "
        f"trainable {trainable:,} of {total:,} params ({100 * trainable / total:.2f} %: adapters + score head)"
    )


def merged_copy(model: nn.Module) -> PreTrainedModel:
    """A plain transformers model with every adapter merged into its weight, W + (alpha / r) B A.

    Merges a deep copy: merging in place and un-merging afterwards would not give back W bit for
    bit in floating point, and the run goes on training after an intermediate checkpoint. The cost
    is one more copy of the weights while a checkpoint is written.
    """
    return copy.deepcopy(model).merge_and_unload()


def save_lora_model(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    training_config: dict[str, Any],
    card: CardWriter | None = None,
    final: str | Path | None = None,
) -> Path:
    """The pipeline-ready folder with merged weights (`save_reward_model`), plus `adapter/` beside it; `final`:
    where it will be once renamed into place (the card names it)."""
    out = save_reward_model(merged_copy(model), tokenizer, out_dir, training_config, card, final=final)
    model.save_pretrained(out / ADAPTER_DIR, safe_serialization=True)  # adapters + score head only
    return out


def adapter_to_resume(checkpoint: Path | None, use_peft: bool) -> Path | None:
    """The adapter folder a resumed `--use_peft` run loads (None for a fresh run); one-line errors when
    the checkpoint and the run disagree on LoRA (the weights and optimizer state would not match)."""
    if checkpoint is None:
        return None
    adapter = Path(checkpoint) / ADAPTER_DIR
    if use_peft and not adapter.is_dir():
        raise UserError(f"{checkpoint} has no {ADAPTER_DIR}/ folder: it was not saved by a --use_peft run")
    if not use_peft and adapter.is_dir():
        raise UserError(f"{checkpoint} was saved by a --use_peft run: resume it with the same --use_peft options")
    return adapter if use_peft else None


def folder_writer(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, training_config: dict[str, Any], card: CardWriter | None
) -> FolderWriter:
    """How `model`'s folder is written (the final export and every checkpoint): merged, plus `adapter/`, when it
    has LoRA adapters; as it is otherwise (reward/export.py `save_reward_model`, with its full weights under FSDP)."""
    lora = unwrap(model) is not model  # a peft model

    def write(target: Path, weights: dict | None = None, final: Path | None = None) -> Path:
        if lora:
            return save_lora_model(model, tokenizer, target, training_config, card, final)
        return save_reward_model(model, tokenizer, target, training_config, card, weights, final)

    return write
