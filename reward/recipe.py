"""One training run, as named stages: what `python train.py` (reward/run/train_cli.py) and the Python API
(`reward.RewardTrainer`) run. It reads top to bottom, one stage per function:

    preflight        every check before anything loads (run/preflight.py), then what loading will read (run/loading.py)
    ready_tokenizer  the tokenizer with its options applied (a chat template that fails stops here)
    read_rows        rows -> validated preference data (a generated task, a file, the Hub, a Dataset: run/rows.py,
                     each label kind's reading); then how text becomes tokens, checked (choose_format)
    build_model      the one-label model, its recorded format, and what changes how it runs
    tokenize         rows -> token ids, dropping what the model cannot take
    fit              the loop (reward/loop.py) with what plugs into it: collator, order, objective, evaluation
    export, report   the rewards' statistics and the pipeline-ready folder; what to run next

The one module that wires the optional parts into the core (reward/__init__.py; what the loop plugs in:
reward/run/parts.py; what the rows stage reads: reward/run/rows.py): speed-ups (fast/), rankings (ranked/),
ratings and strengths (labels/), torchrun and FSDP (parallel/), LoRA (finetune/), checkpoints and resume (run/),
the presets, the model card, trackers and the Hub.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.batching import BatchPlan, step_plan
from reward.config import TrainConfig, pick
from reward.data import PreferenceData
from reward.errors import UserError
from reward.eval.model_card import card_facts
from reward.evaluate import collapse_problem, reward_statistics
from reward.export import record_format, record_statistics
from reward.fast.compiled import compile_layers
from reward.fast.packing import describe_forward
from reward.finetune.lora import LoraOptions, add_lora, describe_lora
from reward.formatting import SequenceFormat, choose_format, describe_format, read_format, tokenize_pairs
from reward.integrations.hub import PushEverySave, push
from reward.labels.rated import RatingScale, record_rating_scale
from reward.labels.rows import RATED
from reward.loop import TrainResult
from reward.metrics import MetricsWriter, eval_record
from reward.model import (
    count_parameters,
    load_model,
    match_vocabulary,
    position_limit,
    ready_for_reward,
    trainable_problem,
    unwrap,
)
from reward.parallel.distributed import barrier
from reward.parallel.sharding import shard_model
from reward.presets.tiny import model_config_for, tokenizer_for
from reward.ranked.collate import group_for_training
from reward.ranked.rows import GROUPED
from reward.run.checkpoints import CheckpointWriter, load_from_checkpoint, trim_metrics
from reward.run.loading import check_sources
from reward.run.output_dir import check_free_space, release
from reward.run.parts import (
    LOADING,
    batch_order,
    evaluation,
    loading_options,
    model_writer,
    train_with,
    training_collator,
    training_objective,
)
from reward.run.preflight import Setup, preflight
from reward.run.publish import export_model
from reward.run.report import report, start_summary
from reward.run.resume_rules import same_rows
from reward.run.rows import drop_emptied, read_rows, tokenize_rated
from reward.run.state import restore_training_state
from reward.tokenizer import TokenizerOptions, prepare_tokenizer


@dataclass
class Tokens:
    """The tokenize stage's output."""

    train: Dataset  # what the loop reads: pairs, or one row per prompt (grouped rankings, rated completions)
    pairs: Dataset  # the training pairs (the same rows before any grouping; rated: the prompts)
    eval_sets: dict[str, Dataset]  # what the loop evaluates: {"": held-out split} or the named sets
    scale: RatingScale | None = None  # rated completions: the regression's standardisation (reward/labels)

    @property
    def held_out(self) -> Dataset | None:
        """The held-out pairs: the first named set, else the split held out."""
        return next(iter(self.eval_sets.values()), None)

    @property
    def grouped(self) -> bool:
        """Rankings (or ratings) trained grouped by prompt: the loop reads one row per prompt (reward/ranked)."""
        return GROUPED in self.train.column_names

    @property
    def size(self) -> int:
        """What the card calls the training set's size: pairs, or rated completions."""
        return len(self.pairs) if self.scale is None else sum(map(len, self.pairs["scores"]))


