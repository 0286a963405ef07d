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
    reward_stats    mean / std of the 2N held-out rewards (RewardFunction(normalize=True); reward/evaluate.py)

The recipe calls `record_format` once the model is loaded, `record_statistics` after the last step,
and `save_reward_model` for the final folder and (through reward/run/checkpoints.py) every
checkpoint. A LoRA model is written by reward/finetune/lora.py (merged weights, plus `adapter/`) on
top of `save_reward_model`; an FSDP model passes its gathered weights as `state_dict`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.data import CONVERSATIONAL
from reward.formatting import FORMAT_KEY, SequenceFormat, format_record
from reward.model import reward_token

STATS_KEY = "reward_stats"  # config.json field: mean / std of the rewards on held-out data

# the model card's text for a folder: (the folder, the model written there) -> README.md (reward/eval/model_card.py)
CardWriter = Callable[[Path, PreTrainedModel], str]
# writes a model's whole folder into a path: (path, an FSDP model's gathered full weights or None, where the
# folder will live once renamed into place, for its card: None for `path` itself) -> path
# (the recipe's: `save_reward_model`, or reward/finetune/lora.py's merged LoRA model)
FolderWriter = Callable[[Path, "dict | None", "Path | None"], Path]


def save_reward_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    training_config: dict[str, Any],
    card: CardWriter | None = None,
    state_dict: dict[str, Any] | None = None,
    final: str | Path | None = None,
) -> Path:
    """Save weights (safetensors), tokenizer, training config and model card into `out_dir`.

    `state_dict` replaces the model's own weights (--fsdp: the full weights gathered from the shards).
    `final` is where the folder will be once renamed into place (reward/run writes into a temporary folder
    first): the card's title and snippets name it, not the temporary one."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(out)
    config = json.dumps(training_config, indent=2, default=str) + "\n"
    (out / "training_config.json").write_text(config, encoding="utf-8")
    if card is not None:
        (out / "README.md").write_text(card(Path(final or out), model), encoding="utf-8")
    return out


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


def record_statistics(model: PreTrainedModel, stats: dict) -> None:
    """The trained rewards' mean and std (reward/evaluate.py `reward_statistics`) into config.json, for
    consumers that normalise (RewardFunction(normalize=True), score.py --normalize)."""
    setattr(model.config, STATS_KEY, stats)
