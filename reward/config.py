"""Training options: one typed dataclass, parsed from the command line and/or a YAML/JSON file.

Flag names follow TRL's reward script and Hugging Face `TrainingArguments`, so a TRL user's command
line works unchanged for the options we share. `python train.py --help` lists every field with the
help text below. Defaults follow TRL's `RewardConfig` except where noted in the help text.

The options stay flat here (the CLI, YAML files and `RewardConfig`); below the recipe each part takes
only the small group it reads, a dataclass of TrainConfig's names (e.g. reward/loop.py
`OptimizerOptions`), filled with `pick(Group, cfg)` (litgpt's grouped arguments).
"""

from __future__ import annotations

import json
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from transformers import HfArgumentParser

from reward.errors import UserError, first_line
from reward.options import (
    CHOICES,
    TRAIN_GROUPS,
    HelpFormatter,
    arrange,
    default_output_dir,
    either,
    json_mapping,
    tracker_problems,
    train_problems,
    type_problems,
)

Group = TypeVar("Group")


def option(default: Any, help: str, repr: bool = True) -> Any:  # noqa: A002 - argparse's and dataclasses' words
    return field(default=default, metadata={"help": help}, repr=repr)


def names_in(value: str | list[str]) -> list[str]:
    """A list option as given: "a,b", ["a", "b"] (flags) or one string from a YAML file -> ["a", "b"]."""
    items = [value] if isinstance(value, str) else value
    return [name.strip() for item in items for name in item.split(",") if name.strip()]