@dataclass
class RunResult(TrainResult):
    """What a run made: the loop's `TrainResult` (left as it was), the trained model and (unless stopped) its folder."""

    model: PreTrainedModel | None = None
    tokenizer: PreTrainedTokenizerBase | None = None
    folder: Path | None = None  # the exported folder (rank 0; None when stopped early)
    stats: dict | None = None  # the rewards' mean / std, saved as config.json reward_stats
    collapsed: str | None = None  # every reward the same: what was seen (saved all the same, with a warning)
    card: dict | None = None  # the model card's facts (reward/eval/model_card.py)


def main(
    cfg: TrainConfig,
    dataset: Dataset | DatasetDict | None = None,
    should_stop: Callable[[int], bool] | None = None,
    model: PreTrainedModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    eval_sets: dict[str, Dataset] | None = None,
) -> RunResult:
    """Run one training job. The Python API may hand over what the options would load: `dataset` replaces
    `cfg.dataset_name`, `model` and `tokenizer` the loading of `cfg.model_name_or_path` (a resumed run still
    takes its weights from the checkpoint); `eval_sets` (named rows) are each evaluated, logged as
    `eval_<name>_loss`, ... (TRL's names), the first being the held-out set. `should_stop(step)`, asked after
    each optimizer step: yes saves a checkpoint and returns (`result.stopped`; the CLI wires SIGINT/SIGTERM)."""
    setup = None
    try:
        setup = preflight(cfg)
        check_sources(cfg, setup.checkpoint, rows_given=dataset is not None, model_given=model is not None)
        tokenizer = ready_tokenizer(cfg, setup, tokenizer)  # its options fail here, before the rows load
        data, named = read_rows(cfg, dataset, eval_sets)
        text_format = choose_format(requested_format(cfg), tokenizer, data.format, setup.checkpoint)
        model = build_model(cfg, setup, tokenizer, text_format, data.format, model)
        tokens = tokenize(cfg, data, named, tokenizer, text_format, position_limit(unwrap(model)))
        training = fit(cfg, setup, data, tokens, model, tokenizer, should_stop)
        stopped = RunResult(**vars(training), model=model, tokenizer=tokenizer)  # a checkpoint holds it all
        run = stopped if training.stopped else export(cfg, setup, data, tokens, model, tokenizer, training)
        if setup.plan.is_main:
            report(cfg.dataset_name, setup.out_dir, data, run, run.folder)
        barrier(setup.plan.world)  # leave together: the others wait for rank 0's export
        if run.folder and setup.hub:  # rank 0's; after the barrier, so no other process waits on the upload
            push(setup.hub, run.folder, "End of training")
        return run
    finally:
        if setup is not None and setup.trackers:
            setup.trackers.close()
        release(Path(cfg.output_dir))  # a no-op in processes that do not own it (torchrun ranks > 0)


# --- rows, tokenizer, model, tokens ------------------------------------------------------------------------
def requested_format(cfg: TrainConfig) -> SequenceFormat:
    """How the options ask text to become tokens (reward/formatting.py `choose_format` settles it)."""
    return SequenceFormat(cfg.append_eos, cfg.add_special_tokens, cfg.text_as_chat)


def ready_tokenizer(
    cfg: TrainConfig, setup: Setup, tokenizer: PreTrainedTokenizerBase | None
) -> PreTrainedTokenizerBase:
    """The tokenizer (given, loaded, or the checkpoint's) with its options applied: a token or a chat template it
    cannot take stops the run before the rows load (how text becomes tokens waits for the rows: `choose_format`)."""
    if tokenizer is None or setup.checkpoint:
        source = str(setup.checkpoint) if setup.checkpoint else cfg.model_name_or_path
        revision = None if setup.checkpoint else cfg.model_revision
        tokenizer = load_from_checkpoint(setup.checkpoint, tokenizer_for, source, cfg.trust_remote_code, revision)
    for note in prepare_tokenizer(tokenizer, pick(TokenizerOptions, cfg), from_checkpoint=setup.checkpoint is not None):
        print(note)
    return tokenizer


