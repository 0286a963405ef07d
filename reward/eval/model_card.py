"""The model card (README.md of a saved folder): what was trained, how its text was formatted, and one
snippet per consumer — pipeline, TRL GRPO (with `reward.RewardFunction` and with the folder path),
PPO-style scoring of token ids, a served model (`reward.RemoteRewardFunction`) — each written for
this model's recorded format. Every snippet is executed by tests/test_model_card.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from reward.data import CONVERSATIONAL
from reward.formatting import FORMAT_KEY, as_messages, describe_format, read_format

FRONT_MATTER = """---
library_name: transformers
pipeline_tag: text-classification
tags: [reward-model, bradley-terry]
---
"""

# one line per list entry (so that no line of this module reads as an import of trl: it never runs here)
GRPO_SNIPPET = "\n".join(
    [
        "```python",
        "import torch",
        "from datasets import Dataset",
        "from trl import GRPOConfig, GRPOTrainer",
        "{extra_import}",
        'policy = "Qwen/Qwen2.5-0.5B-Instruct"  # your policy model',
        'prompts = Dataset.from_dict({{"prompt": [{prompt!r}] * 4}})',
        'args = GRPOConfig(output_dir="grpo-run", max_steps=1, per_device_train_batch_size=4, num_generations=4,',
        '                  max_completion_length=16, bf16=torch.cuda.is_available(), report_to="none")',
        "trainer = GRPOTrainer(model=policy, reward_funcs={reward_funcs}, args=args, train_dataset=prompts)",
        "trainer.train()",
        "```",
    ]
)


def card_facts(data: Any, train_pairs: int, metrics: dict | None = None, warning: str | None = None) -> dict:
    """What the card says about a run of `data` (reward.data.PreferenceData): its format, size, metrics, an
    example row for the snippets, a warning (a collapsed model), and whether its pairs had a strength."""
    example = (data.test if data.test is not None and len(data.test) else data.train)[0]
    return {
        "format": data.format,
        "train_pairs": train_pairs,
        "metrics": metrics or {},
        "example": example,
        "warning": warning,
        "rankings": ranking_note(data),
        "strength": "strength" in data.train.column_names,
    }


def ranking_note(data: Any) -> dict | None:
    """For ranked data: how many rankings, their K, and their ties."""
    return data.rankings["train"] if data.rankings else None


def ranking_sentence(stats: dict | None, cfg: dict) -> str:
    """What the training pairs came from and how they were trained (--rankings, the loss, the ties)."""
    if not stats:
        return ""
    ks = ", ".join(f"K={k}: {n}" for k, n in stats["k"].items())
    grouped = cfg.get("rankings", "grouped") == "grouped"
    how = "grouped by prompt (one packed segment per prompt)" if grouped else "as independent pairs"
    loss = "Plackett–Luce" if grouped and cfg.get("ranking_loss") == "plackett_luce" else "all-pairs Bradley–Terry"
    unit = "prompt" if grouped and cfg.get("ranking_normalization") == "prompt" else "comparison"
    ties = "trained toward ½" if stats.get("ties_trained") else "skipped"
    return (
        f"The training pairs are the comparisons of {stats['prompts']} rankings ({ks}), trained {how} with "
        f"{loss}, each {unit} weighted alike; {stats['ties']} tied comparisons {ties}."
    )


def rating_sentence(ratings: dict | None) -> str:
    """What a regression model's reward means on its ratings' scale (config.json `reward_ratings`)."""
    if not isinstance(ratings, dict):
        return ""
    pairs = ratings.get("pair_weight") or 0
    also = f" plus {pairs:g} × the Bradley–Terry loss of the pairs they imply" if pairs else ""
    if not ratings.get("standardized"):
        return f"It was trained by squared error on the raw ratings{also}: the reward estimates the rating."
    mean, std = ratings["mean"], ratings["std"]
    return (
        f"It was trained by squared error on (rating − {mean:.4g}) / {std:.4g}, the training ratings' mean and std"
        f"{also} (docs/loss.md §11): reward × {std:.4g} + {mean:.4g} estimates the rating (`config.json` "
        "`reward_ratings`; `score.py` prints it as `rating_estimate`)."
    )


def strength_sentence(had_strength: bool | None, cfg: dict) -> str:
    """How the pairs' `strength` column was read (--strength_as, --strength_weights: reward/labels/strength.py)."""
    if not had_strength:
        return ""
    reading = cfg.get("strength_as", "weight")
    if reading == "ignore":
        return "The pairs' strength was not used (`--strength_as ignore`): every pair is weighted alike."
    if reading == "margin":
        return "Each pair's strength was read as the margin the pair must be won by (TRL's margin; docs/loss.md §10)."
    table = ", ".join(item.strip().replace(":", ": ") for item in str(cfg.get("strength_weights", "")).split(","))
    return (
        f"Each pair's strength was read as a loss weight (scaled Bradley–Terry, |strength| {table}; docs/loss.md §10)."
    )


def public(place: Any) -> str:
    """A path as a published card may show it: relative to the working folder, else its last part (never
    an absolute local path); a Hub id or a name is kept."""
    path = Path(str(place))
    if not path.is_absolute():
        return str(place)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return path.name


