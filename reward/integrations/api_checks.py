"""What each argument of `RewardTrainer`'s API accepts, checked before anything loads.

Python's own errors for a wrong argument come late and far from it (a list `eval_dataset` was silently
never evaluated, an `IterableDataset` failed in pathlib, a causal LM in the loss after training had
started), so each argument is checked where it is given: a wrong one is a `UserError` naming it, what
it accepts and what it got, e.g.

    RewardTrainer(eval_dataset=...): a datasets.Dataset, or a dict of name -> Dataset; got list (rows in a
    list: datasets.Dataset.from_list(rows))

Lists of rows are refused rather than converted, as TRL does: one way in, and the hint says which.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainingArguments

from reward.config import TrainConfig
from reward.errors import UserError

# RewardTrainer arguments of HF's Trainer that we do not run: name -> why, and what to use instead
UNSUPPORTED = {
    "data_collator": "the pairwise collator is ours (reward/collate.py)",
    "compute_metrics": "evaluation reports loss, accuracy, margin, reward spread, ECE and length bias",
    "callbacks": "use report_to (TensorBoard, trackio, W&B) or read trainer.state.log_history / metrics.jsonl",
    "optimizers": "AdamW with the HF schedule is the loop (reward/loop.py)",
    "optimizer_cls_and_kwargs": "AdamW with the HF schedule is the loop (reward/loop.py)",
    "preprocess_logits_for_metrics": "rewards are read by the model's own head",
}

STREAMING = (
    "streaming datasets are not supported: the data order and exact resume need the row count; load without "
    "streaming=True or materialize with Dataset.from_generator/from_list"
)
EVAL_SETS = "a datasets.Dataset, or a dict of name -> Dataset (a DatasetDict: each split is a named set)"
MODELS = (
    "a PreTrainedModel (AutoModelForSequenceClassification.from_pretrained(name, num_labels=1)) or a model name / "
    "folder"
)


def type_name(value: Any) -> str:
    """`list`, `trl.RewardConfig`, `pandas.DataFrame`: the given type, with its package when not a builtin.

    >>> type_name([]), type_name(Path("x"))
    ('list', 'pathlib.PosixPath')
    """
    kind = type(value)
    package = kind.__module__.split(".")[0]
    return kind.__name__ if package == "builtins" else f"{package}.{kind.__name__}"


def refusal(where: str, accepts: str, value: Any, hint: str = "") -> UserError:
    """The one line: the argument, what it accepts, what it got, and how to get there when we know."""
    return UserError(f"{where}: {accepts}; got {type_name(value)}" + (f" ({hint})" if hint else ""))


def rows_hint(value: Any) -> str:
    """How to turn rows given in another form into a Dataset."""
    if isinstance(value, (list, tuple)):
        return "rows in a list: datasets.Dataset.from_list(rows)"
    if type_name(value) == "pandas.DataFrame":
        return "datasets.Dataset.from_pandas(frame)"
    if isinstance(value, (str, os.PathLike)):
        return "a file, folder or Hub name goes in args.dataset_name, or datasets.load_dataset(name, split='train')"
    return ""


def check_rows(where: str, rows: Dataset) -> None:
    """A Dataset that holds rows (an empty one would train or evaluate nothing, silently)."""
    if rows.num_rows == 0:
        raise UserError(f"{where}: the Dataset has no rows")


def check_unsupported(given: dict[str, Any]) -> None:
    """HF Trainer arguments we do not run, refused when set (None, an empty list, and HF's `(None, None)` are unset)."""
    unset = [None, (), [], {}, (None, None), [None, None]]
    if refused := [f"{name}: {UNSUPPORTED[name]}" for name, value in given.items() if not is_unset(value, unset)]:
        raise UserError("RewardTrainer does not take " + "; ".join(refused))


def is_unset(value: Any, unset: list[Any]) -> bool:
    # by type first: == on an arbitrary object (a tensor, an optimizer) may not return a bool
    return value is None or (isinstance(value, (list, tuple, dict)) and value in unset)


def check_train_dataset(value: Any, split: str) -> Dataset | DatasetDict | None:
    """None (args.dataset_name), a Dataset, or a DatasetDict holding `split` (args.dataset_train_split)."""
    where = "RewardTrainer(train_dataset=...)"
    if value is None:
        return None
    if isinstance(value, (IterableDataset, IterableDatasetDict)):
        raise UserError(f"{where}: {STREAMING}")
    if isinstance(value, DatasetDict):
        if split not in value:
            raise UserError(
                f"{where}: the DatasetDict has no {split!r} split (args.dataset_train_split); it has "
                f"{', '.join(map(repr, value)) or 'none'}"
            )
        check_rows(f"{where}[{split!r}]", value[split])
        return value
    if not isinstance(value, Dataset):
        accepts = f"a datasets.Dataset, or a DatasetDict with a {split!r} split (args.dataset_train_split)"
        raise refusal(where, accepts, value, rows_hint(value))
    check_rows(where, value)
    return value


def check_eval_dataset(value: Any, where: str) -> Dataset | dict[str, Dataset] | None:
    """None, a Dataset, or a non-empty dict of non-empty names -> Datasets, each with rows."""
    if value is None:
        return None
    if isinstance(value, (IterableDataset, IterableDatasetDict)):
        raise UserError(f"{where}: {STREAMING}")
    if isinstance(value, Dataset):
        check_rows(where, value)
        return value
    if not isinstance(value, dict):
        raise refusal(where, EVAL_SETS, value, rows_hint(value))
    if not value:
        raise UserError(f"{where}: an empty dict (give at least one name -> Dataset, or None)")
    for name, rows in value.items():
        if not isinstance(name, str) or not name:
            raise UserError(f"{where}: the name {name!r} is not a non-empty str (it prefixes the metrics: eval_NAME_)")
        if isinstance(rows, IterableDataset):
            raise UserError(f"{where}[{name!r}]: {STREAMING}")
        if not isinstance(rows, Dataset):
            raise refusal(f"{where}[{name!r}]", "a datasets.Dataset", rows, rows_hint(rows))
        check_rows(f"{where}[{name!r}]", rows)
    return value


def check_args(value: Any) -> TrainConfig:
    """A reward.RewardConfig (or our TrainConfig); None is RewardConfig()'s defaults."""
    from reward.integrations.trl_options import RewardConfig

    if value is None:
        return RewardConfig()
    if isinstance(value, TrainConfig):
        return value
    hint = "build one with RewardConfig(**options)" if isinstance(value, dict) else ""
    if isinstance(value, TrainingArguments):  # trl.RewardConfig is one
        hint = "from reward import RewardConfig: it takes the same keyword arguments"
    raise refusal("RewardTrainer(args=...)", "a reward.RewardConfig (or reward.TrainConfig)", value, hint)


def check_model(value: Any) -> PreTrainedModel | str | None:
    """None (args.model_name_or_path), a name or folder (a Path is read as its str), or a model we can train."""
    from reward.model import trainable_problem

    where = "RewardTrainer(model=...)"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None or (isinstance(value, str) and value.strip()):
        return value
    if isinstance(value, str):
        raise UserError(f"{where}: an empty name (give a model name or folder, or a loaded model)")
    if isinstance(value, nn.Module) and hasattr(value, "peft_config"):  # a PeftModel is no PreTrainedModel
        raise UserError(f"{where}: {trainable_problem(value)}")
    if not isinstance(value, PreTrainedModel):
        hint = "a plain torch module has no config or tokenizer to save" if isinstance(value, nn.Module) else ""
        raise refusal(where, MODELS, value, hint)
    if problem := trainable_problem(value):
        raise UserError(f"{where}: {problem}")
    return value


def check_tokenizer(value: Any, model: PreTrainedModel | str | None) -> PreTrainedTokenizerBase | None:
    """A transformers tokenizer, or None when the model has a name to load one from."""
    where = "RewardTrainer(processing_class=...)"
    if value is None:
        if isinstance(model, PreTrainedModel) and not model.name_or_path:
            raise UserError(f"{where}: the model has no name to load its tokenizer from (built from a config): pass it")
        return None
    if isinstance(value, PreTrainedTokenizerBase):
        return value
    if hasattr(value, "tokenizer") and isinstance(value.tokenizer, PreTrainedTokenizerBase):
        hint = "a processor: pass its tokenizer, processing_class=processor.tokenizer"
    elif isinstance(value, (str, os.PathLike)):
        hint = "a name is loaded with AutoTokenizer.from_pretrained(name)"
    elif type_name(value) == "tokenizers.Tokenizer":
        hint = "wrap it: PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=...)"
    else:
        hint = ""
    raise refusal(where, "a transformers tokenizer (PreTrainedTokenizerBase)", value, hint)


def check_resume(value: Any) -> str | bool | None:
    """`train(resume_from_checkpoint=...)`: None (args'), a bool, 'latest' or a checkpoint folder (str or Path)."""
    where = "train(resume_from_checkpoint=...)"
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if value is None or isinstance(value, bool) or (isinstance(value, str) and value.strip()):
        return value
    if isinstance(value, str):
        raise UserError(f"{where}: an empty str (give a checkpoint folder, True or 'latest', or False)")
    raise refusal(where, "a checkpoint folder (str or Path), True or 'latest' (the newest), False or None", value)


def check_prefix(value: Any) -> str:
    """`evaluate(metric_key_prefix=...)`: a non-empty str (the metrics are PREFIX_loss, ...)."""
    if not isinstance(value, str) or not value:
        shown = "an empty str" if value == "" else type_name(value)
        raise UserError(f"evaluate(metric_key_prefix=...): a non-empty str (metrics are PREFIX_loss, ...); got {shown}")
    return value


def check_output_dir(value: Any) -> Path | None:
    """`save_model(output_dir=...)`: None (args.output_dir) or a folder (str or Path)."""
    where = "save_model(output_dir=...)"
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip():
        return Path(value)
    if isinstance(value, (str, os.PathLike)):
        raise UserError(f"{where}: an empty path (give a folder, or None for args.output_dir)")
    raise refusal(where, "a folder (str or Path), or None for args.output_dir", value)


def check_commit_message(value: Any) -> str:
    """`push_to_hub(commit_message=...)`: a non-empty str."""
    if not isinstance(value, str) or not value.strip():
        shown = "an empty str" if isinstance(value, str) else type_name(value)
        raise UserError(f"push_to_hub(commit_message=...): a non-empty str; got {shown}")
    return value