def build_model(
    cfg: TrainConfig,
    setup: Setup,
    tokenizer: PreTrainedTokenizerBase,
    text_format: SequenceFormat,
    data_format: str,
    model: PreTrainedModel | None,
) -> PreTrainedModel:
    """The one-label model (given, or loaded; from the checkpoint when resuming; LoRA: the base, then the
    saved adapter), its recorded format, and the options that change how it runs, in the order they apply."""
    if model is not None and (cfg.use_peft or not setup.checkpoint):  # handed over (Python API): as it is
        if ignored := [f"--{name}" for name in LOADING if getattr(cfg, name) != TrainConfig.default(name)]:
            print(f"{', '.join(ignored)}: not applied, the model is already loaded")
        ready_for_reward(model, tokenizer, cfg.disable_dropout)
    else:
        checkpoint = setup.checkpoint if not cfg.use_peft else None  # LoRA: the base model, then its adapter
        name = str(checkpoint) if checkpoint else cfg.model_name_or_path
        config = None if checkpoint else model_config_for(name, tokenizer)  # `tiny` is built from one, not loaded
        options = {"config": config, "revision": None if checkpoint else cfg.model_revision, **loading_options(cfg)}
        model = load_from_checkpoint(checkpoint, load_model, name, tokenizer, **options)
    if problem := trainable_problem(model):
        raise UserError(problem)
    match_vocabulary(model, tokenizer)  # --chat_template_path may have added tokens
    record_format(model, tokenizer, text_format, data_format)  # saved with it
    print(f"formatting: {describe_format(*read_format(model.config))}")
    if cfg.gradient_checkpointing:  # transformers 5.25's new name where it exists (the old one warns), else the old
        model.config.use_cache = False
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)({"use_reentrant": False})
    if cfg.use_peft:  # after checkpointing: use_reentrant=False needs no enable_input_require_grads
        model = add_lora(model, pick(LoraOptions, cfg), setup.adapter)
        print(describe_lora(model))
    if cfg.torch_compile:  # in place: parameter names (and so checkpoints) are unchanged
        print(compile_layers(model))
    if cfg.fsdp:  # on the CPU copy: fully_shard moves only this process's shard to the device
        shard_model(model, setup.plan.world, setup.precision.device)
    else:
        model.to(setup.precision.device)
    if setup.plan.is_main:
        check_free_space(setup.out_dir, count_parameters(model), cfg.save_total_limit)
    return model


def tokenize(
    cfg: TrainConfig,
    data: PreferenceData,
    named: dict[str, PreferenceData],
    tokenizer: PreTrainedTokenizerBase,
    text_format: SequenceFormat,
    limit: int | None,
) -> Tokens:
    """Each split's pairs as ids; identical and too-long ones (--max_length, `limit` positions) dropped, counted.
    Rated completions: one row per prompt, trained by regression (reward/run/rows.py `tokenize_rated`)."""
    if data.format == RATED:
        train, sets, scale = tokenize_rated(cfg, data, named, tokenizer, text_format, limit)
        return Tokens(train, train, sets, scale)
    held = data.test if data.test is not None and len(data.test) and not named else None  # named sets replace it
    sources = {"train": (data.train, data.carried), **({"eval": (held, data.carried)} if held is not None else {})}
    sources |= {f"eval[{name}]": (d.train, d.carried) for name, d in named.items()}
    options = (cfg.max_length, cfg.dataset_num_proc)
    print(f"tokenizing {sum(len(rows) for rows, _ in sources.values())} pairs ...", flush=True)  # a file has no bar
    done = {split: tokenize_pairs(rows, tokenizer, data.format, *options, split, text_format, keep, limit)
            for split, (rows, keep) in sources.items()}  # fmt: skip
    print(f"pairs kept: {' | '.join(f'{split} {s.describe(cfg.max_length)}' for split, (_, s) in done.items())}")
    for split, (_, s) in done.items():
        if dropped := s.dropped_past_positions:
            print(f"{split}: dropped {dropped} more pairs longer than the {limit} positions the model has")
    pairs, kept = done["train"]
    kept.require_pairs(cfg.max_length, limit)
    sets = {name: done[f"eval[{name}]"][0] for name in named} or ({"": done["eval"][0]} if held is not None else {})
    sets = drop_emptied(sets)  # a set the length rules emptied is said and skipped
    rows = pairs
    if data.rankings is not None and cfg.rankings == "grouped":  # one row per prompt (reward/ranked/collate.py)
        rows, line = group_for_training(pairs, training_objective(cfg, grouped=True))
        print(line)
    return Tokens(rows, pairs, sets)