def example_of(row: dict[str, Any] | None, data_format: str | None = None) -> tuple[Any, Any]:
    """(prompt, response) of one training row, for the snippets: a conversation without a `prompt`
    column is split before its last message. No row (the default: a card quotes no data): a made-up one."""
    if not row and data_format == CONVERSATIONAL:
        return [{"role": "user", "content": "Could you name a fruit for me?"}], [
            {"role": "assistant", "content": "Happy to help: mango."}
        ]
    if not row:
        return "Could you name a fruit for me?", " Happy to help: mango."
    chosen = row["chosen"] if "chosen" in row else row["completions"][0]  # a pair, or rated completions
    if isinstance(chosen, list):
        prompt = row.get("prompt") or chosen[:-1]
        return prompt, chosen if row.get("prompt") else chosen[-1:]
    return row.get("prompt") or "", chosen


def uses_template(model: PreTrainedModel, response: Any) -> bool:
    return isinstance(response, list) or read_format(model.config)[0].text_as_chat


def pipeline_snippet(model: PreTrainedModel, path: str, prompt: Any, response: Any) -> str:
    fmt, _ = read_format(model.config)
    head = f'from transformers import pipeline\n\nrm = pipeline("text-classification", model={path!r})\n'
    if uses_template(model, response):
        messages = list(prompt or []) + response if isinstance(response, list) else as_messages(prompt, response)
        return (
            f"```python\n{head}messages = {messages!r}\n"
            "text = rm.tokenizer.apply_chat_template(messages, tokenize=False)  # the template writes BOS/EOS\n"
            'print(rm(text, add_special_tokens=False)[0]["score"])  # raw reward: higher = preferred\n```'
        )
    eos = " + rm.tokenizer.eos_token" if fmt.append_eos else ""
    special = "" if fmt.add_special_tokens else ", add_special_tokens=False"
    return (
        f"```python\n{head}text = {prompt!r} + {response!r}{eos}  # as training formatted it\n"
        f'print(rm(text{special})[0]["score"])  # raw reward: higher = preferred\n```'
    )


def grpo_path_note(model: PreTrainedModel, response: Any) -> str:
    """Whether GRPO's own formatting (no special tokens, no EOS; chat template for conversations)
    is what this model was trained on."""
    fmt, record = read_format(model.config)
    adds = (record or {}).get("special_tokens") or {}
    if isinstance(response, list):
        return (
            "Trained on conversations: GRPO renders the same chat template, so with conversational prompts "
            "it sees the trained reward."
        )
    if fmt.text_as_chat:
        return (
            "Trained with the chat template around plain text; GRPO renders a template only for conversational "
            "prompts, so give it conversational prompts or use `RewardFunction` above."
        )
    differs = [
        what
        for what, on in (
            ("EOS appended", fmt.append_eos),
            ("special tokens added", fmt.add_special_tokens and (adds.get("before") or adds.get("after"))),
        )
        if on
    ]
    if not differs:
        return (
            "Trained in GRPO's format (no EOS appended, no special tokens added): GRPO given the folder sees "
            "the trained reward."
        )
    return (
        f"**Not GRPO's format** ({', '.join(differs)} in training; GRPO adds neither): given the folder, GRPO scores "
        "text this model never saw. Use `RewardFunction` above, or retrain with "
        "`--append_eos false --add_special_tokens false`."
    )


def ppo_snippet(model: PreTrainedModel, path: str, prompt: Any, response: Any) -> str:
    fmt, _ = read_format(model.config)
    head = (
        "```python\nimport torch\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
        f"rm = AutoModelForSequenceClassification.from_pretrained({path!r})\n"
        f"tok = AutoTokenizer.from_pretrained({path!r})\n"
    )
    if uses_template(model, response):
        messages = list(prompt or []) + response if isinstance(response, list) else as_messages(prompt, response)
        ids = f"tok.apply_chat_template({messages!r}, tokenize=True, return_dict=True)['input_ids']"
    else:
        eos = " + tok.eos_token" if fmt.append_eos else ""
        ids = f"tok({prompt!r} + {response!r}{eos}, add_special_tokens={fmt.add_special_tokens})['input_ids']"
    return (
        f"{head}rollout = {ids}  # a policy's token ids (same tokenizer)\n"
        "with torch.no_grad():\n"
        "    print(rm(input_ids=torch.tensor([rollout])).logits[0, 0].item())  # reward at the last non-pad token\n```"
    )


