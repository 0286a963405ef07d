"""The training loop: exact gradient accumulation, AdamW + schedule, clipping, evaluation and saving.

One optimizer step = `gradient_accumulation_steps` micro-batches, whose units N (pairs; for rankings
comparisons or prompts) are known before the first backward: each contributes Σ ℓ_i / N, so the step's
gradient is that of one big batch even when micro-batches are uneven (TRL divides micro-batch means
by their count instead: docs/loss.md §7). What plugs in, each through a core interface:

    collate, order    the micro-batches: reward/collate.py `MicroBatch`, reward/batching.py `Order`
    objective         the loss of a micro-batch from its rewards: reward/loss.py `Objective`
    evaluator         held-out metrics on schedule: reward/evaluate.py `HeldOut`
    processes         how processes meet (gradient sync, totals, FSDP's extra passes): `Processes` below
    restore, save     the state besides the weights, for checkpoints: `Progress` below
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from datasets import Dataset
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from reward.batching import BatchPlan, Order, optimizer_steps, rows_at, step_plan
from reward.collate import MicroBatch
from reward.loss import Objective
from reward.metrics import MetricsWriter, MetricTotals, Window, eval_record, format_step_line
from reward.model import Precision


# --- the options the loop reads, in two groups (TrainConfig's names) -------------------------------------
@dataclass(frozen=True)
class OptimizerOptions:
    """AdamW, its learning-rate schedule, and gradient clipping."""

    learning_rate: float
    weight_decay: float
    adam_beta1: float
    adam_beta2: float
    adam_epsilon: float
    optim: str  # "adamw_torch_fused" (one kernel) or "adamw_torch"
    lr_scheduler_type: str  # after warmup: linear, cosine, constant, ...
    warmup_ratio: float
    warmup_steps: int  # > 0 wins over warmup_ratio
    max_grad_norm: float  # 0: no clipping


@dataclass(frozen=True)
class Cadence:
    """When the loop logs, evaluates and saves, and when it gives up."""

    logging_steps: int
    eval_strategy: str  # "steps" (every eval_steps and at the end), "epoch" or "no"
    eval_steps: int
    save_steps: int  # 0: only at the end
    max_nonfinite_steps: int  # in a row, then stop
    disable_tqdm: bool


# --- how processes meet ---------------------------------------------------------------------------------
class Processes(Protocol):
    """What the loop asks of the processes a run has, each question asked at the same point on every rank.
    `ONE_PROCESS` (below) needs no other process (the tour, tests); the recipe passes reward/parallel/plan.py
    `Plan`: one process, torchrun's data parallel, or FSDP2."""

    rank: int
    size: int
    is_main: bool  # prints, logs and shows progress
    takes_part: bool  # evaluates and saves: rank 0, or every rank where those are collectives (FSDP)

    def extra_passes(self, num_passes: int) -> int: ...  # zero-weight passes to match the busiest rank (FSDP)

    def sync_gradients(self, model: nn.Module) -> None: ...  # after the backwards: every rank holds the Σ

    def clip_gradients(self, model: nn.Module, max_norm: float) -> torch.Tensor: ...  # the global norm, before

    def reduce(self, totals: MetricTotals) -> MetricTotals: ...  # the step's metrics over every rank's pairs

    def total(self, value: int) -> int: ...  # Σ over ranks

    def any(self, flag: bool) -> bool: ...  # True on every rank if True on one


