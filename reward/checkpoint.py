"""Write the trained reward model as an ordinary Hugging Face folder that the pipeline loads.

    OUTPUT_DIR/
      config.json            one label ("reward"), pad_token_id, problem_type "regression"
      model.safetensors      weights (safetensors only)
      tokenizer.json, tokenizer_config.json, (chat_template.jinja)
      training_config.json   every option of the run, to reproduce it
      README.md              model card: data, metrics and a usage snippet that works

`pipeline("text-classification", model=OUTPUT_DIR)` then returns the raw reward (no sigmoid,
because of problem_type "regression") for a formatted string: the text plus the EOS token, exactly
what training tokenized (see `reward/formatting.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

MODEL_CARD = """---
library_name: transformers
pipeline_tag: text-classification
tags: [reward-model, bradley-terry]
---

# Reward model: {name}

A Bradley–Terry reward model (`{arch}`, one output: the reward) trained with
`reward` (a from-scratch PyTorch Bradley–Terry trainer) from `{base}` on `{data}` ({fmt} format,
{pairs} training pairs).

| metric | value |
|---|---|
{metrics_rows}

## Use

The reward is read at the last token; training formatted each text as prompt + response + EOS,
so append the EOS token (or use a conversation's chat template) when you score:

```python
from transformers import pipeline

rm = pipeline("text-classification", model="{path}")
text = {example!r} + rm.tokenizer.eos_token
print(rm(text)[0]["score"])  # raw reward: higher = preferred
```

For conversational data, render with the chat template and do not add special tokens twice:

```python
text = rm.tokenizer.apply_chat_template(messages, tokenize=False)
print(rm(text, add_special_tokens=False)[0]["score"])
```

Or, with the project installed: `python score.py --model {path} --input FILE.jsonl`.
"""


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


def render_model_card(out: Path, model: PreTrainedModel, cfg: dict[str, Any], card: dict[str, Any]) -> str:
    metrics = card.get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    return MODEL_CARD.format(
        name=out.name,
        arch=type(model).__name__,
        base=cfg.get("model_name_or_path"),
        data=cfg.get("dataset_name"),
        fmt=card.get("format", "?"),
        pairs=card.get("train_pairs", "?"),
        metrics_rows=rows or "| (none) | |",
        path=str(out),
        example=card.get("example", "Name a fruit. Sure: mango."),
    )
