"""One training run, as named stages (`python train.py` and `reward-train` run reward/run/train_cli.py; the Python API,
`train.main(cfg)` and `reward.RewardTrainer`, runs `main`).

Reads top to bottom, one stage per function: preflight (every check that can fail before anything
loads) -> data (rows -> token ids) -> model -> train (reward/loop.py) -> export (the pipeline-ready
folder) -> report. Optional parts are one call each: torchrun / FSDP (reward/parallel), LoRA
(reward/finetune), the exact speed-ups (reward/fast), checkpoints and signals (reward/run).
"""

from __future__ import annotations

import os
import random
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.batching import build_collator, step_plan
from reward.config import TrainConfig
from reward.data import PreferenceData, evaluation_rows, load_preferences
from reward.errors import UserError
from reward.eval.model_card import card_facts
from reward.export import STATS_KEY, choose_format, collapse_problem, export_model, record_format, reward_statistics
from reward.fast.compiled import compile_layers, require_compiler
from reward.fast.packed_forward import describe_forward
from reward.finetune.lora import adapter_to_resume, add_lora, describe_lora, require_peft
from reward.formatting import SequenceFormat, describe_format, drop_past_positions, read_format, tokenize_pairs
from reward.integrations.hub import HubTarget, PushEverySave, check_hub, push
from reward.integrations.trackers import Trackers, open_trackers, require_trackers
from reward.loop import TrainResult, train
from reward.metrics import MetricsWriter
from reward.model import (
    LOADING,
    Precision,
    count_parameters,
    load_model,
    loading_options,
    match_vocabulary,
    position_limit,
    ready_for_reward,
    resolve_precision,
    trainable_problem,
    unwrap,
    weights_dtype,
)
from reward.parallel.distributed import barrier, device_for, init_world
from reward.parallel.plan import Plan
from reward.parallel.sharding import check_fsdp_world, shard_model
from reward.ranked.collate import group_for_training
from reward.run.checkpoints import (
    CheckpointWriter,
    check_resume_options,
    load_from_checkpoint,
    load_training_state,
    resolve_checkpoint,
    trim_metrics,
)
from reward.run.output_dir import check_free_space, prepare_output_dir, release
from reward.tokenizer import load_tokenizer, prepare_tokenizer


@dataclass
class Setup:
    """What preflight decided: this process's part, its device and precision, and what it resumes."""

    plan: Plan
    device: torch.device
    precision: Precision
    out_dir: Path
    checkpoint: Path | None = None  # the checkpoint-STEP folder to resume from
    resume_state: dict | None = None  # its training_state.pt
    adapter: Path | None = None  # --use_peft: the adapter a resumed run loads on the base model
    hub: HubTarget | None = None  # --push_to_hub: where rank 0 pushes (checked already)
    trackers: Trackers | None = None  # --report_to: rank 0's, open for the run


@dataclass
class Prepared:
    """The data stage's output: the rows, the tokenizer, how text becomes tokens, the tokenized splits."""

    data: PreferenceData
    tokenizer: PreTrainedTokenizerBase
    sequence_format: SequenceFormat
    train_ds: Dataset
    eval_ds: Dataset | None
    eval_sets: dict[str, Dataset] | None = None  # named sets (RewardTrainer's dict eval_dataset), tokenized


def main(
    cfg: TrainConfig,
    dataset: Dataset | DatasetDict | None = None,
    should_stop: Callable[[int], bool] | None = None,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    eval_sets: dict[str, Dataset] | None = None,
) -> TrainResult:
    """Run one training job. The Python API (reward.RewardTrainer) may hand over what the options
    would load: `dataset` replaces `cfg.dataset_name`, `model` and `tokenizer` the loading of
    `cfg.model_name_or_path` (a resumed run still takes its weights from the checkpoint).
    `result.model` / `result.tokenizer` are what was trained. `eval_sets` (named rows) are each evaluated
    on the eval schedule, logged as `eval_<name>_loss`, ... (TRL's names); the first is the held-out set.

    `should_stop(step)` is asked after every optimizer step; if it returns True the run saves a
    checkpoint and returns early with `result.stopped` (the CLI wires SIGINT/SIGTERM to it). The
    output dir is locked for the run (reward/run/output_dir.py) and released however it ends.
    """
    setup = None
    try:
        setup = preflight(cfg)
        prepared = prepare_data(cfg, setup, dataset, tokenizer, eval_sets)
        model = build_model(cfg, setup, prepared, model)
        result = fit(cfg, setup, prepared, model, should_stop)
        result.model, result.tokenizer = model, prepared.tokenizer
        saved = None if result.stopped else export(cfg, setup, prepared, model, result)
        if saved and setup.plan.is_main:
            report(cfg, setup, prepared, result, saved)
        elif setup.plan.is_main:
            step = result.steps
            print(f"stopped after optimizer step {step}; checkpoint saved in {setup.out_dir / f'checkpoint-{step}'}")
        barrier(setup.plan.world)  # leave together: the others wait for rank 0's export
        if saved and setup.hub:  # rank 0's; after the barrier, so no other process waits on the upload
            push(setup.hub, saved, "End of training")
        return result
    finally:
        if setup is not None and setup.trackers:
            setup.trackers.close()
        release(Path(cfg.output_dir))  # a no-op in processes that do not own it (torchrun ranks > 0)


