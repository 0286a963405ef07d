"""`reward.RewardConfig` and `reward.RewardTrainer`: TRL's Python API, over our own recipe.

    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from reward import RewardConfig, RewardTrainer          # instead of: from trl import ...

    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=1)
    trainer = RewardTrainer(model=model, args=RewardConfig(output_dir="rm", learning_rate=1e-5),
                            processing_class=AutoTokenizer.from_pretrained(name), train_dataset=dataset)
    trainer.train()

A thin face, not a second trainer: `train()` is `reward.recipe.main` (what `python train.py` runs)
with the objects handed over, so the loop, the collator, the checkpoints and the saved folder are
the same. TRL is never imported. `RewardConfig` is our `TrainConfig` with TRL's defaults where we
share an option, and it takes every TRL field name (reward/integrations/trl_options.py says, field
by field, what each does here; docs/trl.md is that table).
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_utils import TrainOutput

from reward.config import TrainConfig, option
from reward.errors import UserError
from reward.integrations.trl_options import IGNORED, MAPPED, REFUSED
from reward.options import type_problem

REFUSED_ACCEPTS = {"optim": ("adamw_torch", "adamw_torch_fused"), "logging_strategy": ("steps",)}


@dataclass
class RewardConfig(TrainConfig):
    """TrainConfig with TRL 1.16 RewardConfig's defaults for the options we share (trl/trainer/reward_config.py)."""

    output_dir: str = option("trainer_output", "Where checkpoints, metrics.jsonl and the model go (HF's default).")
    per_device_train_batch_size: int = option(8, "Pairs per micro-batch (TRL's default).")
    per_device_eval_batch_size: int = option(8, "Pairs per evaluation batch (TRL's default).")
    num_train_epochs: float = option(3.0, "Passes over the training pairs (TRL's default).")
    warmup_ratio: float = option(0.0, "Warmup as a fraction of the steps (TRL: none).")
    warmup_steps: float = option(0, "Warmup steps; a float in (0, 1) is a fraction of the steps (transformers 5).")
    gradient_checkpointing: bool = option(True, "Recompute activations in backward (TRL's default: on).")
    bf16: bool | None = option(None, "bf16 autocast; None: on where a GPU supports it, fp32 on CPU.")
    eval_strategy: str = option("no", "'no' (TRL's default), 'steps' or 'epoch'.")
    eval_steps: int | None = option(None, "Evaluate every this many steps; None: logging_steps (HF).")
    eval_split_size: float = option(0.0, "Held out of train_dataset when no eval_dataset is given (TRL: none).")
    save_steps: int = option(500, "Save a checkpoint-STEP every this many steps (HF's default).")
    eos_token: str | None = option(None, "Make this token the tokenizer's EOS (TRL's option).")
    pad_token: str | None = option(None, "Make this token the tokenizer's pad (TRL's deprecated option).")

    def __post_init__(self) -> None:
        if isinstance(self.warmup_steps, float) and 0 < self.warmup_steps < 1:  # transformers 5: a ratio
            self.warmup_ratio, self.warmup_steps = self.warmup_steps, 0
        elif isinstance(self.warmup_steps, float) and self.warmup_steps.is_integer():
            self.warmup_steps = int(self.warmup_steps)
        if self.eval_steps is None:
            self.eval_steps = self.logging_steps
        if self.bf16 is None:  # TRL says True and then stops on CPU; we say where it works
            self.bf16 = not (self.fp16 or self.use_cpu) and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        super().__post_init__()


