"""The training loop: data order, exact gradient accumulation, AdamW + schedule, clipping, eval.

One optimizer step = `gradient_accumulation_steps` micro-batches. Their pair count N is known
before the first backward, so each micro-batch contributes Σ ℓ_i / N (see `reward/loss.py`) and
the accumulated gradient equals the gradient of one big batch, even when the epoch's last
micro-batch is smaller. (TRL/HF divide each micro-batch *mean* by the number of micro-batches in
the step instead, which weights pairs unequally when micro-batches are uneven: docs/loss.md §7.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from datasets import Dataset
from torch import nn
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_scheduler

from reward.batching import (
    Batch,
    batch_pairs,
    batch_tokens,
    eval_collator,
    optimizer_steps,
    rows_at,
    step_plan,
)
from reward.config import TrainConfig
from reward.evaluate import batch_rewards, evaluate
from reward.fast.packing import PackedBatch
from reward.loss import bradley_terry_loss
from reward.metrics import MetricsWriter, MetricTotals, format_step_line
from reward.model import Precision
from reward.parallel.distributed import any_rank, reduce_totals, sum_int
from reward.parallel.plan import SINGLE, Plan
from reward.ranked.collate import RankedBatch, RankedCollator, prompt_units
from reward.ranked.loss import ALL_PAIRS, RankingObjective
from reward.run.state import restore_training_state, training_state


# --- optimizer and schedule ------------------------------------------------------------------------
def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: biases and norm gains are not shrunk
    toward 0 (decaying a LayerNorm/RMSNorm gain rescales activations; common practice since BERT)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_norm_or_bias = param.ndim < 2 or "norm" in name.lower() or name.endswith(".bias")
        (no_decay if is_norm_or_bias else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # fused: one kernel updates every parameter (HF's default optim since torch 2.8); torch's default on
    # CPU is a Python loop of ~8 ops per parameter, 4x slower here (~5 % of the small model's step)
    return torch.optim.AdamW(
        groups,
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
        eps=cfg.adam_epsilon,
        fused=cfg.optim == "adamw_torch_fused",
    )


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    return cfg.warmup_steps if cfg.warmup_steps > 0 else math.ceil(cfg.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warmup, then `lr_scheduler_type` (transformers' schedules, the ones TRL uses)."""
    return get_scheduler(
        cfg.lr_scheduler_type,
        optimizer,
        num_warmup_steps=warmup_steps(cfg, total_steps),
        num_training_steps=total_steps,
    )


# --- one optimizer step ---------------------------------------------------------------------------
def accumulate_gradients(
    model: PreTrainedModel,
    micro_batches: list[Batch],
    precision: Precision,
    center_coef: float | None = None,
    label_smoothing: float = 0.0,
    num_pairs_in_step: int | None = None,
    fillers: Sequence[Batch] = (),
    objective: RankingObjective = ALL_PAIRS,
) -> MetricTotals:
    """Forward + backward every micro-batch of one step, each scaled by 1 / (pairs in the step).

    `num_pairs_in_step` is the step's pair count over all ranks (default: these micro-batches'); for
    grouped rankings it is the step's units of `objective` (comparisons, or prompts).
    `fillers` run forward + backward with weight 0 (no gradient, no metrics): under FSDP a rank
    with fewer micro-batches still joins every collective (reward/parallel/sharding.py `filler_passes`)."""
    n_step = num_pairs_in_step or sum(step_units(mb, objective) for mb in micro_batches)
    totals = MetricTotals()
    for mb in micro_batches:
        with precision.autocast():
            rewards = batch_rewards(model, mb, precision)
        if isinstance(mb, RankedBatch):  # a prompt's comparisons (or its order) from its K rewards (S,)
            out = objective(rewards, mb.comparisons, mb.orders, center_coef, label_smoothing, n_step)
        else:
            r_chosen, r_rejected = rewards.chunk(2)  # (B,), (B,)
            margin = (mb.margin if isinstance(mb, PackedBatch) else mb["margin"]).to(precision.device)  # (B,)
            out = bradley_terry_loss(r_chosen, r_rejected, margin, center_coef, label_smoothing, n_step)
        loss = precision.scaler.scale(out.loss) if precision.scaler else out.loss
        loss.backward()
        totals.add(out)
    for mb in fillers:
        with precision.autocast():
            rewards = batch_rewards(model, mb, precision)
        # × 0 keeps the whole graph, so every parameter gets a (zero) gradient and each FSDP unit
        # reduce-scatters the same buffers as on the other ranks
        (rewards.sum() * 0.0).backward()
    return totals