# --- preflight: everything that can fail before data or model load ----------------------------------
def preflight(cfg: TrainConfig) -> Setup:
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    world = init_world()  # torchrun: one process per device; otherwise a world of one
    if not world.is_main:  # only rank 0 talks
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this worker process
        datasets.disable_progress_bars()
    if cfg.fsdp:
        check_fsdp_world(world)
    device = device_for(world, cfg.use_cpu)
    setup = Setup(Plan(world, cfg.fsdp), device, resolve_precision(cfg.bf16, cfg.fp16, device), Path(cfg.output_dir))
    if world.is_main:  # the output-dir policy and its lock: rank 0's
        setup.checkpoint = prepare_output_dir(setup.out_dir, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)
    barrier(world)  # the others read the checkpoint only once rank 0 has checked the output dir
    if not world.is_main and cfg.resume_from_checkpoint:
        setup.checkpoint = resolve_checkpoint(cfg.resume_from_checkpoint, setup.out_dir)
    if cfg.use_peft:
        require_peft()
    require_compiler(cfg.torch_compile, device)
    if cfg.plot_curves:
        from reward.eval.plotting import require_matplotlib

        require_matplotlib()
    require_trackers(cfg.report_to)
    if world.is_main:  # a push or a tracker that cannot work stops the run now, not after training
        setup.hub = check_hub(cfg)
    # a LoRA checkpoint's weights are merged (W + BA): its exact state is base model + saved adapter
    setup.adapter = adapter_to_resume(setup.checkpoint, cfg.use_peft)
    if setup.checkpoint:  # a damaged state or a changed batch layout stops the run here
        setup.resume_state = load_training_state(setup.checkpoint)
        check_resume_options(setup.checkpoint, cfg, world.size, setup.resume_state)
    setup.trackers = open_trackers(cfg, cfg.to_dict(), world.is_main)  # last: nothing after it can fail
    return setup


# --- data: rows -> token ids --------------------------------------------------------------------------
def prepare_data(
    cfg: TrainConfig,
    setup: Setup,
    dataset: Dataset | DatasetDict | None,
    tokenizer: PreTrainedTokenizerBase | None,
    eval_sets: dict[str, Dataset] | None = None,
) -> Prepared:
    data = load_preferences(
        dataset if dataset is not None else cfg.dataset_name,
        config=cfg.dataset_config,
        train_split=cfg.dataset_train_split,
        test_split=cfg.dataset_test_split,
        eval_split_size=cfg.eval_split_size,
        seed=cfg.seed,
        synthetic_num_pairs=cfg.synthetic_num_pairs,
        skip_bad_rows=cfg.skip_bad_rows,
        ties=cfg.tie_handling,
    )
    held_out = len(data.test) if data.test is not None else 0
    print(data.describe())
    if tokenizer is None or setup.checkpoint:  # a checkpoint has it all, chat template and added tokens too
        source = str(setup.checkpoint) if setup.checkpoint else cfg.model_name_or_path
        revision = None if setup.checkpoint else cfg.model_revision
        tokenizer = load_from_checkpoint(setup.checkpoint, load_tokenizer, source, cfg.trust_remote_code, revision)
    for note in prepare_tokenizer(tokenizer, cfg, from_checkpoint=setup.checkpoint is not None):
        print(note)
    sequence_format = choose_format(cfg, tokenizer, data.format, setup.checkpoint)
    splits, stats = {}, {}
    named = {name: evaluation_rows(rows, data.format, cfg.skip_bad_rows) for name, rows in (eval_sets or {}).items()}
    for split, rows in (("train", data.train), ("eval", data.test if held_out else None), *named.items()):
        if rows is not None:
            splits[split], stats[split] = tokenize_pairs(
                rows, tokenizer, data.format, cfg.max_length, cfg.dataset_num_proc, split, sequence_format
            )
    print(f"pairs kept: {' | '.join(f'{split} {s.describe(cfg.max_length)}' for split, s in stats.items())}")
    if stats["train"].kept == 0:
        raise UserError(
            f"no training pair left: {stats['train'].dropped_too_long} longer than --max_length {cfg.max_length}, "
            f"{stats['train'].dropped_identical} with chosen identical to rejected"
        )
    sets = {name: splits[name] for name in named} or None  # the first is the held-out set (statistics, report)
    held = next(iter(sets.values())) if sets else splits.get("eval")
    return Prepared(data, tokenizer, sequence_format, splits["train"], held, sets)