@dataclass(frozen=True)
class OneProcess:
    """A run of one process: nothing to meet."""

    rank: int = 0
    size: int = 1
    is_main: bool = True
    takes_part: bool = True

    def extra_passes(self, num_passes: int) -> int:
        return 0

    def sync_gradients(self, model: nn.Module) -> None:
        return None

    def clip_gradients(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        return torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    def reduce(self, totals: MetricTotals) -> MetricTotals:
        return totals

    def total(self, value: int) -> int:
        return value

    def any(self, flag: bool) -> bool:
        return flag


ONE_PROCESS = OneProcess()


# --- optimizer and schedule ------------------------------------------------------------------------
def build_optimizer(model: nn.Module, options: OptimizerOptions) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: biases and norm gains are not shrunk
    toward 0 (decaying a LayerNorm/RMSNorm gain rescales activations; common practice since BERT)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_norm_or_bias = param.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
        (no_decay if is_norm_or_bias else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": options.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # fused: one kernel updates every parameter (HF's default optim since torch 2.8); torch's default on
    # CPU is a Python loop of ~8 ops per parameter, 4x slower here (~5 % of the small model's step)
    return torch.optim.AdamW(
        groups,
        lr=options.learning_rate,
        betas=(options.adam_beta1, options.adam_beta2),
        eps=options.adam_epsilon,
        fused=options.optim == "adamw_torch_fused",
    )


def warmup_steps(options: OptimizerOptions, total_steps: int) -> int:
    return options.warmup_steps if options.warmup_steps > 0 else math.ceil(options.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, options: OptimizerOptions, total_steps: int) -> Any:
    """Linear warmup, then `lr_scheduler_type` (transformers' schedules, the ones TRL uses)."""
    return get_scheduler(
        options.lr_scheduler_type,
        optimizer,
        num_warmup_steps=warmup_steps(options, total_steps),
        num_training_steps=total_steps,
    )


# --- one optimizer step ---------------------------------------------------------------------------
def accumulate_gradients(
    model: nn.Module,
    micro_batches: list[MicroBatch],
    objective: Objective,
    precision: Precision,
    units_in_step: int | None = None,
) -> MetricTotals:
    """Forward + backward every micro-batch of one step, each scaled by 1 / (units in the step).

    `units_in_step` is N over all ranks (default: these micro-batches' own, `objective.units`)."""
    n_step = units_in_step or sum(objective.units(mb) for mb in micro_batches)
    totals = MetricTotals()
    for mb in micro_batches:
        with precision.autocast():
            rewards = mb.rewards(model)  # float32: (2B,) for pairs, one per response for rankings
        out = objective(rewards, mb, n_step)  # float32, outside autocast (reward/loss.py)
        loss = precision.scaler.scale(out.loss) if precision.scaler else out.loss
        loss.backward()
        totals.add(out)  # tensors: no wait for the device here
    return totals


def zero_weight_pass(model: nn.Module, mb: MicroBatch, precision: Precision) -> None:
    """Forward + backward with weight 0: no gradient, no metrics, but every collective of a real pass
    (under FSDP a rank with fewer micro-batches must still join them: reward/parallel/sharding.py)."""
    with precision.autocast():
        rewards = mb.rewards(model)
    # × 0 keeps the whole graph, so every parameter gets a (zero) gradient and each FSDP unit
    # reduce-scatters the same buffers as on the other ranks
    (rewards.sum() * 0.0).backward()


def apply_update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    precision: Precision,
    max_grad_norm: float,
    processes: Processes = ONE_PROCESS,
) -> float:
    """Clip, step, schedule, zero. Returns the global gradient norm before clipping. A non-finite norm means
    the update would write inf/NaN into the weights: the step is skipped (the caller counts it); under fp16
    the GradScaler does the same and lowers its scale."""
    if precision.scaler:
        precision.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    limit = max_grad_norm if max_grad_norm > 0 else float("inf")
    grad_norm = processes.clip_gradients(model, limit).item()
    if precision.scaler:
        precision.scaler.step(optimizer)  # skips the step if the gradients overflowed
        precision.scaler.update()
    elif math.isfinite(grad_norm):
        optimizer.step()
    scheduler.step()  # the schedule follows the step count, updated or not
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


# --- the loop -------------------------------------------------------------------------------------
@dataclass
class Progress:
    """The loop's state besides the weights: what `save` checkpoints and `restore` puts back (reward/run/state.py)."""

    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LRScheduler
    scaler: torch.amp.GradScaler | None  # fp16 only
    step: int = 0  # optimizer steps done
    nonfinite_steps: int = 0  # of them, skipped for a non-finite loss or gradient


@dataclass
class TrainResult:
    steps: int  # the last optimizer step done
    train: dict  # metrics of the last logging window
    eval: dict | None  # final held-out metrics (the first evaluation set's)
    stopped: bool = False  # True if `should_stop` ended the run early (a checkpoint was saved)
    nonfinite_steps: int = 0  # optimizer steps skipped for a non-finite loss or gradient


class NonFiniteError(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


def train(
    model: nn.Module,
    train_ds: Dataset,
    *,
    collate: Callable[[list[dict]], MicroBatch],
    order: Order,
    objective: Objective,
    precision: Precision,
    batches: BatchPlan,
    optim: OptimizerOptions,
    cadence: Cadence,
    writer: MetricsWriter,
    evaluator: Callable[[nn.Module], dict[str, dict]] | None = None,
    processes: Processes = ONE_PROCESS,
    restore: Callable[[Progress], None] | None = None,
    save: Callable[[Progress], None] | None = None,
    should_stop: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Run the optimizer steps; log, evaluate (`evaluator(model)` -> {set name: metrics}) and `save(progress)`
    on schedule. `restore(progress)` puts a checkpoint's state back first (its weights are in `model`).
    `should_stop(step)` is asked after every step: yes saves and returns `stopped` (SIGINT/SIGTERM).
    With several processes every rank runs this."""
    steps_per_epoch, total_steps = step_plan(len(train_ds), batches, processes.size)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, optim, total_steps)
    progress = Progress(optimizer, scheduler, precision.scaler)
    if restore is not None:
        restore(progress)
    model.train()
    window, last_train, last_eval, in_a_row = Window(), {}, None, 0
    bar = tqdm(total=total_steps, initial=progress.step, desc="train", unit="step",
               disable=cadence.disable_tqdm or not processes.is_main)  # fmt: skip
    units = objective.row_units(train_ds)  # None: each row (a pair) counts 1 in its step's divisor
    steps = optimizer_steps(train_ds, collate, order, batches, progress.step, processes.rank, processes.size, units)
    stop = False  # a run with no step left (resumed at its end) stops at once
    for step in range(progress.step + 1, total_steps + 1):
        started = time.perf_counter()
        _epoch, micro_batches, units_in_step = next(steps)  # collation counts as training time
        extra = processes.extra_passes(len(micro_batches))  # FSDP: asked before any pass, on every rank
        totals = accumulate_gradients(model, micro_batches, objective, precision, units_in_step)
        filler = collate(rows_at(train_ds, [0])) if extra else None  # the passes' batch: its weight is 0
        for _ in range(extra):
            zero_weight_pass(model, filler, precision)
        processes.sync_gradients(model)
        totals = processes.reduce(totals)
        lr = scheduler.get_last_lr()[0]  # the lr this update uses
        grad_norm = apply_update(model, optimizer, scheduler, precision, optim.max_grad_norm, processes)
        progress.step = step
        summary = totals.summary()  # the step's read of its metrics from the device (torchrun: after the reduction's)
        window.seconds += time.perf_counter() - started
        loss_finite = math.isfinite(summary["loss"])
        if loss_finite and math.isfinite(grad_norm):
            in_a_row = 0
            window.add(totals, grad_norm, processes.total(sum(mb.sequence_tokens for mb in micro_batches)))
            bar.set_postfix(loss=f"{summary['loss']:.4f}", acc=f"{summary['accuracy']:.2f}")
        else:  # apply_update skipped the update: nothing non-finite reached the weights
            progress.nonfinite_steps += 1
            if not (precision.scaler and loss_finite):  # an fp16 overflow only lowers the scaler's scale
                in_a_row += 1
                seen = f"loss {summary['loss']}, grad {grad_norm}"
                bar.write(f"step {step}: non-finite loss or gradient ({seen}); skipped")
                if in_a_row >= cadence.max_nonfinite_steps:
                    raise NonFiniteError(
                        f"{in_a_row} optimizer steps in a row had a non-finite loss or gradient (last: step "
                        f"{step}); stopping without saving. Try a lower --learning_rate, --max_grad_norm 1.0, or "
                        "--bf16 instead of --fp16; the last checkpoint (if any) holds finite weights."
                    )
        bar.update(1)

        record = None
        if step % cadence.logging_steps == 0 or step == total_steps:
            record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "lr": lr}
            window_metrics, fields = window.close()
            last_train = window_metrics or last_train
            record |= fields
            record["nonfinite_steps"] = progress.nonfinite_steps
            window = Window()
        if evaluator is not None and processes.takes_part and is_eval_step(step, cadence, total_steps, steps_per_epoch):
            record = record or {"step": step, "epoch": round(step / steps_per_epoch, 4)}
            results = evaluator(model)
            model.train()  # whatever the evaluator left it in: training has its dropout (if any) back
            last_eval = next(iter(results.values()))
            record |= eval_record(results)
        if record is not None and processes.is_main:
            writer.write(record)
            bar.write(format_step_line(record))
        stop = processes.any(should_stop is not None and should_stop(step))
        if save is not None and processes.takes_part and (stop or is_save_step(step, cadence, total_steps)):
            save(progress)
        if stop:
            break
    bar.close()
    return TrainResult(progress.step, last_train, last_eval, stopped=stop, nonfinite_steps=progress.nonfinite_steps)


def is_eval_step(step: int, cadence: Cadence, total_steps: int, steps_per_epoch: int) -> bool:
    """At the end, and every `eval_steps` (strategy "steps") or at each epoch's end (strategy "epoch")."""
    if cadence.eval_strategy == "no":
        return False
    if step == total_steps:
        return True
    if cadence.eval_strategy == "steps":
        return step % cadence.eval_steps == 0
    return step % steps_per_epoch == 0


def is_save_step(step: int, cadence: Cadence, total_steps: int) -> bool:
    """At the end, and every `save_steps` when set (a stop request saves too: see `train`)."""
    return step == total_steps or (cadence.save_steps > 0 and step % cadence.save_steps == 0)