def step_units(mb: Batch, objective: RankingObjective) -> int:
    """What a micro-batch adds to the step's divisor: its pairs, or its prompts' units under `objective`."""
    if not isinstance(mb, RankedBatch):
        return batch_pairs(mb)
    per_prompt = mb.comparisons.per_prompt.tolist()
    return sum(objective.units(per_prompt, [len(o) for o in mb.orders]))


def apply_update(model: nn.Module, optimizer, scheduler, precision: Precision, max_grad_norm: float) -> float:
    """Clip, step, schedule, zero. Returns the global gradient norm before clipping.

    A non-finite gradient norm means the update would write inf/NaN into the weights: the step is
    skipped (the caller counts it). Under fp16 the GradScaler does the same and lowers its scale.
    """
    if precision.scaler:
        precision.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
    limit = max_grad_norm if max_grad_norm > 0 else float("inf")
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), limit)
    if isinstance(grad_norm, DTensor):  # FSDP: a norm over sharded gradients, a partial sum per rank
        grad_norm = grad_norm.full_tensor()  # the global norm, the same on every rank
    grad_norm = grad_norm.item()
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
class TrainResult:
    steps: int  # the last optimizer step done
    train: dict  # metrics of the last logging window
    eval: dict | None  # final held-out metrics
    stopped: bool = False  # True if `should_stop` ended the run early (a checkpoint was saved)
    nonfinite_steps: int = 0  # optimizer steps skipped for a non-finite loss or gradient
    collapsed: str | None = None  # set by the recipe when every reward came out the same (what it saw)
    # the trained model and its tokenizer, set by the recipe (what RewardTrainer hands back)
    model: PreTrainedModel | None = None
    tokenizer: PreTrainedTokenizerBase | None = None
    card: dict | None = None  # the model card's facts (reward/eval/model_card.py), set by the export


class NonFiniteError(RuntimeError):
    """Too many optimizer steps in a row had a non-finite loss or gradient."""