@dataclass
class TrainConfig:
    # --- model ---------------------------------------------------------------------------------
    model_name_or_path: str = option("tiny", "Model folder or Hub id; 'tiny' builds a small random Llama offline.")
    model_revision: str | None = option(None, "Hub branch, tag or commit of the model (default: its main branch).")
    dtype: str = option(
        "float32",
        f"Weights' dtype: {either(CHOICES['dtype'])} (float32: TRL's default for a model given by name; auto: the "
        "checkpoint's own). bfloat16 weights are trained as they are, AdamW state in bfloat16 too; the loss stays "
        "float32 (docs/training.md). Not float16: AdamW's moments underflow (--fp16 computes in float16 on float32 "
        "weights).",
    )
    attn_implementation: str | None = option(
        None, "transformers attention: sdpa, eager, flash_attention_2, ... (default: transformers' choice)."
    )
    model_init_kwargs: dict[str, Any] | str | None = option(
        None,
        'More from_pretrained keyword arguments, as JSON: its own (e.g. \'{"subfolder": "rm"}\') or the model '
        "config's (e.g. '{\"rms_norm_eps\": 1e-5}'); a key neither takes is refused before anything loads.",
    )
    trust_remote_code: bool = option(False, "Allow the model's own code from the Hub to run (off: safer).")
    eos_token: str | None = option(None, "Make this token (already in the vocabulary) the tokenizer's EOS (TRL).")
    pad_token: str | None = option(None, "Make this token the tokenizer's pad (TRL; default: its own, else EOS).")
    disable_dropout: bool = option(True, "Set every dropout probability to 0, as TRL does.")
    gradient_checkpointing: bool = option(False, "Recompute activations in backward to save memory (on in TRL).")
    fsdp: bool = option(False, "Shard weights, grads and AdamW state over torchrun processes (FSDP2; 2+ processes).")
    # --- LoRA (peft extra: pip install -e ".[peft]"; docs/scaling.md) --------------------------------
    use_peft: bool = option(
        False,
        "Train LoRA adapters on the backbone plus the full score head instead of every weight; "
        "the saved model has the adapters merged (plain transformers), the adapter alone is in adapter/.",
    )
    lora_r: int = option(16, "LoRA rank r (TRL's default): trained parameters grow linearly with it.")
    lora_alpha: int = option(32, "LoRA alpha: the update is (alpha / r) B A; 32 = 2r as in TRL, a scale of 2.")
    lora_dropout: float = option(
        0.0,
        "Dropout on the adapters' input. 0 is what TRL runs: its 0.05 default is zeroed by disable_dropout "
        "(chosen and rejected should see the same noise).",
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={
            "help": "Layers that get adapters: 'all-linear' (every Linear of the backbone, not the score head; "
            "QLoRA found all layers needed to match full fine-tuning), 'default' (peft's choice for the "
            "architecture, e.g. q_proj and v_proj for Llama) or module names, "
            "e.g. q_proj v_proj or q_proj,v_proj."
        },
    )
    # --- data ----------------------------------------------------------------------------------
    dataset_name: str = option(
        "synthetic",
        "A .jsonl/.json/.csv/.parquet file, a folder of them, a Hub dataset id, or a generated task (docs/training.md):"
        " 'synthetic', 'synthetic-long', 'synthetic-ranked', 'synthetic-ranked-long', 'synthetic-strength',"
        " 'synthetic-ratings'.",
    )
    dataset_config: str | None = option(None, "Hub dataset configuration name.")
    dataset_train_split: str = option("train", "Split to train on.")
    dataset_test_split: str = option("test", "Split to evaluate on, if the dataset has it.")
    eval_split_size: float = option(0.1, "Fraction of train held out (seeded) if there is no test split; 0: no eval.")
    skip_bad_rows: bool = option(False, "Drop invalid rows (reporting how many and which) instead of stopping.")
    synthetic_num_pairs: int = option(12000, "Number of pairs generated when dataset_name is 'synthetic'.")
    max_length: int | None = option(1024, "Pairs with a side over this many tokens are dropped (and counted).")
    pad_to_multiple_of: int | None = option(None, "Pad the batch length up to a multiple of this (plain path).")
    chat_template_path: str | None = option(
        None,
        "A Jinja file (.jinja/.j2) to use as the chat template, or a tokenizer folder/id to take the template, its "
        "added tokens and its EOS from (TRL's option).",
    )
    # --- formatting: how text becomes tokens; recorded in config.json (docs/consumers.md) -------
    append_eos: bool = option(
        True,
        "Append the EOS token to plain-text sequences unless present (TRL). False: the reward is read at the "
        "last text token, as TRL's GRPO and a PPO rollout cut before EOS score it.",
    )
    add_special_tokens: bool = option(
        True,
        "Let the tokenizer add its special tokens (e.g. BOS) to plain text (TRL). False: GRPO's format "
        "(it tokenizes prompt + completion with add_special_tokens=False).",
    )
    text_as_chat: bool = option(
        False,
        "Render plain-text rows as [user: prompt, assistant: response] with the chat template "
        "(RewardBench's format); needs a prompt column and a tokenizer with a chat template.",
    )
    # --- speed (each exact: tests/test_packing.py; all off = TRL's batching, as in parity runs) ---
    group_by_length: bool = option(
        True, "Batch pairs of similar length (sorted inside seeded mega-batches of 50 batches, as HF)."
    )
    padding_free: bool = option(
        True, "Pack the sequences of a micro-batch into one row, no padding (Llama/Qwen2/GPT-2; else plain)."
    )
    share_prefix: bool = option(
        True, "Compute the prompt shared by chosen and rejected once per pair (Llama/Qwen2/GPT-2; else plain)."
    )
    eval_padding_free: bool = option(
        True, "Evaluate packed, the shared prompt once (the padded rewards to 1e-5, fewer tokens); false: padded."
    )
    torch_compile: bool = option(False, "Compile the backbone with torch.compile (first steps are slower).")
    # --- loss ----------------------------------------------------------------------------------
    center_rewards_coefficient: float | None = option(
        None, "Add coef * mean((r_chosen + r_rejected)^2) to keep rewards centred (0.01 in the paper)."
    )
    label_smoothing: float = option(0.0, "Conservative BT: 'chosen wins' is true with probability 1 - eps (loss.md).")
    strength_as: str = option("weight", "A pair's strength: 'weight' (loss x --strength_weights), 'margin', 'ignore'.")
    strength_weights: str = option("1:1,2:2,3:3", "|strength| -> loss weight, for --strength_as weight (loss.md §10).")
    rating_standardize: bool = option(True, "Rated rows: regress on (score - mean) / std of the training ratings.")
    rating_pair_weight: float = option(0.0, "Rated rows: + this x BT loss of the pairs ratings imply (loss.md §11).")
    # --- rankings: rows of a prompt and K scored or ordered completions (docs/loss.md §9) --------
    rankings: str = option(
        "grouped",
        "Ranked rows: 'grouped' (a prompt's K responses in one micro-batch and one packed segment, the prompt "
        "computed once; the batch size counts prompts) or 'pairs' (their C(K,2) comparisons as independent pairs).",
    )
    ranking_loss: str = option(
        "bradley_terry", "Grouped: 'bradley_terry' (all C(K,2) comparisons) or 'plackett_luce' (the whole order)."
    )
    ranking_normalization: str = option(
        "comparison", "Grouped: every 'comparison' weighs the same in a step, or every 'prompt' (1/C(K,2) each)."
    )
    tie_handling: str = option("skip", "Equal scores: 'skip' (counted) or 'half' (trained toward P = 1/2; grouped).")
    # --- optimisation --------------------------------------------------------------------------
    output_dir: str | None = option(
        None, "Where the checkpoint and metrics.jsonl go (default: runs/MODEL-DATASET, e.g. runs/tiny-synthetic)."
    )
    per_device_train_batch_size: int = option(32, "Pairs (rankings, ratings: prompts) per micro-batch (TRL: 8).")
    per_device_eval_batch_size: int = option(64, "Pairs (ratings: prompts) per evaluation batch.")
    gradient_accumulation_steps: int = option(1, "Micro-batches per optimizer step.")
    learning_rate: float = option(1e-4, "Peak AdamW learning rate.")
    weight_decay: float = option(0.0, "AdamW weight decay (never applied to biases and norm weights).")
    adam_beta1: float = option(0.9, "AdamW beta1.")
    adam_beta2: float = option(0.999, "AdamW beta2.")
    adam_epsilon: float = option(1e-8, "AdamW epsilon.")
    optim: str = option("adamw_torch_fused", "AdamW: 'adamw_torch_fused' (one kernel; HF's default) or 'adamw_torch'.")
    max_grad_norm: float = option(1.0, "Clip the global gradient norm to this; 0 disables clipping.")
    num_train_epochs: float = option(2.0, "Passes over the training pairs (ignored when max_steps > 0).")
    max_steps: int = option(-1, "Total optimizer steps; overrides num_train_epochs when > 0.")
    lr_scheduler_type: str = option("linear", f"Schedule after warmup: {either(CHOICES['lr_scheduler_type'])}.")
    warmup_ratio: float = option(0.1, "Warmup length as a fraction of total steps (HF/TRL default 0).")
    warmup_steps: int = option(0, "Warmup length in steps; wins over warmup_ratio when > 0.")
    bf16: bool = option(False, "bfloat16 autocast (CPU and GPU); the loss stays fp32.")
    fp16: bool = option(False, "float16 autocast with a gradient scaler (CUDA only).")
    use_cpu: bool = option(False, "Train on the CPU even when a GPU is available.")
    seed: int = option(42, "Seed for the score-head init, the data order and the eval split.")
    # --- logging, eval, saving -----------------------------------------------------------------
    logging_steps: int = option(10, "Write a step record every this many optimizer steps.")
    eval_strategy: str = option("steps", "'steps' (every eval_steps and at the end), 'epoch' or 'no'.")
    eval_steps: int = option(100, "Evaluate on the held-out split every this many steps.")
    save_steps: int = option(0, "Also save a checkpoint-STEP folder every this many steps; 0: only at the end.")
    save_total_limit: int | None = option(None, "Keep only the newest N checkpoint-STEP folders.")
    resume_from_checkpoint: str | None = option(
        None, "Continue a run: a checkpoint-STEP folder, or 'latest' (the newest one in output_dir)."
    )
    overwrite_output_dir: bool = option(False, "Start a new run in a non-empty output_dir, removing the old run.")
    max_nonfinite_steps: int = option(3, "Abort after this many optimizer steps in a row with a non-finite loss/grad.")
    dataset_num_proc: int | None = option(None, "Processes for tokenization (datasets.map num_proc).")
    disable_tqdm: bool = option(False, "Hide the progress bar.")
    plot_curves: str | None = option(
        None, 'After training, draw loss/accuracy curves from metrics.jsonl to this PNG (pip install -e ".[plot]").'
    )
    report_to: list[str] | str = field(
        default_factory=lambda: ["none"],
        metadata={"help": f"Trackers that get the metrics.jsonl records: {either(CHOICES['report_to'])} (a list)."},
    )
    run_name: str | None = option(None, "The run's name in the trackers (default: the output dir's name).")
    project: str = option("huggingface", "trackio / W&B project the run is logged under (HF's default).")
    logging_dir: str | None = option(None, "TensorBoard event folder (default: OUTPUT_DIR/runs/DATE_HOST, as HF).")
    # --- the Hub (huggingface_hub; checked before training starts) -----------------------------------
    push_to_hub: bool = option(False, "Upload the saved folder (the one the pipeline loads) to the Hub.")
    hub_model_id: str | None = option(None, "Hub repo to push to, 'user/name' (default: the output dir's name).")
    hub_private_repo: bool | None = option(None, "Create the repo private (default: the Hub's default).")
    hub_strategy: str = option(
        "every_save", "'every_save' (every checkpoint's model, then the final one) or 'end' (the final one)."
    )
    hub_token: str | None = option(
        None, "Hub token (default: HF_TOKEN or the cached login); never saved, printed or logged.", repr=False
    )
    card_example_row: bool = option(False, "Quote a held-out row in the card's snippets (off: a made-up example).")
    debug: bool = option(False, "Show the full traceback for input/option errors.")

    def __post_init__(self) -> None:
        """Every option checked here, with its name and what it accepts (reward/options.py): a value from a
        config file or from Python fails exactly as the same flag would."""
        if not self.output_dir:  # named after what is trained, so a run on other data gets a folder of its own
            self.output_dir = default_output_dir(self.model_name_or_path, self.dataset_name)
        if problems := type_problems(self):
            raise UserError("; ".join(problems))
        problems: list[str] = []
        self.model_init_kwargs = json_mapping("model_init_kwargs", self.model_init_kwargs, problems)
        self.take_own_options_from_init_kwargs(problems)
        problems += train_problems(self)
        self.lora_target_modules = names_in(self.lora_target_modules)
        if not self.lora_target_modules:
            problems.append("--lora_target_modules needs 'all-linear' or at least one module name")
        elif {"all-linear", "default"} & set(self.lora_target_modules) and len(self.lora_target_modules) > 1:
            problems.append("--lora_target_modules: 'all-linear' / 'default' cannot be combined with module names")
        self.report_to = names_in(self.report_to) or ["none"]
        problems += tracker_problems(self.report_to)
        if problems:
            raise UserError("; ".join(problems))

    def take_own_options_from_init_kwargs(self, problems: list[str]) -> None:
        """TRL users put dtype (or torch_dtype), revision, attn_implementation and trust_remote_code into
        model_init_kwargs; here they are options of their own, so they move onto them (one source of
        truth: the saved training_config.json and the start-up line show what loaded)."""
        kwargs = self.model_init_kwargs or {}
        if "num_labels" in kwargs and kwargs.pop("num_labels") != 1:
            problems.append("--model_init_kwargs: a reward model has num_labels=1 (one reward per sequence)")
        own = {"dtype": "dtype", "torch_dtype": "dtype", "revision": "model_revision"}
        own |= {"attn_implementation": "attn_implementation", "trust_remote_code": "trust_remote_code"}
        for key in [k for k in kwargs if k in own]:
            name, value = own[key], kwargs.pop(key)
            value = str(value).removeprefix("torch.") if name == "dtype" else value
            if getattr(self, name) not in (self.default(name), value):
                problems.append(f"--model_init_kwargs {key}={value!r} contradicts --{name} {getattr(self, name)!r}")
            setattr(self, name, value)
        self.model_init_kwargs = kwargs or None

    @classmethod
    def default(cls, name: str) -> Any:
        """An option's default value (the factory's value for list options)."""
        f = cls.__dataclass_fields__[name]
        return f.default_factory() if f.default is MISSING else f.default

    @property
    def pairs_per_step(self) -> int:
        """Pairs in one optimizer step (one process)."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps

    def to_dict(self) -> dict[str, Any]:
        """The options as saved in training_config.json and sent to trackers: never the Hub token."""
        return {**asdict(self), "hub_token": None}


def pick(group: type[Group], cfg: Any) -> Group:
    """The option group `group` (a dataclass whose field names are TrainConfig's) filled from flat options."""
    return group(**{f.name: getattr(cfg, f.name) for f in fields(group)})


def parse_config(argv: list[str] | None = None, saved: dict[str, Any] | None = None) -> TrainConfig:
    """Parse `argv` (default: sys.argv[1:]) into a TrainConfig.

    `--config FILE.yaml|.json` loads defaults from a file; flags given on the command line win.
    `saved` (a resumed run's options) sits under both.

    >>> parse_config(["--learning_rate", "3e-5", "--bf16"]).learning_rate
    3e-05
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = "%(prog)s [--config FILE] [--OPTION VALUE ...]"  # not argparse's list of all ~90 flags
    parser = make_parser(TrainConfig, "Train a Bradley-Terry reward model.", TRAIN_GROUPS, usage)
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of options; flags override it.")
    pre, _ = parser.parse_known_args(argv)
    parser.set_defaults(**{**(saved or {}), **(load_config_file(pre.config) if pre.config else {})})  # file wins
    return parse_into(parser, argv)


def make_parser(
    dataclass_type: type, description: str, groups: dict[str, str] | None = None, usage: str | None = None
) -> HfArgumentParser:
    """An HfArgumentParser whose errors are one-line UserErrors (exit 2, no usage dump), and whose --help
    lists the options under `groups`' headings (reward/options.py); `usage` replaces argparse's
    list of every flag."""
    parser = HfArgumentParser(dataclass_type, description=description, usage=usage, formatter_class=HelpFormatter)
    arrange(parser, groups or {})

    def error(message: str):
        raise UserError(f"{message} (see --help)")

    parser.error = error
    return parser


def parse_into(parser: HfArgumentParser, argv: list[str]) -> Any:
    try:
        cfg, *rest = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except (TypeError, ValueError) as exc:  # a value the dataclass rejects, e.g. a bad literal
        if isinstance(exc, UserError):
            raise
        raise UserError(first_line(exc)) from exc
    unknown = rest[-1] if rest and isinstance(rest[-1], list) else []
    if unknown:
        raise UserError(f"unknown option(s): {' '.join(unknown)} (see --help)")
    return cfg


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML/JSON options file and check that every key is a TrainConfig field."""
    import yaml  # transformers depends on PyYAML

    try:
        text = Path(path).read_text()
        values = (yaml.safe_load(text) if path.endswith((".yaml", ".yml")) else json.loads(text)) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: could not read the options file ({first_line(exc)})") from exc
    if not isinstance(values, dict):
        raise UserError(f"{path}: the options file must hold a mapping of option: value")
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"{path}: unknown option(s) {', '.join(unknown)}")
    return values