def render_model_card(out: Path, model: PreTrainedModel, cfg: dict[str, Any], card: dict[str, Any]) -> str:
    metrics = card.get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    # published as is by --push_to_hub: no data row unless asked (--card_example_row), no absolute local path
    path = cfg.get("hub_model_id") if cfg.get("push_to_hub") and cfg.get("hub_model_id") else public(out)
    quoted = card.get("example") if cfg.get("card_example_row") else None
    prompt, response = example_of(quoted, card.get("format"))
    fmt, record = read_format(model.config)
    stats = getattr(model.config, "reward_stats", None)
    stats_line = (
        f"Rewards on the {stats['source']}: mean {stats['mean']:.4f}, std {stats['std']:.4f} (`config.json` "
        "`reward_stats`). `RewardFunction(..., normalize=True)` and `score.py --normalize` return "
        "(reward − mean) / std; a consumer that loads only the weights (GRPO given the folder, a served "
        "model) returns raw rewards."
        if isinstance(stats, dict)
        else "No reward statistics were saved with this folder."
    )
    ratings = getattr(model.config, "reward_ratings", None)  # trained on rated completions (reward/labels/rated.py)
    kind, units = ("regression", "rated completions") if ratings else ("Bradley–Terry", "pairs")
    told = (
        ranking_sentence(card.get("rankings"), cfg),
        strength_sentence(card.get("strength"), cfg),
        rating_sentence(ratings),
    )
    trained_on = " ".join(filter(None, told))  # what the pairs came from, how their strength was read
    reads = (record or {}).get("reward_token", "the last token that is not the pad token")
    grpo_prompt = prompt if isinstance(response, list) or prompt else "Could you name a fruit for me?"
    penalise = "penalise it, e.g. trl ≤ 1.12 `PPOConfig(missing_eos_penalty=...)`"
    if uses_template(model, response):
        ppo_eos = (
            "Training scored chat-template renderings, which end with the template's end tokens: a rollout cut "
            f"off before them gets a reward training never produced ({penalise})."
        )
    elif fmt.append_eos:
        ppo_eos = (
            "Training appended EOS, so score a finished rollout with its EOS; one cut off before EOS gets a "
            f"reward training never produced ({penalise})."
        )
    else:
        ppo_eos = "Training appended no EOS: strip the EOS of a finished rollout before scoring."
    return "\n".join(
        [
            FRONT_MATTER if not ratings else FRONT_MATTER.replace("bradley-terry", "regression"),
            f"# Reward model: {out.name}\n",
            f"> **Warning:** {card['warning']}\n" if card.get("warning") else "",
            f"A {kind} reward model (`{type(model).__name__}`, one output: the reward) trained with `reward` "
            f"(a from-scratch PyTorch reward-model trainer) from `{public(cfg.get('model_name_or_path'))}` on "
            f"`{public(cfg.get('dataset_name'))}` ({card.get('format', '?')} format, "
            f"{card.get('train_pairs', '?')} training {units}). {trained_on}\n",
            "| metric | value |\n|---|---|\n" + (rows or "| (none) | |") + "\n",
            "## How training formatted the text\n",
            f"{describe_format(fmt, record)}. Recorded in `config.json` (`{FORMAT_KEY}`); `score.py` and "
            "`reward.RewardFunction` read it. " + stats_line + "\n",
            "See how each consumer scores this model: "
            f"`python score.py --model {path} --input PAIRS.jsonl --check_consumers`.\n",
            "## Use\n",
            "### pipeline\n",
            "`problem_type` is `regression`, so the pipeline returns the raw reward (no sigmoid).\n",
            pipeline_snippet(model, path, prompt, response) + "\n",
            "### TRL GRPO with `reward.RewardFunction`\n",
            "Formats every prompt + completion as training did (needs this project installed).\n",
            GRPO_SNIPPET.format(
                extra_import="\nfrom reward import RewardFunction\n",
                prompt=grpo_prompt,
                reward_funcs=f"RewardFunction({path!r})",
            )
            + "\n",
            "### TRL GRPO with the folder\n",
            grpo_path_note(model, response) + "\n",
            GRPO_SNIPPET.format(extra_import="", prompt=grpo_prompt, reward_funcs=repr(path)) + "\n",
            "### PPO-style: scoring the policy's token ids\n",
            "TRL removed `PPOTrainer` after 1.12: the `PPOConfig(reward_model_path=...)` recipe still found in guides "
            "needs `trl<=1.12` (`trl.experimental.ppo`). A PPO loop that shares this tokenizer can score its token ids "
            f"directly; the head reads the reward at {reads}. {ppo_eos}\n",
            ppo_snippet(model, path, prompt, response) + "\n",
            f"Or, with the project installed: `python score.py --model {path} --input FILE.jsonl`.\n",
            "### Served to RL loops on other machines\n",
            f"`reward-serve --model {path}` (the `serve` extra) serves it on http://127.0.0.1:8000, formatting text "
            "as training did; each prompt is computed once for all its completions. OpenRLHF: "
            "`--remote_rm_url http://HOST:8000/get_reward` (`--reward.remote_url` from 0.10.2). TRL, from the "
            "trainer's machine (docs/serving.md):\n",
            serve_snippet(path, prompt, response) + "\n",
        ]
    )


def serve_snippet(path: str, prompt: Any, response: Any) -> str:
    return (
        "```python\nfrom reward import RemoteRewardFunction\n\n"
        f'rm = RemoteRewardFunction("http://127.0.0.1:8000")  # reward-serve --model {path}\n'
        f"print(rm(prompts=[{prompt!r}], completions=[{response!r}])[0])  # raw reward, as training computed it\n"
        "# GRPO: GRPOTrainer(model=policy, reward_funcs=rm, ...)\n```"
    )