def from_trl_names(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`RewardConfig(**kwargs)` with TRL's names: ours kept, TRL-only ones mapped, ignored or refused."""
    hints = typing.get_type_hints(RewardConfig)
    out, problems = {}, []
    for name, value in kwargs.items():
        if name in hints:  # ours; TRL's "unset" spellings (None, '', 'auto') of a field we type otherwise: default
            if not (value in (None, "", "auto") and type_problem(name, value, hints[name])):
                out[name] = value
        elif name == "activation_checkpointing":
            if value is not None:
                out["gradient_checkpointing"] = bool(value)
        elif name == "save_strategy":
            if str(value) == "no":
                out["save_steps"] = 0
            elif str(value) != "steps":
                problems.append(f"save_strategy={value!r} is not supported ({MAPPED[name]})")
        elif name == "train_sampling_strategy":
            if str(value) not in ("random", "group_by_length"):
                problems.append(f"train_sampling_strategy={value!r} is not supported ({MAPPED[name]})")
            out.setdefault("group_by_length", str(value) == "group_by_length")
        elif name in REFUSED:
            if value not in (None, False, 0, "", *REFUSED_ACCEPTS.get(name, ())):
                problems.append(f"{name}={value!r} is not supported ({REFUSED[name]})")
        elif name not in IGNORED:
            problems.append(f"unknown option {name!r} (neither ours nor TRL's; see docs/trl.md)")
    if problems:
        raise UserError("RewardConfig: " + "; ".join(problems))
    return out


GENERATED_INIT = RewardConfig.__init__


def reward_config_init(self: RewardConfig, output_dir: str | None = None, **kwargs: Any) -> None:
    """RewardConfig(output_dir=None, **any TRL RewardConfig field); output_dir may come first, as in HF."""
    if output_dir is not None:
        kwargs["output_dir"] = output_dir
    GENERATED_INIT(self, **from_trl_names(kwargs))


RewardConfig.__init__ = reward_config_init  # every TRL name accepted, each handled as trl_options.py says


class TrainerState:
    """The part of HF's TrainerState that scripts read: the step reached and the logged records."""

    def __init__(self) -> None:
        self.global_step = 0
        self.log_history: list[dict[str, Any]] = []


UNSUPPORTED = {
    "data_collator": "the pairwise collator is ours (reward/collate.py); pass token ids as input_ids_chosen/...",
    "compute_metrics": "evaluation reports loss, accuracy, margin, reward spread, ECE and length bias",
    "callbacks": "use report_to (TensorBoard, trackio, W&B) or read trainer.state.log_history / metrics.jsonl",
    "optimizers": "AdamW with the HF schedule is the loop (reward/loop.py)",
    "optimizer_cls_and_kwargs": "AdamW with the HF schedule is the loop (reward/loop.py)",
    "preprocess_logits_for_metrics": "rewards are read by the model's own head",
}


class RewardTrainer:
    """TRL's `RewardTrainer(model, args, processing_class, train_dataset, eval_dataset, peft_config)`.

    `model`: a loaded sequence-classification model (num_labels=1) or a name/folder for
    `args.model_name_or_path`. `processing_class`: its tokenizer (default: loaded from the model's
    name). `train_dataset`: a `datasets.Dataset` (or DatasetDict with a train split) of any format
    train.py reads; None trains on `args.dataset_name`. `eval_dataset`: a Dataset, or a dict of them
    (each evaluated by `evaluate()` under `eval_<name>_`; training-time evaluation uses the first).
    `peft_config`: a `peft.LoraConfig`, run as our `--use_peft` (reward/finetune/lora.py).
    """

    def __init__(
        self,
        model: PreTrainedModel | str | None = None,
        args: TrainConfig | None = None,
        data_collator: Any = None,
        train_dataset: Dataset | DatasetDict | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        compute_metrics: Any = None,
        callbacks: Any = None,
        optimizers: Any = (None, None),
        optimizer_cls_and_kwargs: Any = None,
        preprocess_logits_for_metrics: Any = None,
        peft_config: Any = None,
    ) -> None:
        given = {"data_collator": data_collator, "compute_metrics": compute_metrics, "callbacks": callbacks}
        given |= {"optimizer_cls_and_kwargs": optimizer_cls_and_kwargs, "optimizers": optimizers != (None, None)}
        given |= {"preprocess_logits_for_metrics": preprocess_logits_for_metrics}
        if refused := [f"{name}: {UNSUPPORTED[name]}" for name, value in given.items() if value]:
            raise UserError("RewardTrainer does not take " + "; ".join(refused))
        args = args if args is not None else RewardConfig()
        changes: dict[str, Any] = {}
        if isinstance(model, str):
            changes["model_name_or_path"] = model
        elif model is not None:
            changes["model_name_or_path"] = model.name_or_path or type(model).__name__
        if peft_config is not None:
            from reward.finetune.lora import lora_options  # peft is an optional extra

            changes |= lora_options(peft_config, args.disable_dropout)
        self.args = replace(args, **changes) if changes else args
        self.model = model if isinstance(model, PreTrainedModel) else None
        if processing_class is None and self.model is not None:
            from reward.model import load_tokenizer

            processing_class = load_tokenizer(self.model.name_or_path, self.args.trust_remote_code)
        self.processing_class = processing_class
        if processing_class is not None:
            set_special_tokens(processing_class, self.args)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.state = TrainerState()
        self.card: dict | None = None  # the model card's facts, once trained

    def train(self, resume_from_checkpoint: str | bool | None = None) -> TrainOutput:
        """Train as `python train.py` would with these options; `resume_from_checkpoint`: a checkpoint
        folder, True or 'latest' (the newest in output_dir); None keeps `args.resume_from_checkpoint`."""
        from reward.recipe import main

        cfg = self.args
        if resume_from_checkpoint is not None:
            resume = "latest" if resume_from_checkpoint is True else resume_from_checkpoint or None
            cfg = replace(cfg, resume_from_checkpoint=resume)
        result = main(cfg, self.training_data(), model=self.model, tokenizer=self.processing_class)
        self.model, self.processing_class, self.card = result.model, result.tokenizer, result.card
        self.state.global_step = result.steps
        self.state.log_history = read_records(Path(cfg.output_dir) / "metrics.jsonl")
        train_records = [r for r in self.state.log_history if "loss" in r and "pairs" in r]
        pairs = sum(r["pairs"] for r in train_records)
        loss = sum(r["loss"] * r["pairs"] for r in train_records) / pairs if pairs else float("nan")
        return TrainOutput(
            result.steps, loss, {"train_loss": loss, **{f"eval_{k}": v for k, v in (result.eval or {}).items()}}
        )

    def training_data(self) -> Dataset | DatasetDict | None:
        """The rows main() reads: train_dataset, with the (first) eval_dataset as its test split."""
        train = self.train_dataset
        if train is None or self.eval_dataset is None:
            return train
        train = train[self.args.dataset_train_split] if isinstance(train, DatasetDict) else train
        first = next(iter(self.eval_dataset.values())) if isinstance(self.eval_dataset, dict) else self.eval_dataset
        return DatasetDict({self.args.dataset_train_split: train, self.args.dataset_test_split: first})

    def evaluate(
        self, eval_dataset: Dataset | dict[str, Dataset] | None = None, metric_key_prefix: str = "eval"
    ) -> dict:
        """Loss, accuracy, margin and reward spread over every pair (reward/loop.py `evaluate`), as
        `eval_loss`, ... (a dict of datasets: `eval_<name>_loss`, ...); logged in `state.log_history`."""
        from reward.eval.held_out import evaluate_rows

        sets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if sets is None:
            raise UserError("evaluate(): no eval_dataset (pass one here or to RewardTrainer)")
        model, tokenizer = self.ready_model()
        metrics = {}
        for name, rows in (sets if isinstance(sets, dict) else {"": sets}).items():
            prefix = f"{metric_key_prefix}_{name}_" if name else f"{metric_key_prefix}_"
            metrics |= {prefix + k: v for k, v in evaluate_rows(model, tokenizer, rows, self.args).items()}
        self.state.log_history.append({**metrics, "step": self.state.global_step})
        return metrics

    def save_model(self, output_dir: str | None = None) -> Path:
        """The pipeline-ready folder (reward/export.py `export_model`: merged LoRA, reward_format,
        reward_stats, the model card after training) in `output_dir` (default: args.output_dir)."""
        from reward.export import export_model

        model, tokenizer = self.ready_model()
        target = Path(output_dir or self.args.output_dir)
        return export_model(target, model, tokenizer, self.args.to_dict(), self.card)

    def ready_model(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model and tokenizer as training would start from them (loaded from the name if need be)."""
        from reward.model import ensure_pad_token, load_model, load_tokenizer, loading_options, ready_for_reward

        cfg = self.args
        if self.processing_class is None:
            self.processing_class = load_tokenizer(cfg.model_name_or_path, cfg.trust_remote_code, cfg.model_revision)
            set_special_tokens(self.processing_class, cfg)
        ensure_pad_token(self.processing_class)
        if self.model is None:
            name, revision = cfg.model_name_or_path, cfg.model_revision
            self.model = load_model(name, self.processing_class, revision=revision, **loading_options(cfg))
        ready_for_reward(self.model, self.processing_class, cfg.disable_dropout)
        return self.model, self.processing_class


def set_special_tokens(tokenizer: PreTrainedTokenizerBase, args: TrainConfig) -> None:
    """TRL's eos_token / pad_token options: the token must already be in the vocabulary."""
    for role in ("eos_token", "pad_token"):
        token = getattr(args, role, None)
        if token is None:
            continue
        if token not in tokenizer.get_vocab():
            raise UserError(f"{role} {token!r} is not in the tokenizer's vocabulary")
        setattr(tokenizer, role, token)


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