# --- model ----------------------------------------------------------------------------------------------
def build_model(cfg: TrainConfig, setup: Setup, prepared: Prepared, model: PreTrainedModel | None) -> PreTrainedModel:
    """The one-label model (given, or loaded; from the checkpoint when resuming; LoRA: the base, then the
    saved adapter), its recorded format, and the options that change how it runs, in the order they
    must apply."""
    if model is not None and (cfg.use_peft or not setup.checkpoint):  # handed over (Python API): as it is
        if ignored := [f"--{name}" for name in LOADING if getattr(cfg, name) != TrainConfig.default(name)]:
            print(f"{', '.join(ignored)}: not applied, the model is already loaded")
        ready_for_reward(model, prepared.tokenizer, cfg.disable_dropout)
    else:
        from_checkpoint = setup.checkpoint and not cfg.use_peft
        model = load_from_checkpoint(
            setup.checkpoint if from_checkpoint else None,
            load_model,
            str(setup.checkpoint) if from_checkpoint else cfg.model_name_or_path,
            prepared.tokenizer,
            revision=None if from_checkpoint else cfg.model_revision,
            **loading_options(cfg),
        )
    if problem := trainable_problem(model):
        raise UserError(problem)
    match_vocabulary(model, prepared.tokenizer)  # --chat_template_path may have added tokens
    record_format(model, prepared.tokenizer, prepared.sequence_format, prepared.data.format)  # saved with it
    limit = position_limit(unwrap(model))  # learned absolute positions (BERT 512, GPT-2 1024): longer pairs fail
    if limit is not None and (cfg.max_length is None or cfg.max_length > limit):
        prepared.train_ds, prepared.eval_ds = drop_past_positions(
            prepared.train_ds, prepared.eval_ds, limit, cfg.dataset_num_proc
        )
    print(f"formatting: {describe_format(*read_format(model.config))}")
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.use_peft:  # after checkpointing: use_reentrant=False needs no enable_input_require_grads
        model = add_lora(model, cfg, setup.adapter)
        print(describe_lora(model))
    if cfg.torch_compile:  # in place: parameter names (and so checkpoints) are unchanged
        print(compile_layers(model))
    if cfg.fsdp:  # on the CPU copy: fully_shard moves only this process's shard to the device
        shard_model(model, setup.plan.world, setup.device)
    else:
        model.to(setup.device)
    if setup.plan.is_main:
        check_free_space(setup.out_dir, count_parameters(model), cfg.save_total_limit)
    return model


