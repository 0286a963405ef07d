"""Every option checked up front, with its name and what it accepts: one line before anything loads.

Values reach a config dataclass from the command line (typed by argparse), from a YAML/JSON file
(typed by the file: `max_steps: 2.5` arrives as a float) or from Python. `type_problems` checks
each value against its field's annotation, so a file value fails exactly as the flag would;
`train_problems` / `score_problems` check ranges and choices. A run that would divide by zero,
overflow AdamW or delete its own checkpoints is refused here instead of after the model loads.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import types
import typing
from dataclasses import fields
from typing import Any

# transformers schedules that work with a plain `scheduler.step()` and no extra kwargs (the others
# need a metric (reduce_lr_on_plateau, greedy) or lr_scheduler_kwargs (cosine_with_min_lr, wsd))
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
EVAL_STRATEGIES = ("steps", "epoch", "no")
OPTIMIZERS = ("adamw_torch_fused", "adamw_torch")  # HF's names for torch.optim.AdamW, fused or not
DTYPES = ("float32", "bfloat16", "auto")  # not float16: AdamW's moments underflow (use --fp16 for fp16 compute)
FLOAT16_REFUSED = (
    "float16 weights make AdamW's moments underflow; use --fp16 (float16 compute, float32 weights) or --dtype bfloat16"
)
TRACKERS = ("tensorboard", "trackio", "wandb")  # report_to also takes "none" and "all"
HUB_STRATEGIES = ("every_save", "end")
RANKINGS = ("grouped", "pairs")
RANKING_LOSSES = ("bradley_terry", "plackett_luce")
RANKING_NORMALIZATIONS = ("comparison", "prompt")
TIE_HANDLINGS = ("skip", "half")
STRENGTH_READINGS = ("weight", "margin", "ignore")  # a pair's strength column (reward/labels/strength.py)
# every option whose accepted values are a fixed list: its --help (reward/config.py) and its refusal
# list exactly these (tests/test_options.py holds them to it)
CHOICES = {
    "dtype": DTYPES,
    "optim": OPTIMIZERS,
    "lr_scheduler_type": SCHEDULERS,
    "eval_strategy": EVAL_STRATEGIES,
    "hub_strategy": HUB_STRATEGIES,
    "rankings": RANKINGS,
    "ranking_loss": RANKING_LOSSES,
    "ranking_normalization": RANKING_NORMALIZATIONS,
    "tie_handling": TIE_HANDLINGS,
    "strength_as": STRENGTH_READINGS,
    "report_to": ("none", *TRACKERS, "all"),
}
MAX_SEED = 2**32 - 1  # numpy's RNG, seeded alongside torch's, takes 0 .. 2**32 - 1


def either(values: tuple[str, ...]) -> str:
    """An option's accepted values as its help text and its refusal list them.

    >>> either(("steps", "epoch", "no"))
    "'steps', 'epoch' or 'no'"
    """
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def type_problem(name: str, value: Any, annotation: Any) -> str | None:
    """Why `value` does not fit a field annotated `annotation` (int, float | None, list[str], ...).

    >>> type_problem("max_steps", 2.5, int), type_problem("learning_rate", 1, float)
    ('--max_steps must be an integer, got 2.5', None)
    """
    options = typing.get_args(annotation) if is_union(annotation) else (annotation,)
    kinds = [k for k in options if k is not NONE]
    if value is None:
        return None if NONE in options else f"--{name} must be set"
    if any(fits(value, kind) for kind in kinds):
        return None
    return f"--{name} must be {' or '.join(describe(kind) for kind in kinds)}, got {value!r}"


NONE = type(None)


def is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def fits(value: Any, kind: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typing.get_origin(kind) is list:  # list[str]: a list, or one string (split on commas later)
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
    return isinstance(value, kind) if isinstance(kind, type) else True


def describe(kind: Any) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(kind, "a list of strings" if typing.get_origin(kind) is list else str(kind))


def type_problems(config: Any) -> list[str]:
    hints = typing.get_type_hints(type(config))
    return [p for f in fields(config) if (p := type_problem(f.name, getattr(config, f.name), hints[f.name]))]


def finite(x: float) -> bool:
    return math.isfinite(x)


def train_problems(cfg: Any) -> list[str]:
    """Range, choice and combination problems of a TrainConfig (types already checked)."""
    rules = [
        (cfg.per_device_train_batch_size >= 1 and cfg.per_device_eval_batch_size >= 1, "batch sizes must be >= 1"),
        (cfg.gradient_accumulation_steps >= 1, "--gradient_accumulation_steps must be >= 1"),
        (
            finite(cfg.learning_rate) and 0 <= cfg.learning_rate <= 1,
            "--learning_rate must be a finite number in [0, 1] (reward models train at ~1e-6 .. 1e-3)",
        ),
        (finite(cfg.weight_decay) and 0 <= cfg.weight_decay <= 1, "--weight_decay must be in [0, 1]"),
        (0 <= cfg.adam_beta1 < 1 and 0 <= cfg.adam_beta2 < 1, "--adam_beta1 and --adam_beta2 must be in [0, 1)"),
        (finite(cfg.adam_epsilon) and cfg.adam_epsilon > 0, "--adam_epsilon must be a finite number > 0"),
        (cfg.optim in OPTIMIZERS, f"--optim must be one of {', '.join(OPTIMIZERS)} (AdamW, fused or not)"),
        (
            finite(cfg.max_grad_norm) and cfg.max_grad_norm >= 0,
            "--max_grad_norm must be a finite number >= 0 (0: no clipping)",
        ),
        (cfg.max_steps == -1 or cfg.max_steps >= 1, "--max_steps must be >= 1 (or -1: use --num_train_epochs)"),
        (
            cfg.max_steps >= 1 or (finite(cfg.num_train_epochs) and cfg.num_train_epochs > 0),
            "--num_train_epochs must be a finite number > 0 (or set --max_steps)",
        ),
        (cfg.lr_scheduler_type in SCHEDULERS, f"--lr_scheduler_type must be one of {', '.join(SCHEDULERS)}"),
        (0 <= cfg.warmup_ratio <= 1, "--warmup_ratio must be in [0, 1]"),
        (cfg.warmup_steps >= 0, "--warmup_steps must be >= 0"),
        (0 <= cfg.seed <= MAX_SEED, f"--seed must be in [0, {MAX_SEED}]"),
        (cfg.logging_steps >= 1, "--logging_steps must be >= 1"),
        (cfg.eval_steps >= 1, "--eval_steps must be >= 1"),
        (cfg.save_steps >= 0, "--save_steps must be >= 0 (0: only at the end)"),
        (
            cfg.save_total_limit is None or cfg.save_total_limit >= 1,
            "--save_total_limit must be >= 1 (or unset: keep every checkpoint)",
        ),
        (cfg.max_nonfinite_steps >= 1, "--max_nonfinite_steps must be >= 1"),
        (cfg.dataset_num_proc is None or cfg.dataset_num_proc >= 1, "--dataset_num_proc must be >= 1"),
        (cfg.synthetic_num_pairs >= 1, "--synthetic_num_pairs must be >= 1"),
        (cfg.pad_to_multiple_of is None or cfg.pad_to_multiple_of >= 1, "--pad_to_multiple_of must be >= 1"),
        (cfg.max_length is None or cfg.max_length >= 2, "--max_length must be >= 2"),
        (0.0 <= cfg.label_smoothing < 0.5, "--label_smoothing must be in [0, 0.5)"),
        (
            cfg.center_rewards_coefficient is None
            or (finite(cfg.center_rewards_coefficient) and cfg.center_rewards_coefficient >= 0),
            "--center_rewards_coefficient must be a finite number >= 0",
        ),
        (0.0 <= cfg.eval_split_size < 1.0, "--eval_split_size must be in [0, 1)"),
        (cfg.eval_strategy in EVAL_STRATEGIES, f"--eval_strategy must be {either(EVAL_STRATEGIES)}"),
        (bool(cfg.model_name_or_path.strip()), "--model_name_or_path must not be empty"),
        (bool(cfg.dataset_name.strip()), "--dataset_name must not be empty"),
        (bool(cfg.output_dir.strip()), "--output_dir must not be empty"),
        (cfg.lora_r >= 1, "--lora_r must be >= 1"),
        (finite(cfg.lora_alpha) and cfg.lora_alpha > 0, "--lora_alpha must be > 0"),
        (0.0 <= cfg.lora_dropout < 1.0, "--lora_dropout must be in [0, 1)"),
        (cfg.dtype != "float16", f"--dtype float16: {FLOAT16_REFUSED}"),
        (cfg.dtype in (*DTYPES, "float16"), f"--dtype must be one of {', '.join(DTYPES)}, got {cfg.dtype!r}"),
        (cfg.hub_strategy in HUB_STRATEGIES, f"--hub_strategy must be {either(HUB_STRATEGIES)}"),
        (not (cfg.fp16 and cfg.dtype == "bfloat16"), "--fp16 with --dtype bfloat16: pick one half precision"),
        (not (cfg.bf16 and cfg.fp16), "--bf16 and --fp16 are mutually exclusive"),
        (not (cfg.fsdp and cfg.torch_compile), "--fsdp with --torch_compile is not supported yet"),
        (not (cfg.fsdp and cfg.use_peft), "--fsdp with --use_peft is not supported yet"),
    ]
    problems = [message for ok, message in rules if not ok] + ranking_problems(cfg)
    return problems + ([problem] if (problem := attention_problem(cfg.attn_implementation)) else [])


def ranking_problems(cfg: Any) -> list[str]:
    """The ranking options (reward/ranked): choices, and what only grouped training can do."""
    grouped, plackett_luce = cfg.rankings == "grouped", cfg.ranking_loss == "plackett_luce"
    rules = [
        (cfg.rankings in RANKINGS, f"--rankings must be {either(RANKINGS)}"),
        (cfg.ranking_loss in RANKING_LOSSES, f"--ranking_loss: {either(RANKING_LOSSES)}"),
        (
            cfg.ranking_normalization in RANKING_NORMALIZATIONS,
            f"--ranking_normalization: {either(RANKING_NORMALIZATIONS)}",
        ),
        (cfg.tie_handling in TIE_HANDLINGS, f"--tie_handling must be {either(TIE_HANDLINGS)}"),
        (cfg.strength_as in STRENGTH_READINGS, f"--strength_as must be {either(STRENGTH_READINGS)}"),
        (finite(cfg.rating_pair_weight) and cfg.rating_pair_weight >= 0, "--rating_pair_weight must be >= 0"),
        (
            re.fullmatch(r"\s*\d+\s*:\s*[\d.]+\s*(,\s*\d+\s*:\s*[\d.]+\s*)*", cfg.strength_weights or ""),
            f"--strength_weights must be LEVEL:WEIGHT items, e.g. 1:1,2:2,3:3, got {cfg.strength_weights!r}",
        ),
        (grouped or cfg.tie_handling == "skip", "--tie_handling half needs --rankings grouped (a pair has no tie)"),
        (grouped or not plackett_luce, "--ranking_loss plackett_luce needs --rankings grouped (the whole order)"),
        (
            grouped or cfg.ranking_normalization == "comparison",
            "--ranking_normalization prompt needs --rankings grouped (a prompt's comparisons in one batch)",
        ),
        (
            not plackett_luce or not (cfg.label_smoothing or cfg.center_rewards_coefficient),
            "--ranking_loss plackett_luce has no --label_smoothing or --center_rewards_coefficient term "
            "(docs/loss.md §9); use --ranking_loss bradley_terry for them",
        ),
        (not plackett_luce or cfg.tie_handling == "skip", "--ranking_loss plackett_luce needs a strict order: no ties"),
    ]
    return [message for ok, message in rules if not ok]


def attention_problem(name: str | None) -> str | None:
    """--attn_implementation: "eager", an attention function registered with transformers (sdpa, flex, flash,
    ... and any a program registered) or a Hub kernel 'org/repo' (transformers' kernels pattern). Whether a
    flash-attention package is installed stays transformers' check, at load time (reward/model.py)."""
    if name is None:
        return None
    # imported here: transformers' modeling code takes seconds to import, and only this option needs it
    from transformers import AttentionInterface

    try:  # transformers' own test of a Hub kernel name (5.x); older ones: an 'org/repo' form
        from transformers.integrations.hub_kernels import is_kernel
    except ImportError:
        is_kernel = lambda text: "/" in text  # noqa: E731
    known = ["eager", *AttentionInterface().valid_keys()]
    if name.removeprefix("paged|") in known or is_kernel(name):  # transformers still strips a "paged|" prefix
        return None
    return f"--attn_implementation {name}: not one of {', '.join(known)}, or a Hub kernel 'org/repo'"


def tracker_problems(names: list[str]) -> list[str]:
    """`--report_to`: known names, and none/all alone."""
    unknown = [n for n in names if n not in (*TRACKERS, "none", "all")]
    if unknown:
        return [f"--report_to: unknown tracker(s) {', '.join(unknown)} (none, all, {', '.join(TRACKERS)})"]
    if len(names) > 1 and ({"none", "all"} & set(names)):
        return ["--report_to: 'none' and 'all' stand alone"]
    return []


def json_mapping(name: str, value: Any, problems: list[str]) -> dict | None:
    """A JSON object given as text (a flag) or as a dict (Python, an options file), as a dict."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            problems.append(f"--{name}: not valid JSON ({exc})")
            return None
    if value is not None and not isinstance(value, dict):
        problems.append(f"--{name} must be a JSON object of keyword arguments, got {value!r}")
        return None
    return value


def score_problems(cfg: Any) -> list[str]:
    rules = [
        (cfg.batch_size >= 1, "--batch_size must be >= 1"),
        (cfg.explain_rows >= 0, "--explain_rows must be >= 0"),
        (cfg.check_rows >= 0, "--check_rows must be >= 0 (0: every row)"),
        (cfg.calibration_bins >= 1, "--calibration_bins must be >= 1"),
        (cfg.max_length is None or cfg.max_length >= 2, "--max_length must be >= 2 (or unset: the model's positions)"),
        (cfg.label_smoothing is None or 0.0 <= cfg.label_smoothing < 0.5, "--label_smoothing must be in [0, 0.5)"),
        (
            cfg.center_rewards_coefficient is None
            or (finite(cfg.center_rewards_coefficient) and cfg.center_rewards_coefficient >= 0),
            "--center_rewards_coefficient must be a finite number >= 0",
        ),
    ]
    return [message for ok, message in rules if not ok]


# --- how `--help` lays the options out (train.py, score.py): under headings, each default said once, and a
# `--no_X` flag as the one-line opposite of `--X` (argparse only: `--help` answers before torch is imported)
# `train.py --help` shows reward/config.py TrainConfig's options under these headings, each field under
# exactly one (tests/test_help.py): a new option gets its place here.
TRAIN_GROUPS = {
    "model and loading": "model_name_or_path model_revision dtype attn_implementation model_init_kwargs "
    "trust_remote_code eos_token pad_token disable_dropout",
    "LoRA adapters": "use_peft lora_r lora_alpha lora_dropout lora_target_modules",
    "data and formatting": "dataset_name dataset_config dataset_train_split dataset_test_split eval_split_size "
    "skip_bad_rows synthetic_num_pairs max_length pad_to_multiple_of chat_template_path append_eos "
    "add_special_tokens text_as_chat dataset_num_proc",
    "loss and rankings": "center_rewards_coefficient label_smoothing strength_as strength_weights rating_standardize "
    "rating_pair_weight rankings ranking_loss ranking_normalization tie_handling",
    "optimisation": "per_device_train_batch_size gradient_accumulation_steps learning_rate weight_decay adam_beta1 "
    "adam_beta2 adam_epsilon optim max_grad_norm num_train_epochs max_steps lr_scheduler_type warmup_ratio "
    "warmup_steps seed max_nonfinite_steps",
    "speed and memory": "group_by_length padding_free share_prefix eval_padding_free torch_compile "
    "gradient_checkpointing bf16 fp16",
    "evaluation": "eval_strategy eval_steps per_device_eval_batch_size",
    "checkpoints and resume": "output_dir save_steps save_total_limit resume_from_checkpoint overwrite_output_dir",
    "logging and trackers": "logging_steps disable_tqdm plot_curves report_to run_name project logging_dir debug",
    "Hub": "push_to_hub hub_model_id hub_private_repo hub_strategy hub_token card_example_row",
    "devices and distributed": "use_cpu fsdp",
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)", except where the help text already gives the default in its own words
    ("default: cuda if available" says more than "default: None"), where there is none (an option left
    unset is not used), and on a `--no_X` flag (its stored default, False, is not the option's)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "default:" in (action.help or "") or action.default is None or is_negation(action):
            return action.help
        return super()._get_help_string(action)


def is_negation(action: argparse.Action) -> bool:
    """HfArgumentParser's `--no_X` complement of a bool option X that defaults to True."""
    return action.nargs == 0 and action.const is False and any(s.startswith("--no_") for s in action.option_strings)


def arrange(parser: argparse.ArgumentParser, groups: dict[str, str]) -> None:
    """Move each option under its heading (`groups`: heading -> the field names, space-separated); -h and
    options no heading names stay under argparse's "options". argparse has no public way to move an
    option into a group once added, and HfArgumentParser adds them all to one, hence the attributes."""
    heading_of = {name: title for title, names in groups.items() for name in names.split()}
    headings = {title: parser.add_argument_group(title) for title in groups}
    general = parser._optionals
    for action in list(general._group_actions):
        if is_negation(action):
            action.help = f"Turn off --{action.dest}."
        if action.dest in heading_of:
            general._group_actions.remove(action)
            headings[heading_of[action.dest]]._group_actions.append(action)


def default_output_dir(model: str, dataset: str) -> str:
    """`runs/<model>-<dataset>`, each its Hub id's or path's last part (a data file's stem), slugged: a run on
    other data gets a folder of its own.

    >>> default_output_dir("tiny", "synthetic"), default_output_dir("Qwen/Qwen2.5-0.5B", "data/My Pairs.jsonl")
    ('runs/tiny-synthetic', 'runs/Qwen2.5-0.5B-My-Pairs')
    """
    slugs = []
    for name in (model, dataset):
        last = str(name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        last = re.sub(r"\.(jsonl|json|csv|parquet)(\.gz)?$", "", last)
        slugs.append(re.sub(r"[^A-Za-z0-9._]+", "-", last).strip("-.") or "run")
    return "runs/" + "-".join(slugs)