# --- train ----------------------------------------------------------------------------------------------
def fit(
    cfg: TrainConfig,
    setup: Setup,
    data: PreferenceData,
    tokens: Tokens,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    should_stop: Callable[[int], bool] | None,
) -> TrainResult:
    """The loop, and what plugs into it, each chosen from the options."""
    plan = setup.plan
    rows = same_rows(tokens.pairs, setup.resume_state, data.source)  # before anything in the output dir changes
    collate = training_collator(cfg, tokenizer.pad_token_id, model, tokens.grouped)
    order = batch_order(cfg, tokens.train, tokens.grouped)
    if setup.checkpoint:
        print(f"resuming from {setup.checkpoint} at optimizer step {setup.resume_state['step']}")
    _, total_steps = step_plan(len(tokens.train), pick(BatchPlan, cfg), plan.size)
    forward = describe_forward(model, collate, order.name)
    print(start_summary(cfg, model, setup.precision, total_steps, plan.size, tokens.grouped, forward))
    if tokens.scale is not None:  # what the reward means on the rating scale: every checkpoint's config.json says it
        record_rating_scale(unwrap(model), tokens.scale, cfg.rating_pair_weight)
    metrics = setup.out_dir / "metrics.jsonl"
    if plan.is_main and setup.resume_state:
        trim_metrics(metrics, setup.resume_state["step"])  # records after the checkpoint are redone
    elif plan.is_main:
        metrics.unlink(missing_ok=True)  # one run per metrics file
    write = model_writer(cfg, model, tokenizer, card_facts(data, tokens.size))  # every checkpoint's card says it
    save = CheckpointWriter(setup.out_dir, model, write, plan, cfg.save_total_limit, rows)
    if setup.hub and setup.hub.strategy == "every_save":
        save = PushEverySave(save, setup.hub, setup.out_dir, plan.is_main)
    resume, sinks = setup.resume_state, [setup.trackers.log] if setup.trackers else []
    return train_with(
        cfg,
        model,
        tokens.train,
        collate=collate,
        precision=setup.precision,
        writer=MetricsWriter(metrics, sinks=sinks),
        eval_sets=tokens.eval_sets,
        order=order,
        processes=plan,
        restore=partial(restore_training_state, resume, model=model, plan=plan) if resume else None,
        save=save,
        should_stop=should_stop,
        scale=tokens.scale,
    )


# --- export and report ----------------------------------------------------------------------------------
def export(
    cfg: TrainConfig,
    setup: Setup,
    data: PreferenceData,
    tokens: Tokens,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    training: TrainResult,
) -> RunResult:
    """The trained rewards' statistics (for normalising consumers: RewardFunction(normalize=True)), then the
    final folder: every rank that takes part evaluates and gathers (FSDP), rank 0 writes; the curves if asked."""
    run = RunResult(**vars(training), model=model, tokenizer=tokenizer)
    if setup.plan.takes_part:
        check = evaluation(cfg, setup.precision, model, tokenizer.pad_token_id, tokens.scale)
        run.stats = reward_statistics(model, training.eval, tokens.held_out, tokens.pairs, check)
        record_statistics(unwrap(model), run.stats)
        run.collapsed = collapse_problem(run.stats, cfg.learning_rate)
    weights = setup.plan.full_weights(model)  # None unless sharded
    if not setup.plan.is_main:
        return run
    if run.collapsed:  # saved all the same (it is what the run produced), but never silently
        print(f"WARNING: {run.collapsed}", file=sys.stderr)
    metrics = eval_record({"": training.eval or {}})  # eval_loss, ...
    run.card = card_facts(data, tokens.size, metrics, warning=run.collapsed)
    run.folder = export_model(setup.out_dir, model_writer(cfg, model, tokenizer, run.card), weights, model)
    if cfg.plot_curves:
        from reward.eval.plotting import plot_training_curves  # matplotlib is an optional extra

        plot_training_curves(setup.out_dir / "metrics.jsonl", cfg.plot_curves)
        print(f"loss/accuracy curves: {cfg.plot_curves}")
    return run