# --- train ----------------------------------------------------------------------------------------------
def fit(
    cfg: TrainConfig, setup: Setup, prepared: Prepared, model: PreTrainedModel, should_stop: Callable | None
) -> TrainResult:
    world, tokenizer, rows = setup.plan.world, prepared.tokenizer, prepared.train_ds
    ranked = prepared.data.rankings is not None and cfg.rankings == "grouped"
    if ranked:  # one row per prompt, its K responses in one segment (reward/ranked/collate.py)
        rows, line = group_for_training(rows, cfg.ranking_loss, cfg.ranking_normalization)
        print(line)
    collate = build_collator(cfg, tokenizer.pad_token_id, model, ranked)
    if setup.checkpoint:
        print(f"resuming from {setup.checkpoint} at optimizer step {setup.resume_state['step']}")
    _, total_steps = step_plan(len(rows), cfg, world.size)
    print(
        f"model: {cfg.model_name_or_path} ({type(model).__name__}, {count_parameters(model) / 1e6:.2f}M params, "
        f"{weights_dtype(model)} weights) | device {setup.device} | {setup.precision.name}\n"
        f"optimizer steps: {total_steps} x {cfg.pairs_per_step * world.size} {'prompts' if ranked else 'pairs'} "
        f"({cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} accumulation x {world.size} "
        f"process{'es' if world.size > 1 else ''}) | lr {cfg.learning_rate:g} {cfg.lr_scheduler_type} | "
        f"output: {setup.out_dir}\nforward: {describe_forward(cfg, model, collate)}"
    )
    metrics = setup.out_dir / "metrics.jsonl"
    if world.is_main and setup.resume_state:
        trim_metrics(metrics, setup.resume_state["step"])  # records after the checkpoint are redone
    elif world.is_main:
        metrics.unlink(missing_ok=True)  # one run per metrics file
    facts = card_facts(prepared.data, len(prepared.train_ds))  # what the card of every checkpoint says
    save = CheckpointWriter(setup.out_dir, model, tokenizer, cfg.to_dict(), facts, setup.plan, cfg.save_total_limit)
    if setup.hub and setup.hub.strategy == "every_save":
        save = PushEverySave(save, setup.hub, setup.out_dir, world.is_main)
    result = train(
        cfg,
        model,
        rows,
        prepared.eval_sets or prepared.eval_ds,
        collate=collate,
        precision=setup.precision,
        writer=MetricsWriter(metrics, sinks=[setup.trackers.log] if setup.trackers else []),
        save=save,
        resume_state=setup.resume_state,
        should_stop=should_stop,
        plan=setup.plan,
    )
    if not result.stopped and setup.plan.takes_part:  # for normalising consumers (RewardFunction(normalize=True))
        stats = reward_statistics(
            model, result, prepared.eval_ds, prepared.train_ds, cfg, setup.precision, tokenizer.pad_token_id
        )
        setattr(unwrap(model).config, STATS_KEY, stats)
        result.collapsed = collapse_problem(stats, cfg.learning_rate)
    return result


# --- export and report ----------------------------------------------------------------------------------
def export(cfg: TrainConfig, setup: Setup, prepared: Prepared, model: PreTrainedModel, result: TrainResult) -> Path:
    """The final folder: every rank gathers (FSDP), rank 0 writes; the training curves if asked."""
    weights = setup.plan.full_weights(model)  # None unless sharded
    if not setup.plan.is_main:
        return setup.out_dir
    if result.collapsed:  # saved all the same (it is what the run produced), but never silently
        print(f"WARNING: {result.collapsed}", file=sys.stderr)
    metrics = {f"eval_{k}": v for k, v in (result.eval or {}).items()}
    info = card_facts(prepared.data, len(prepared.train_ds), metrics, warning=result.collapsed)
    saved = export_model(setup.out_dir, model, prepared.tokenizer, cfg.to_dict(), info, weights)
    result.card = info
    if cfg.plot_curves:
        from reward.eval.plotting import plot_training_curves  # matplotlib is an optional extra

        plot_training_curves(setup.out_dir / "metrics.jsonl", cfg.plot_curves)
        print(f"loss/accuracy curves: {cfg.plot_curves}")
    return saved


def report(cfg: TrainConfig, setup: Setup, prepared: Prepared, result: TrainResult, saved: Path) -> None:
    if result.eval:
        e = result.eval
        scores = f"accuracy {e['accuracy']:.4f} | loss {e['loss']:.4f} | margin {e['margin']:.3f}"
        print(f"held-out: {scores} over {e['pairs']} pairs")
    data = prepared.data
    if data.held_out and data.test is not None:  # so the printed command can be run as is
        score_input = str(setup.out_dir / "heldout_pairs.jsonl")
        data.test.to_json(score_input, lines=True, force_ascii=False)
    else:
        score_input = cfg.dataset_name if Path(cfg.dataset_name).exists() else "PAIRS.jsonl"
    command = f"python score.py --model {shlex.quote(str(saved))} --input {shlex.quote(score_input)}"
    print(f"saved reward model to {saved}\nscore with: {command}")
    print(f"check what GRPO, RewardBench, PPO and the pipeline see: {command} --check_consumers")
