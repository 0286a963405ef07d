"""Every field of TRL 1.16's `RewardConfig`, and what `reward.RewardConfig` does with it.

`RewardConfig(**kwargs)` takes each TRL name. A field we share (`reward/config.py` has it) works as
TRL's does, with TRL's default unless `DIFFERENT_DEFAULTS` says why not. A TRL-only field is one of:

- "mapped":  it sets an option of ours (e.g. `activation_checkpointing` -> `gradient_checkpointing`);
- "ignored": accepted with any value; it changes nothing that can change here (say why);
- "refused": accepted at TRL's default (or an equivalent value), a one-line error otherwise (why, what to use).

`python -m reward.integrations.trl_options` prints the table of docs/trl.md from these three dicts;
tests/test_trainer_api.py checks the dicts against the installed trl's fields and defaults, and the
page against the printed table.
"""

from __future__ import annotations

# shared fields whose default in reward.RewardConfig is not TRL's, and why
DIFFERENT_DEFAULTS = {
    "output_dir": "`trainer_output` (HF's value for TRL's `None`)",
    "bf16": "`None`: bf16 autocast where a GPU supports it, fp32 on CPU (TRL: `True`, so on CPU its config stops)",
    "debug": "`False` (ours: show tracebacks); TRL's is a string of HF debug modes, `''` reads as `False`",
    "fsdp": "`False`: a switch (FSDP2 over torchrun); TRL's is a string of FSDP modes, `None` reads as `False`",
    "report_to": "`'none'`, the same; kept as the list `['none']`",
    "disable_tqdm": "`False` (TRL's `None`: on unless the log level is warning or above)",
    "pad_to_multiple_of": "`None` = TRL's `'auto'` off Neuron (no padding to a multiple)",
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
    "optim": "AdamW only (torch.optim.AdamW; fused on CUDA): the loop is the point",
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


def table() -> str:
    """The markdown table of docs/trl.md: one row per field of the installed trl's RewardConfig, in its order."""
    from dataclasses import fields

    from trl import RewardConfig as TRLRewardConfig  # the bench extra; only this printout needs it

    from reward.integrations.trainer import RewardConfig

    ours = {f.name for f in fields(RewardConfig)}
    rows = ["| TRL field | ours | what we do |", "|---|---|---|"]
    for f in fields(TRLRewardConfig):
        if f.name in DIFFERENT_DEFAULTS:
            rows.append(f"| `{f.name}` | different default | {DIFFERENT_DEFAULTS[f.name]} |")
        elif f.name in ours:
            rows.append(f"| `{f.name}` | same | as TRL |")
        else:
            kind, why = next((k, d[f.name]) for k, d in KINDS.items() if f.name in d)
            rows.append(f"| `{f.name}` | {kind} | {why} |")
    return "\n".join(rows)


KINDS = {"mapped": MAPPED, "ignored": IGNORED, "not supported": REFUSED}

if __name__ == "__main__":
    print(table())
