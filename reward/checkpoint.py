"""Write the trained reward model as an ordinary Hugging Face folder that the pipeline loads.

    OUTPUT_DIR/
      config.json            one label ("reward"), pad_token_id, problem_type "regression", and
                             reward_format (how text became tokens) + reward_stats (mean / std)
      model.safetensors      weights (safetensors only)
      tokenizer.json, tokenizer_config.json, (chat_template.jinja)
      training_config.json   every option of the run, to reproduce it
      README.md              model card: data, metrics, one tested snippet per consumer (reward/model_card.py)

`pipeline("text-classification", model=OUTPUT_DIR)` then returns the raw reward (no sigmoid,
because of problem_type "regression") for a formatted string: the text as training formatted it
(`reward_format`; by default plus the EOS token, see `reward/formatting.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.model_card import render_model_card


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
