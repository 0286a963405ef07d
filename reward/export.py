"""Write the trained reward model as an ordinary Hugging Face folder that the pipeline loads, with what
it says about its own training.

    OUTPUT_DIR/
      config.json            one label ("reward"), pad_token_id, problem_type "regression", and
                             reward_format (how text became tokens) + reward_stats (mean / std)
      model.safetensors      weights (safetensors only)
      tokenizer.json, tokenizer_config.json, (chat_template.jinja)
      training_config.json   every option of the run, to reproduce (and resume) it
      README.md              model card: data, metrics, one tested snippet per consumer (reward/eval/model_card.py)

`pipeline("text-classification", model=OUTPUT_DIR)` then returns the raw reward (no sigmoid,
because of problem_type "regression") for a formatted string: the text as training formatted it.

What the folder says about training, so that every consumer can use the reward training optimised:

    reward_format   the SequenceFormat as it applied to the tokenizer, what the tokenizer adds, the
                    chat template's hash, where the head reads the reward (reward/formatting.py)
    reward_stats    mean / std of the 2N held-out rewards (RewardFunction(normalize=True))

train.py calls `choose_format` before tokenizing (and refuses a resume that would change the format),
`record_format` once the model is loaded, `reward_statistics` after the last step, and
`export_model` for the final folder and (through reward/run/checkpoints.py) every checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.batching import eval_collator
from reward.config import TrainConfig
from reward.data import CONVERSATIONAL, IMPLICIT
from reward.errors import UserError
from reward.eval.model_card import render_model_card
from reward.evaluate import evaluate
from reward.formatting import FORMAT_KEY, SequenceFormat, effective_format, format_record
from reward.loop import TrainResult
from reward.model import Precision, reward_token, unwrap

STATS_KEY = "reward_stats"  # config.json field: mean / std of the rewards on held-out data


def save_reward_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    training_config: dict[str, Any],
    card: dict[str, Any] | None = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Save weights (safetensors), tokenizer, training config and model card into `out_dir`.

    `state_dict` replaces the model's own weights (--fsdp: the full weights gathered from the shards)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(out)
    (out / "training_config.json").write_text(json.dumps(training_config, indent=2, default=str) + "\n")
    if card is not None:
        (out / "README.md").write_text(render_model_card(out, model, training_config, card))
    return out


def export_model(
    target: str | Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    training_config: dict[str, Any],
    card: dict[str, Any] | None = None,
    weights: dict[str, Any] | None = None,
) -> Path:
    """The one export, whatever trained: a LoRA model is written with its adapters merged (plus
    `adapter/`, reward/finetune/lora.py), an FSDP model from `weights` (its full weights, gathered by
    every rank: reward/parallel/plan.py `full_weights`), a plain model as it is."""
    if unwrap(model) is not model:  # a peft model
        from reward.finetune.lora import save_lora_model  # peft is an optional extra

        return save_lora_model(model, tokenizer, target, training_config, card)
    return save_reward_model(model, tokenizer, target, training_config, card, state_dict=weights)


STATS_SAMPLE = 512  # pairs scored for the reward statistics when the run had no final evaluation
COLLAPSED_STD = 1e-5  # reward std at or below this (relative to |mean| when above 1): a constant reward


def choose_format(
    cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, data_format: str, checkpoint: Path | None
) -> SequenceFormat:
    """The formatting options as they apply to this tokenizer, checked against the data, and against
    the checkpoint when resuming (a run must not change how its text becomes tokens half-way)."""
    if cfg.text_as_chat and data_format == IMPLICIT:
        raise UserError("--text_as_chat needs a prompt column (it renders the prompt as the user turn)")
    if cfg.text_as_chat and not tokenizer.chat_template:
        raise UserError("--text_as_chat needs a tokenizer with a chat template")
    chosen = effective_format(SequenceFormat(cfg.append_eos, cfg.add_special_tokens, cfg.text_as_chat), tokenizer)
    if cfg.append_eos and not chosen.append_eos and data_format != CONVERSATIONAL and not cfg.text_as_chat:
        why = "has no EOS token" if tokenizer.eos_token is None else f"appends its own EOS {tokenizer.eos_token!r}"
        print(f"tokenizer {why}: nothing more is appended")
    saved = checkpoint_format(checkpoint)
    for name in ("append_eos", "add_special_tokens", "text_as_chat"):
        if saved is not None and name in saved and saved[name] != getattr(chosen, name):
            raise UserError(
                f"--{name}: the checkpoint was trained with {str(saved[name]).lower()}; resume with the same "
                "formatting options (or start a new run)"
            )
    return chosen


def checkpoint_format(checkpoint: Path | None) -> dict | None:
    """The `reward_format` a checkpoint recorded, or None (no checkpoint, or one from before it was recorded)."""
    path = Path(checkpoint) / "config.json" if checkpoint else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get(FORMAT_KEY)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc


def record_format(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sequence_format: SequenceFormat, data_format: str
) -> None:
    """How text became tokens is part of the model: config.json `reward_format` (reward/formatting.py).
    Statistics of a reward model used as the init are not this run's: they are dropped."""
    record = format_record(sequence_format, tokenizer, data_format)
    templated = data_format == CONVERSATIONAL or sequence_format.text_as_chat
    record["reward_token"] = reward_token(model, tokenizer, templated, record["append_eos"])
    setattr(model.config, FORMAT_KEY, record)
    if hasattr(model.config, STATS_KEY):
        delattr(model.config, STATS_KEY)


def reward_statistics(
    model: PreTrainedModel,
    result: TrainResult,
    eval_ds: Dataset | None,
    train_ds: Dataset,
    cfg: TrainConfig,
    precision: Precision,
    pad_token_id: int,
) -> dict:
    """Mean and std of the 2N rewards of the final evaluation (the whole held-out split) when there was
    one, else of up to STATS_SAMPLE held-out (or, without a held-out split, training) pairs. Under FSDP
    every rank runs it: the forward gathers the shards."""
    if result.eval and "reward_std" in result.eval:
        values, source = result.eval, f"held-out split, {result.eval['pairs']} pairs"
    else:
        ds, source = (eval_ds, "held-out split") if eval_ds is not None else (train_ds, "training split sample")
        ds = ds.select(range(min(STATS_SAMPLE, len(ds))))
        values = evaluate(model, ds, eval_collator(cfg, pad_token_id, model), cfg, precision)
        source = f"{source}, {len(ds)} pairs"
    return {"mean": values["reward_mean"], "std": values["reward_std"], "count": 2 * values["pairs"], "source": source}


def collapse_problem(stats: dict, learning_rate: float) -> str | None:
    """A model whose rewards are all the same ranks nothing, however finite its loss: say so loudly.
    (A learning rate far too high saturates every hidden state; the run used to save it as a success.)"""
    if stats["std"] > COLLAPSED_STD * max(1.0, abs(stats["mean"])):
        return None
    return (
        f"the model collapsed: every reward is {stats['mean']:.6g} (std {stats['std']:.1e} over {stats['count']} "
        f"sequences of the {stats['source']}), so it cannot rank anything: check --learning_rate (this run: "
        f"{learning_rate:g}; far too high saturates the model, 0 never moves it) and the data"
    )
