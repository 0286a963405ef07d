"""Every field of TRL 1.16's `RewardConfig`, and what `reward.RewardConfig` does with it.

`RewardConfig(**kwargs)` (defined here) takes each TRL name. A field we share (`reward/config.py` has
it) works as TRL's does, with TRL's default, unless `DIFFERENT_DEFAULTS` or `DIFFERENT_BEHAVIOUR`
says what differs. A TRL-only field is one of:

- "mapped":  it sets an option of ours (e.g. `activation_checkpointing` -> `gradient_checkpointing`);
- "ignored": accepted with any value; it changes nothing that can change here (say why);
- "refused": accepted at TRL's default (or an equivalent value), a one-line error otherwise (why, what to use).

`python benchmarks/trl_fields.py` prints the table of docs/trl.md from these dicts and the installed trl;
tests/test_trainer_api.py checks the dicts against the installed trl's fields and defaults, and the
page against the printed table.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields
from typing import Any

import torch

from reward.config import TrainConfig, option
from reward.errors import UserError
from reward.options import type_problem

# shared fields whose default in reward.RewardConfig is not TRL's, and why
DIFFERENT_DEFAULTS = {
    "output_dir": "`trainer_output` (HF's value for TRL's `None`)",
    "debug": "`False` (ours: show tracebacks); TRL's is a string of HF debug modes, `''` reads as `False`",
    "fsdp": "`False`: a switch (FSDP2 over torchrun); TRL's is a string of FSDP modes, `None` reads as `False`",
    "report_to": "`'none'`, the same; kept as the list `['none']`",
    "disable_tqdm": "`False` (TRL's `None`: on unless the log level is warning or above)",
    "pad_to_multiple_of": "`None` = TRL's `'auto'` off Neuron (no padding to a multiple)",
}

# shared fields with TRL's default that do something else here, and what
DIFFERENT_BEHAVIOUR = {
    "bf16": "`None` means bf16 autocast where a GPU supports it, fp32 on CPU (TRL's `None` means `True`: on CPU its "
    "config stops)",
    "resume_from_checkpoint": "`train()` resumes from it when set (HF's `Trainer.train` reads only its own argument)",
    "eos_token": "also on the command line (`--eos_token`)",
    "pad_token": "also on the command line (`--pad_token`)",
}

# TRL-only fields that set one of ours: name -> how
MAPPED = {
    "activation_checkpointing": "sets `gradient_checkpointing` (transformers 5's new name for it)",
    "save_strategy": "`steps` keeps `save_steps`; `no` means only the final folder (`save_steps=0`); others refused",
    "train_sampling_strategy": "`group_by_length` / `random` set `group_by_length` (on unless told); others refused",
}

# TRL-only fields that cannot change a result here: name -> why
IGNORED = {
    "do_train": "HF scripts' flags; nothing reads them in the Trainer either",
    "do_eval": "HF scripts' flags; evaluation follows `eval_strategy`",
    "do_predict": "HF scripts' flags",
    "local_rank": "torchrun's LOCAL_RANK is read instead",
    "log_level": "our log is the step line and metrics.jsonl",
    "log_level_replica": "ranks > 0 print nothing",
    "log_on_each_node": "rank 0 logs",
    "logging_nan_inf_filter": "a non-finite step is skipped and counted (`max_nonfinite_steps`), never logged",
    "dataloader_num_workers": "no DataLoader: batches are built in the process (tokenized once, up front)",
    "dataloader_pin_memory": "no DataLoader",
    "dataloader_persistent_workers": "no DataLoader",
    "dataloader_prefetch_factor": "no DataLoader",
    "dataloader_multiprocessing_context": "no DataLoader",
    "dataloader_in_order": "no DataLoader",
    "dataloader_drop_last": "never dropped: the last small batch is weighted exactly (docs/loss.md)",
    "remove_unused_columns": "the columns a pair needs are chosen by the data stage",
    "label_names": "a pair has no labels: chosen beats rejected",
    "skip_memory_metrics": "no memory metrics are gathered",
    "save_on_each_node": "rank 0 saves",
    "eval_do_concat_batches": "evaluation sums exact per-pair totals",
    "eval_use_gather_object": "evaluation sums exact per-pair totals",
    "include_for_metrics": "no compute_metrics",
    "prediction_loss_only": "evaluation returns loss, accuracy, margin and reward spread",
    "batch_eval_metrics": "no compute_metrics",
    "ddp_find_unused_parameters": "no DDP wrapper: gradients are summed once per step (reward/parallel)",
    "ddp_bucket_cap_mb": "no DDP wrapper",
    "ddp_broadcast_buffers": "no DDP wrapper",
    "ddp_static_graph": "no DDP wrapper",
    "ddp_timeout": "the process group keeps torch's default timeout",
    "ddp_backend": "nccl on GPUs, gloo on CPU (reward/parallel/distributed.py)",
    "ignore_data_skip": "resume restores the data order exactly; nothing is skipped",
    "restore_callback_states_from_checkpoint": "no callbacks",
    "use_cache": "the training forward never uses the KV cache",
    "save_only_model": "checkpoints always hold the state for an exact resume",
    "hub_always_push": "pushes are synchronous: none is ever skipped",
    "include_num_input_tokens_seen": "metrics.jsonl counts pairs, and the benchmark counts tokens",
    "length_column_name": "lengths come from the tokenized pairs",
    "average_tokens_across_devices": "the loss is averaged over the step's pairs, exactly, across processes",
}

# TRL-only fields we do not run: name -> why, and what to use
REFUSED = {
    "lr_scheduler_kwargs": "schedules run without kwargs (reward/options.py SCHEDULERS)",
    "optim_args": "AdamW only",
    "optim_target_modules": "AdamW only",
    "label_smoothing_factor": "0 only: TRL's reward loss never reads it; ours is `label_smoothing` (the BT ε)",
    "logging_strategy": "`steps` only (a record every `logging_steps`)",
    "bf16_full_eval": "evaluation runs in the training precision",
    "fp16_full_eval": "evaluation runs in the training precision",
    "tf32": "set torch.backends.cuda.matmul.allow_tf32 yourself",
    "activation_checkpointing_kwargs": "non-reentrant checkpointing only",
    "gradient_checkpointing_kwargs": "non-reentrant checkpointing only",
    "torch_compile_backend": "`torch_compile` with torch's defaults",
    "torch_compile_mode": "`torch_compile` with torch's defaults",
    "use_liger_kernel": "not wired in",
    "liger_kernel_config": "not wired in",
    "neftune_noise_alpha": "NEFTune is an SFT technique; a reward model reads clean embeddings",
    "torch_empty_cache_steps": "not needed: no allocator churn between steps",
    "auto_find_batch_size": "choose `per_device_train_batch_size`; resume needs a fixed one",
    "logging_first_step": "step records every `logging_steps`",
    "trackio_space_id": "trackio logs locally; push its project to a Space yourself",
    "trackio_bucket_id": "trackio logs locally",
    "trackio_static_space_id": "trackio logs locally",
    "eval_delay": "evaluation follows `eval_strategy` / `eval_steps`",
    "eval_on_start": "call `trainer.evaluate()` before `train()`",
    "eval_accumulation_steps": "evaluation keeps only per-pair totals",
    "enable_jit_checkpoint": "SIGINT/SIGTERM already save a checkpoint and exit (reward/run/signals.py)",
    "hub_revision": "pushes go to the main branch",
    "load_best_model_at_end": "the final model is the one saved; every checkpoint-STEP is a pipeline folder",
    "metric_for_best_model": "no best-model selection",
    "greater_is_better": "no best-model selection",
    "full_determinism": "runs are seeded and resume exactly; deterministic kernels are torch's switch",
    "data_seed": "`seed` orders the data",
    "accelerator_config": "no Accelerate",
    "parallelism_config": "no Accelerate: torchrun + `fsdp`",
    "deepspeed": "no DeepSpeed: `fsdp` (FSDP2) shards weights, gradients and AdamW state",
    "fsdp_config": "FSDP2 with one policy: every decoder layer, then the root",
    "activation_offloading": "not wired in",
}

# refused fields' values that are accepted all the same: they mean what we run
REFUSED_ACCEPTS = {"logging_strategy": ("steps",)}


@dataclass
class RewardFields(TrainConfig):
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
    hints = typing.get_type_hints(RewardFields)
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


class RewardConfig(RewardFields):
    """`RewardConfig(output_dir=None, **fields)`: RewardFields' options, under TRL's names as well. Each field
    of TRL's RewardConfig is accepted and handled as this module's tables say; output_dir may come
    first, as in HF. `dataclasses.fields`, `asdict` and `replace` see RewardFields' fields."""

    def __init__(self, output_dir: str | None = None, **kwargs: Any) -> None:
        if output_dir is not None:
            kwargs["output_dir"] = output_dir
        super().__init__(**from_trl_names(kwargs))


def table(trl_fields: list[str]) -> str:
    """The markdown table of docs/trl.md: one row per TRL RewardConfig field, in the order given
    (benchmarks/trl_fields.py passes the installed trl's; reward itself never imports trl)."""
    ours = {f.name for f in fields(RewardConfig)}
    rows = ["| TRL field | ours | what we do |", "|---|---|---|"]
    for name in trl_fields:
        if name in DIFFERENT_DEFAULTS:
            rows.append(f"| `{name}` | different default | {DIFFERENT_DEFAULTS[name]} |")
        elif name in DIFFERENT_BEHAVIOUR:
            rows.append(f"| `{name}` | differs | {DIFFERENT_BEHAVIOUR[name]} |")
        elif name in ours:
            rows.append(f"| `{name}` | same | as TRL |")
        else:
            kind, why = next((k, d[name]) for k, d in KINDS.items() if name in d)
            rows.append(f"| `{name}` | {kind} | {why} |")
    return "\n".join(rows)


KINDS = {"mapped": MAPPED, "ignored": IGNORED, "not supported": REFUSED}