def train(
    cfg: TrainConfig,
    model: PreTrainedModel,
    train_ds: Dataset,
    eval_ds: Dataset | dict[str, Dataset] | None = None,
    *,
    collate: Callable[[list[dict]], Batch],
    precision: Precision,
    writer: MetricsWriter,
    save: Callable[[int, dict], None] | None = None,
    resume_state: dict | None = None,
    should_stop: Callable[[int], bool] | None = None,
    plan: Plan = SINGLE,
) -> TrainResult:
    """Run the optimizer steps; log, evaluate and call `save(step, training_state)` on schedule.

    `resume_state` (from a checkpoint, with the weights already loaded into `model`) continues a
    run exactly where it was saved. `should_stop(step)` is asked after every step; when it says
    yes the run saves a checkpoint and returns with `stopped=True` (used for SIGINT/SIGTERM).
    With more than one process every rank runs this; `plan` (reward/parallel/plan.py) says who
    evaluates and saves and how gradients meet; rank 0 logs.
    """
    steps_per_epoch, total_steps = step_plan(len(train_ds), cfg, plan.world.size)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    start_step, nonfinite_total = restore_training_state(resume_state, model, optimizer, scheduler, precision, plan)
    model.train()
    # named sets are logged as eval_<name>_loss, ... (TRL's names for a dict eval_dataset); one set as eval_loss
    eval_sets = eval_ds if isinstance(eval_ds, dict) else {"": eval_ds} if eval_ds is not None else {}
    do_eval = any(len(ds) for ds in eval_sets.values()) and cfg.eval_strategy != "no"
    # the logging window: metrics of the steps since the last record, and their compute time only
    # (evaluation and saving excluded, so pairs/s measures training)
    window, grad_norms, window_tokens, window_seconds = MetricTotals(), [], 0, 0.0
    last_train, last_eval, nonfinite_in_a_row = {}, None, 0
    bar = tqdm(
        total=total_steps, initial=start_step, desc="train", unit="step", disable=cfg.disable_tqdm or not plan.is_main
    )
    objective = RankingObjective(cfg.ranking_loss, cfg.ranking_normalization)
    units = prompt_units(train_ds, objective) if isinstance(collate, RankedCollator) else None  # the divisor's
    steps = optimizer_steps(train_ds, collate, cfg, start_step, plan.world.rank, plan.world.size, units)
    # held-out pairs packed, the prompt once (or padded: --eval_padding_free false); grouped rankings are
    # evaluated as their expanded pairs: every comparison, plus the per-prompt metrics
    eval_collate = eval_collator(cfg, collate.pad_token_id, model)
    step = start_step
    for step in range(start_step + 1, total_steps + 1):
        started = time.perf_counter()
        _epoch, micro_batches, pairs_in_step = next(steps)  # collation counts as training time
        count = plan.filler_count(len(micro_batches), precision.device)  # FSDP: keep up with the busiest rank
        fillers = [collate(rows_at(train_ds, [0]))] * count if count else []
        totals = accumulate_gradients(
            model,
            micro_batches,
            precision,
            cfg.center_rewards_coefficient,
            cfg.label_smoothing,
            pairs_in_step,
            fillers,
            objective,
        )
        plan.sync_gradients(model)
        totals = reduce_totals(totals, plan.world, precision.device)
        lr = scheduler.get_last_lr()[0]  # the lr this update uses
        grad_norm = apply_update(model, optimizer, scheduler, precision, cfg.max_grad_norm)
        window_seconds += time.perf_counter() - started
        if precision.scaler and math.isfinite(totals.loss_sum) and not math.isfinite(grad_norm):
            nonfinite_total += 1  # fp16 overflow: the scaler skipped the update and lowered its scale; no abort
        elif math.isfinite(totals.loss_sum) and math.isfinite(grad_norm):
            nonfinite_in_a_row = 0
            grad_norms.append(grad_norm)
            window.merge(totals)
            window_tokens += sum_int(sum(batch_tokens(mb) for mb in micro_batches), plan.world, precision.device)
            bar.set_postfix(loss=f"{totals.summary()['loss']:.4f}", acc=f"{totals.summary()['accuracy']:.2f}")
        else:  # apply_update skipped the update: nothing non-finite reached the weights
            nonfinite_total += 1
            nonfinite_in_a_row += 1
            bar.write(f"step {step}: non-finite loss or gradient (loss {totals.loss_sum}, grad {grad_norm}); skipped")
            if nonfinite_in_a_row >= cfg.max_nonfinite_steps:
                raise NonFiniteError(
                    f"{nonfinite_in_a_row} optimizer steps in a row had a non-finite loss or gradient (last: step "
                    f"{step}); stopping without saving. Try a lower --learning_rate, --max_grad_norm 1.0, or --bf16 "
                    "instead of --fp16; the last checkpoint (if any) holds finite weights."
                )
        bar.update(1)

        record = None
        if step % cfg.logging_steps == 0 or step == total_steps:
            record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "lr": lr}
            if window.pairs:  # a window whose every step was skipped has no metrics to report
                last_train = window.summary()
                record.update(last_train)
                record["grad_norm"] = sum(grad_norms) / len(grad_norms)
                record["pairs_per_s"] = window.pairs / window_seconds
                record["tokens_per_s"] = window_tokens / window_seconds
            record["nonfinite_steps"] = nonfinite_total
            window, grad_norms, window_tokens, window_seconds = MetricTotals(), [], 0, 0.0
        if do_eval and plan.takes_part and is_eval_step(step, cfg, total_steps, steps_per_epoch):
            record = record or {"step": step, "epoch": round(step / steps_per_epoch, 4)}
            for i, (name, ds) in enumerate(eval_sets.items()):
                metrics = evaluate(model, ds, eval_collate, cfg, precision)
                last_eval = metrics if i == 0 else last_eval  # the result's: the first set's
                record.update({f"eval_{name}_{k}" if name else f"eval_{k}": v for k, v in metrics.items()})
        if record is not None and plan.is_main:
            writer.write(record)
            bar.write(format_step_line(record))
        stop = any_rank(should_stop is not None and should_stop(step), plan.world, precision.device)
        if save is not None and plan.takes_part and (stop or is_save_step(step, cfg, total_steps)):
            save(step, training_state(step, optimizer, scheduler, precision, nonfinite_total, model, plan))
        if stop:
            bar.close()
            return TrainResult(step, last_train, last_eval, stopped=True, nonfinite_steps=nonfinite_total)
    bar.close()
    return TrainResult(step, last_train, last_eval, nonfinite_steps=nonfinite_total)


def is_eval_step(step: int, cfg: TrainConfig, total_steps: int, steps_per_epoch: int) -> bool:
    """At the end, and every `eval_steps` (strategy "steps") or at each epoch's end (strategy "epoch")."""
    if step == total_steps:
        return True
    if cfg.eval_strategy == "steps":
        return step % cfg.eval_steps == 0
    return cfg.eval_strategy == "epoch" and step % steps_per_epoch == 0


def is_save_step(step: int, cfg: TrainConfig, total_steps: int) -> bool:
    """At the end, and every `save_steps` when set (a stop request saves too: see `train`)."""
    return step == total_steps or (cfg.save_steps > 0 and step % cfg.save_steps == 0)
