"""Run TRL's `RewardTrainer` and our loop side by side on the same model, data, order and schedule.

Used by `tests/test_trl_parity.py` (correctness) and meant for a TRL-vs-ours benchmark. TRL is only
imported here and in tests, never in `reward/`.

What "the same run" takes (each point checked against the installed sources; see the test module):

- Initial weights: both sides get a `copy.deepcopy` of one model (`reward.model.load_model`).
- Data order: HF `Trainer` uses a `RandomSampler`, which accelerate's `prepare_data_loader` replaces
  by `SeedableRandomSampler` (`use_seedable_sampler=True` by default). Its epoch-e order is
  `torch.randperm(n, generator=torch.Generator().manual_seed(data_seed + e))`, which is exactly
  `reward.batching.epoch_order(n, seed, e)`. So we only set `data_seed = seed`; no sampler override.
- Batching: `drop_last=False` on both sides; an epoch's last optimizer step takes whatever
  micro-batches are left (HF `_run_epoch`: `remainder = steps_in_epoch % gradient_accumulation_steps`).
- Optimizer: TRL gets our `optim`, so both sides run the same `torch.optim.AdamW` kernel: fused by
  default (`adamw_torch_fused`, the transformers default for torch >= 2.8), or the per-parameter loop.
- Schedule: our `warmup_steps` is passed as HF's integer `warmup_steps`, our `warmup_ratio` as HF's float
  `warmup_steps` in [0, 1), which HF also rounds up: `ceil(ratio * total)` on both sides.
- fp32, dropout off, no gradient checkpointing, CPU, one process, `dataloader_num_workers=0`.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import RewardConfig, RewardTrainer

from reward.batching import BatchPlan, optimizer_steps
from reward.collate import PairwiseCollator
from reward.config import TrainConfig, pick
from reward.data import detect_format
from reward.formatting import tokenize_pairs
from reward.metrics import MetricsWriter
from reward.model import Precision, resolve_precision
from reward.run.parts import batch_order, train_with, training_collator

FP32 = resolve_precision(False, False, torch.device("cpu"))

# Our metrics.jsonl key -> TRL's log_history key, for the per-step values both implementations log.
STEP_KEYS = {
    "loss": "loss",
    "accuracy": "accuracy",
    "margin": "margin",
    "grad_norm": "grad_norm",
    "lr": "learning_rate",
    "reward_mean": "mean_reward",
    "reward_min": "min_reward",
    "reward_max": "max_reward",
}
EVAL_KEYS = {
    "loss": "eval_loss",
    "accuracy": "eval_accuracy",
    "margin": "eval_margin",
    "reward_mean": "eval_mean_reward",
}


def trl_args(cfg: TrainConfig, output_dir: str | Path) -> RewardConfig:
    """The RewardConfig that describes the same run as our TrainConfig (fp32, CPU, deterministic)."""
    if cfg.label_smoothing:
        raise ValueError("TRL's RewardTrainer has no label smoothing")
    warmup = cfg.warmup_steps if cfg.warmup_steps > 0 else None
    return RewardConfig(
        output_dir=str(output_dir),
        # what the run computes
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        max_grad_norm=cfg.max_grad_norm,
        max_steps=cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        lr_scheduler_type=cfg.lr_scheduler_type,
        # HF: an int >= 1 is a step count, a float in [0, 1) a ratio rounded up (TrainingArguments.get_warmup_steps)
        warmup_steps=warmup if warmup is not None else cfg.warmup_ratio,
        optim=cfg.optim,  # the same AdamW kernel as build_optimizer: fused or not
        max_length=cfg.max_length,
        pad_to_multiple_of=cfg.pad_to_multiple_of,
        center_rewards_coefficient=cfg.center_rewards_coefficient,
        disable_dropout=cfg.disable_dropout,
        # determinism / environment
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        activation_checkpointing=False,  # the transformers 5 name; setting it silences the alias warning
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        dataloader_drop_last=False,
        # logging: every optimizer step, nothing else
        logging_strategy="steps",
        logging_steps=1,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def our_config(**overrides) -> TrainConfig:
    """A TrainConfig for parity runs: fp32 CPU, log every step, no eval/saving inside the loop."""
    base = dict(
        output_dir="unused",
        use_cpu=True,
        logging_steps=1,
        eval_strategy="no",
        disable_tqdm=True,
        warmup_ratio=0.0,
        max_length=1024,
        group_by_length=False,  # TRL's batching: shuffled order, plain padding
        padding_free=False,
        share_prefix=False,
    )
    base.update(overrides)
    return TrainConfig(**base)


@dataclass
class Run:
    steps: list[dict]  # one record per optimizer step, keyed by our names (STEP_KEYS)
    model: PreTrainedModel  # the trained model
    seconds: float  # wall time of the training call alone (tokenization and set-up excluded)


def run_trl(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_rows: Dataset,
    cfg: TrainConfig,
    output_dir: str | Path,
    trainer_cls: type[RewardTrainer] = RewardTrainer,
    on_start: Callable[[], None] | None = None,
) -> tuple[Run, RewardTrainer]:
    """Train a deep copy of `model` with TRL on the raw (untokenized) rows; TRL tokenizes them itself.
    `on_start` is called right before the timed training call (a benchmark resets its memory peak)."""
    trainer = trainer_cls(
        model=copy.deepcopy(model),
        args=trl_args(cfg, output_dir),
        train_dataset=train_rows,
        processing_class=tokenizer,
    )
    if on_start is not None:
        on_start()
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    logs = [entry for entry in trainer.state.log_history if "loss" in entry and "grad_norm" in entry]
    steps = [
        {"step": entry["step"], **{ours: float(entry[theirs]) for ours, theirs in STEP_KEYS.items()}} for entry in logs
    ]
    return Run(steps, trainer.model, seconds), trainer


def tokenize(rows: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, keep: tuple = ()) -> Dataset:
    fmt = detect_format(rows.column_names, rows[0])
    ds, _ = tokenize_pairs(rows, tokenizer, fmt, cfg.max_length, keep=keep)
    return ds


def run_ours(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_rows: Dataset,
    cfg: TrainConfig,
    output_dir: str | Path,
    on_start: Callable[[], None] | None = None,
    precision: Precision = FP32,
) -> Run:
    """Train a deep copy of `model` with `reward.loop.train` and the parts train.py would pick for `cfg`
    (reward/run/parts.py `train_with`), and read the per-step metrics.jsonl; `on_start` as for `run_trl`."""
    model = copy.deepcopy(model)
    ds = tokenize(train_rows, tokenizer, cfg)
    path = Path(output_dir) / "metrics.jsonl"
    path.unlink(missing_ok=True)
    collate = training_collator(cfg, tokenizer.pad_token_id)  # plain padded, or packed when cfg asks for it
    if on_start is not None:
        on_start()
    started = time.perf_counter()
    train_with(cfg, model, ds, collate=collate, precision=precision, writer=MetricsWriter(path))
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in path.read_text().splitlines()]
    steps = [{"step": r["step"], **{k: float(r[k]) for k in STEP_KEYS}} for r in records if "loss" in r]
    return Run(steps, model, seconds)


def step_pair_counts(train_rows: Dataset, tokenizer: PreTrainedTokenizerBase, cfg: TrainConfig, steps: int):
    """Pairs per micro-batch for each of the first `steps` optimizer steps, e.g. [[4, 4, 2], ...]."""
    ds = tokenize(train_rows, tokenizer, cfg)
    plan = optimizer_steps(ds, PairwiseCollator(tokenizer.pad_token_id), batch_order(cfg, ds), pick(BatchPlan, cfg))
    return [[mb.margin.numel() for mb in next(plan)[1]] for _ in range(steps)]


def max_differences(ours: list[dict], theirs: list[dict], keys=STEP_KEYS) -> dict[str, float]:
    """Per metric, the largest absolute difference over all steps."""
    assert len(ours) == len(theirs), (len(ours), len(theirs))
    return {k: max(abs(a[k] - b[k]) for a, b in zip(ours, theirs)) for k in keys}


def max_weight_difference(a: PreTrainedModel, b: PreTrainedModel) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def assert_steps_close(ours: list[dict], theirs: list[dict], rtol: float, atol: float, keys=STEP_KEYS) -> None:
    """Every metric of every step within max(rtol * |larger|, atol) (`math.isclose`), with a useful message."""
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for a, b in zip(ours, theirs):
        for k in keys:
            assert math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=atol), (
                f"step {a['step']} {k}: ours {a[k]!r} vs TRL {b[k]!r} (diff {abs(a[k] - b[k]):.3g})"
            )
