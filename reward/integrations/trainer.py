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
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.trainer_utils import TrainOutput

from reward.config import TrainConfig
from reward.errors import UserError
from reward.integrations.api_checks import (
    check_args,
    check_commit_message,
    check_eval_dataset,
    check_model,
    check_output_dir,
    check_prefix,
    check_resume,
    check_tokenizer,
    check_train_dataset,
    check_unsupported,
)


class TrainerState:
    """The part of HF's TrainerState that scripts read: the step reached and the logged records."""

    def __init__(self) -> None:
        self.global_step = 0
        self.log_history: list[dict[str, Any]] = []


class RewardTrainer:
    """TRL's `RewardTrainer(model, args, processing_class, train_dataset, eval_dataset, peft_config)`.

    `model`: a loaded sequence-classification model (num_labels=1; not a causal LM or a base model; not a
    peft model: pass the base and `peft_config`) or a name/folder (str or Path) for `args.model_name_or_path`.
    `args`: a `reward.RewardConfig` (not trl's). `processing_class`: its tokenizer (default: loaded from the
    model's name). `train_dataset`: a `datasets.Dataset` (or DatasetDict with the `args.dataset_train_split`
    split) of any format train.py reads; None trains on `args.dataset_name`. `eval_dataset`: a Dataset, or a
    dict of name -> Dataset (each evaluated during training and by `evaluate()`, logged under `eval_<name>_`,
    as TRL). `peft_config`: a `peft.LoraConfig`, run as our `--use_peft`. Every argument, here and in each
    method, is checked before anything loads (reward/integrations/api_checks.py): a list of rows, a streaming
    dataset or an empty one is a one-line error naming the argument, never silently ignored.
    """

    def __init__(
        self,
        model: PreTrainedModel | str | os.PathLike | None = None,
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
        from reward.presets.tiny import tokenizer_for

        # every argument checked before anything loads (reward/integrations/api_checks.py)
        check_unsupported({"data_collator": data_collator, "compute_metrics": compute_metrics, "callbacks": callbacks,
                           "optimizers": optimizers, "optimizer_cls_and_kwargs": optimizer_cls_and_kwargs,
                           "preprocess_logits_for_metrics": preprocess_logits_for_metrics})  # fmt: skip
        model = check_model(model)
        args = check_args(args)
        processing_class = check_tokenizer(processing_class, model)
        train_dataset = check_train_dataset(train_dataset, args.dataset_train_split)
        eval_dataset = check_eval_dataset(eval_dataset, "RewardTrainer(eval_dataset=...)")
        if train_dataset is None and eval_dataset is not None:
            raise UserError("RewardTrainer: an eval_dataset needs a train_dataset (or evaluate() it after training)")
        changes: dict[str, Any] = {}
        if isinstance(model, str):
            changes["model_name_or_path"] = model
        elif model is not None:
            changes["model_name_or_path"] = model.name_or_path or type(model).__name__
        if train_dataset is not None and args.dataset_name == TrainConfig.default("dataset_name"):
            changes["dataset_name"] = dataset_description(train_dataset, args.dataset_train_split)
        if peft_config is not None:
            from reward.finetune.lora import lora_options  # peft is an optional extra

            changes |= lora_options(peft_config, args.disable_dropout)
        self.args = replace(args, **changes) if changes else args
        self.model = model if isinstance(model, PreTrainedModel) else None
        if processing_class is None and self.model is not None:
            processing_class = tokenizer_for(self.model.name_or_path, self.args.trust_remote_code)
        self.processing_class = processing_class
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.state = TrainerState()
        self.card: dict | None = None  # the model card's facts, once trained

    def train(self, resume_from_checkpoint: str | os.PathLike | bool | None = None) -> TrainOutput:
        """Train as `python train.py` would with these options. `resume_from_checkpoint`: a checkpoint
        folder, True or 'latest' (the newest in output_dir); None keeps `args.resume_from_checkpoint`
        (unlike HF's Trainer, which reads only this argument). A resumed run takes its weights and
        tokenizer from the checkpoint, so `trainer.model` is then the checkpoint's model, trained."""
        from reward.metrics import eval_record
        from reward.recipe import main

        resume_from_checkpoint = check_resume(resume_from_checkpoint)
        cfg = self.args
        if resume_from_checkpoint is not None:
            resume = "latest" if resume_from_checkpoint is True else resume_from_checkpoint or None
            cfg = replace(cfg, resume_from_checkpoint=resume)
        named = self.eval_dataset if isinstance(self.eval_dataset, dict) else None
        if self.eval_dataset is not None and cfg.eval_strategy == "no":  # TRL's default: said, not silently skipped
            print("eval_dataset: not evaluated during training (eval_strategy 'no', TRL's default); set "
                  "eval_strategy='steps' or 'epoch', or call trainer.evaluate()")  # fmt: skip
        run = main(cfg, self.training_data(), model=self.model, tokenizer=self.processing_class, eval_sets=named)
        self.model, self.processing_class, self.card = run.model, run.tokenizer, run.card
        self.state.global_step = run.steps
        self.state.log_history = read_records(Path(cfg.output_dir) / "metrics.jsonl")
        train_records = [r for r in self.state.log_history if "loss" in r and "pairs" in r]
        pairs = sum(r["pairs"] for r in train_records)
        loss = sum(r["loss"] * r["pairs"] for r in train_records) / pairs if pairs else float("nan")
        metrics = {"train_loss": loss, **eval_record({"": run.eval or {}})}
        return TrainOutput(run.steps, loss, metrics)

    def training_data(self) -> Dataset | DatasetDict | None:
        """The rows main() reads: train_dataset, with a single eval_dataset as its test split (a dict of
        them goes to main() as named evaluation sets)."""
        train = self.train_dataset
        if train is None or not isinstance(self.eval_dataset, Dataset):
            return train
        train = train[self.args.dataset_train_split] if isinstance(train, DatasetDict) else train
        return DatasetDict({self.args.dataset_train_split: train, self.args.dataset_test_split: self.eval_dataset})

    def evaluate(
        self, eval_dataset: Dataset | dict[str, Dataset] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Loss, accuracy, margin and reward spread over every pair (reward/evaluate.py `evaluate`), as
        `eval_loss`, ... (a dict of datasets: `eval_<name>_loss`, ...). Returned and appended to
        `state.log_history` (not to metrics.jsonl or the trackers, which hold the run's own records)."""
        sets = check_eval_dataset(eval_dataset, "evaluate(eval_dataset=...)")
        metric_key_prefix = check_prefix(metric_key_prefix)
        sets = sets if sets is not None else self.eval_dataset
        if sets is None:
            raise UserError("evaluate(): no eval_dataset (pass one here or to RewardTrainer)")
        model, tokenizer = self.ready_model()
        metrics = {}
        for name, rows in (sets if isinstance(sets, dict) else {"": sets}).items():
            prefix = f"{metric_key_prefix}_{name}_" if name else f"{metric_key_prefix}_"
            metrics |= {prefix + k: v for k, v in evaluate_rows(model, tokenizer, rows, self.args).items()}
        self.state.log_history.append({**metrics, "step": self.state.global_step})
        if self.card is not None:  # save_model() after evaluate(): the card shows this last evaluation
            self.card = {**self.card, "metrics": metrics}
        return metrics

    def save_model(self, output_dir: str | os.PathLike | None = None) -> Path:
        """The pipeline-ready folder (reward/export.py: merged LoRA, reward_format, reward_stats, the model
        card after training) in `output_dir` (default: args.output_dir), written as train() writes it.
        One process writes it; an FSDP run's folder is the one train() already wrote."""
        from reward.parallel.distributed import init_world
        from reward.run.parts import model_writer
        from reward.run.publish import export_model

        output_dir = check_output_dir(output_dir)
        if self.args.fsdp:
            raise UserError("save_model() under --fsdp: train() already wrote the gathered model to output_dir")
        model, tokenizer = self.ready_model()
        target = Path(output_dir or self.args.output_dir)
        if init_world().is_main:
            export_model(target, model_writer(self.args, model, tokenizer, self.card), None, model)
        return target

    def push_to_hub(self, commit_message: str = "End of training") -> None:
        """Upload the saved folder (args.output_dir) to args.hub_model_id, as `--push_to_hub` does at the end."""
        from reward.integrations.hub import check_hub, push

        commit_message = check_commit_message(commit_message)
        target = check_hub(replace(self.args, push_to_hub=True))
        push(target, Path(self.args.output_dir), commit_message)

    def ready_model(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The model and tokenizer as training would start from them (loaded from the name if need be),
        on the device training would use, for evaluate() / save_model() before train()."""
        from reward.config import pick
        from reward.model import load_model, match_vocabulary, pick_device, ready_for_reward
        from reward.presets.tiny import model_config_for, tokenizer_for
        from reward.run.parts import loading_options
        from reward.tokenizer import TokenizerOptions, prepare_tokenizer

        cfg = self.args
        if self.processing_class is None:
            self.processing_class = tokenizer_for(cfg.model_name_or_path, cfg.trust_remote_code, cfg.model_revision)
        for note in prepare_tokenizer(self.processing_class, pick(TokenizerOptions, cfg), self.card is not None):
            print(note)
        if self.model is None:
            name, tokenizer = cfg.model_name_or_path, self.processing_class
            options = {"config": model_config_for(name, tokenizer), "revision": cfg.model_revision}
            self.model = load_model(name, tokenizer, **options, **loading_options(cfg))
            self.model.to(pick_device(cfg.use_cpu))
        ready_for_reward(self.model, self.processing_class, cfg.disable_dropout)
        match_vocabulary(self.model, self.processing_class)
        return self.model, self.processing_class


def evaluate_rows(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Dataset | DatasetDict, cfg: TrainConfig
) -> dict:
    """A dataset of pairs (or rankings) evaluated exactly as training's held-out split is: loaded and validated
    (reward/data.py), formatted as the model records it was trained (`reward_format`; before training, as
    the options say), tokenized, then the run's evaluation (reward/run/parts.py `evaluation`)."""
    from reward.formatting import choose_format, read_format, tokenize_pairs
    from reward.labels.rated import RatingScale, read_rating_scale, tokenize_ratings
    from reward.labels.rows import RATED
    from reward.model import model_device, position_limit, resolve_precision, unwrap
    from reward.recipe import requested_format
    from reward.run.parts import evaluation
    from reward.run.rows import read_eval_set

    data = read_eval_set(cfg, rows)
    recorded, record = read_format(model.config)
    text_format = recorded if record is not None else choose_format(requested_format(cfg), tokenizer, data.format, None)
    limit = position_limit(unwrap(model))  # as training: a pair past a BERT's 512 positions is dropped, counted
    precision = resolve_precision(cfg.bf16, cfg.fp16, model_device(model))
    if data.format == RATED:  # rated completions: by prompt, on the scale the model was trained on (reward/labels)
        prompts, kept = tokenize_ratings(data.train, tokenizer, text_format, cfg.max_length, None, "eval", limit)
        if not kept.completions:
            raise UserError(f"evaluate(): no rated completion left ({kept.describe(cfg.max_length)})")
        scale = read_rating_scale(unwrap(model).config) or RatingScale()  # before training: the raw scale
        return evaluation(cfg, precision, model, tokenizer.pad_token_id, scale)(model, prompts)
    options = (cfg.max_length, cfg.dataset_num_proc, "eval", text_format, data.carried)
    pairs, stats = tokenize_pairs(data.train, tokenizer, data.format, *options, position_limit=limit)
    if stats.kept == 0:
        raise UserError(f"evaluate(): no pair left ({stats.describe(cfg.max_length)})")
    if dropped := stats.dropped_past_positions:
        print(f"evaluate(): dropped {dropped} pairs longer than the {limit} positions the model has")
    return evaluation(cfg, precision, model, tokenizer.pad_token_id)(model, pairs)


def dataset_description(rows: Dataset | DatasetDict, split: str) -> str:
    """What training_config.json and the model card name as the data of a run handed a Dataset (unless
    `args.dataset_name` names it): its size, columns and fingerprint, which a same dataset keeps (a resume).

    >>> dataset_description(Dataset.from_dict({"chosen": ["a"], "rejected": ["b"]}), "train")[:51]
    '<Dataset: 1 rows, columns chosen, rejected; fingerp'
    """
    rows = rows[split] if isinstance(rows, DatasetDict) else rows
    return f"<Dataset: {len(rows)} rows, columns {', '.join(rows.column_names)}; fingerprint {rows._fingerprint}>"


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
