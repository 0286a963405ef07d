"""Train a Bradley–Terry reward model.

    python train.py                                    # tiny model on the generated task (offline)
    python train.py --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name trl-lib/ultrafeedback_binarized \
        --per_device_train_batch_size 8 --learning_rate 1e-5 --bf16 --output_dir runs/qwen-rm
    python train.py --config my_run.yaml --max_steps 50

Reads top to bottom: options -> data -> tokenizer + model -> tokenize -> summary -> loop -> save.
"""

from __future__ import annotations

import os
import random
import shlex
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel

from reward.batching import build_collator, step_plan
from reward.checkpoint import save_reward_model
from reward.config import TrainConfig, parse_config
from reward.data import load_preferences
from reward.distributed import barrier, device_for, init_world, shutdown
from reward.errors import UserError
from reward.formatting import TokenizeStats, describe_format, drop_longer, read_format, tokenize_pairs
from reward.loop import NonFiniteError, TrainResult, train
from reward.lora import adapter_to_resume, add_lora, describe_lora, require_peft, save_lora_model, unwrap
from reward.metrics import MetricsWriter
from reward.model import count_parameters, ensure_pad_token, is_encoder, load_model, load_tokenizer, position_limit
from reward.precision import resolve_precision
from reward.provenance import choose_format, collapse_problem, record_format, reward_statistics
from reward.resume import (
    check_free_space,
    check_resume_options,
    earlier_checkpoint_hint,
    load_training_state,
    prepare_output_dir,
    resolve_checkpoint,
    save_training_checkpoint,
    trim_metrics,
)
from reward.run_lock import release
from reward.scoring import STATS_KEY
from reward.sharding import check_fsdp_world, full_weights, shard_model
from reward.signals import StopOnSignal


def main(
    cfg: TrainConfig,
    dataset: Dataset | DatasetDict | None = None,
    should_stop: Callable[[int], bool] | None = None,
) -> TrainResult:
    """Run one training job; `dataset` (Python API) replaces `cfg.dataset_name` when given.

    `should_stop(step)` is asked after every optimizer step; if it returns True the run saves a
    checkpoint and returns early with `result.stopped` (train.py wires SIGINT/SIGTERM to it).
    The output dir is locked for the run (reward/run_lock.py) and released however it ends.
    """
    try:
        return fit(cfg, dataset, should_stop)
    finally:
        release(Path(cfg.output_dir))  # a no-op in processes that do not own it (torchrun ranks > 0)


def fit(
    cfg: TrainConfig, dataset: Dataset | DatasetDict | None, should_stop: Callable[[int], bool] | None
) -> TrainResult:
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out_dir = Path(cfg.output_dir)
    world = init_world()  # torchrun: one process per device; otherwise a world of one
    if not world.is_main:  # only rank 0 talks
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of this worker process
        datasets.disable_progress_bars()
    device = device_for(world, cfg.use_cpu)
    if cfg.fsdp:
        check_fsdp_world(world)  # fail before loading anything
    precision = resolve_precision(cfg.bf16, cfg.fp16, device)
    checkpoint = None
    if world.is_main:
        checkpoint = prepare_output_dir(out_dir, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)
    barrier(world)  # the others read the checkpoint only once rank 0 has checked the output dir
    if not world.is_main and cfg.resume_from_checkpoint:
        checkpoint = resolve_checkpoint(cfg.resume_from_checkpoint, out_dir)
    if cfg.use_peft:
        require_peft()  # fail now, not after loading the data
    # a LoRA checkpoint's weights are merged (W + BA): its exact state is base model + saved adapter
    adapter = adapter_to_resume(checkpoint, cfg.use_peft)
    resume_state = None
    if checkpoint:  # read first: a damaged state or a changed batch layout stops the run before any loading
        resume_state = load_training_state(checkpoint)
        check_resume_options(checkpoint, cfg, world.size, resume_state)

    # --- data and tokenizer ----------------------------------------------------------------------
    data = load_preferences(
        dataset if dataset is not None else cfg.dataset_name,
        config=cfg.dataset_config,
        train_split=cfg.dataset_train_split,
        test_split=cfg.dataset_test_split,
        eval_split_size=cfg.eval_split_size,
        seed=cfg.seed,
        synthetic_num_pairs=cfg.synthetic_num_pairs,
        skip_bad_rows=cfg.skip_bad_rows,
    )
    print(
        f"data: {data.source} | format: {data.format}{' + margin' if data.has_margin else ''} | "
        f"train {len(data.train)} pairs | held-out {len(data.test) if data.test is not None else 0} pairs"
    )
    model_source = str(checkpoint) if checkpoint else cfg.model_name_or_path  # a checkpoint has it all
    tokenizer = loaded_from(checkpoint, load_tokenizer, model_source, cfg.trust_remote_code)
    if ensure_pad_token(tokenizer):
        print(
            f"tokenizer has no pad token: using eos {tokenizer.eos_token!r} as pad (as TRL); "
            "the reward is read at the token before the trailing EOS"
        )
    sequence_format = choose_format(cfg, tokenizer, data.format, checkpoint)
    train_ds, train_stats = tokenize_pairs(
        data.train, tokenizer, data.format, cfg.max_length, cfg.dataset_num_proc, sequence_format=sequence_format
    )
    eval_ds = None
    if data.test is not None and len(data.test) > 0:
        eval_ds, eval_stats = tokenize_pairs(
            data.test, tokenizer, data.format, cfg.max_length, cfg.dataset_num_proc, "eval", sequence_format
        )
    print(
        f"pairs kept: train {describe(train_stats, cfg.max_length)}"
        + (f" | eval {describe(eval_stats, cfg.max_length)}" if eval_ds is not None else "")
    )
    if train_stats.kept == 0:
        raise UserError(
            f"no training pair left: {train_stats.dropped_too_long} longer than --max_length {cfg.max_length}, "
            f"{train_stats.dropped_identical} with chosen identical to rejected"
        )

    # --- model -----------------------------------------------------------------------------------
    model = loaded_from(
        None if cfg.use_peft else checkpoint,
        load_model,
        cfg.model_name_or_path if cfg.use_peft else model_source,
        tokenizer,
        seed=cfg.seed,
        disable_dropout=cfg.disable_dropout,
        trust_remote_code=cfg.trust_remote_code,
    )
    record_format(model, tokenizer, sequence_format, data.format)  # every save writes it to config.json
    train_ds, eval_ds = fit_positions(model, train_ds, eval_ds, cfg)
    print(f"formatting: {describe_format(*read_format(model.config))}")
    if cfg.gradient_checkpointing:
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.use_peft:  # after checkpointing: use_reentrant=False needs no enable_input_require_grads
        model = add_lora(model, cfg, adapter)
        print(describe_lora(model))
    if cfg.torch_compile:  # in place: parameter names (and so checkpoints) are unchanged
        unwrap(model).base_model.compile()
    if cfg.fsdp:  # on the CPU copy: fully_shard moves only this process's shard to the device
        shard_model(model, world, device)
    else:
        model.to(device)
    if world.is_main:
        check_free_space(out_dir, count_parameters(model), cfg.save_total_limit)
    if cfg.plot_curves:
        from reward.plotting import require_matplotlib

        require_matplotlib()  # fail now, not after training
    if checkpoint:
        print(f"resuming from {checkpoint} at optimizer step {resume_state['step']}")
    _, total_steps = step_plan(len(train_ds), cfg, world.size)
    print(
        f"model: {cfg.model_name_or_path} ({type(model).__name__}, {count_parameters(model) / 1e6:.2f}M params) | "
        f"device {device} | {precision.name}\n"
        f"optimizer steps: {total_steps} x {cfg.pairs_per_step * world.size} pairs "
        f"({cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} accumulation x {world.size} "
        f"process{'es' if world.size > 1 else ''}) | "
        f"lr {cfg.learning_rate:g} {cfg.lr_scheduler_type} | output: {out_dir}\n"
        f"batching: {batching_summary(cfg, model)}"
    )

    # --- train -----------------------------------------------------------------------------------
    metrics_path = out_dir / "metrics.jsonl"
    if world.is_main and resume_state:
        trim_metrics(metrics_path, resume_state["step"])  # records after the checkpoint are redone
    elif world.is_main:
        metrics_path.unlink(missing_ok=True)  # one run per metrics file
    writer = MetricsWriter(metrics_path)
    collate = build_collator(cfg, tokenizer.pad_token_id, packable=not is_encoder(unwrap(model)))

    example = (data.test if data.test is not None and len(data.test) else data.train)[0]

    def export(target: Path, metrics: dict | None = None, weights: dict | None = None, warning: str | None = None):
        card = {"format": data.format, "train_pairs": len(train_ds), "metrics": metrics or {}, "example": example}
        card["warning"] = warning
        if cfg.fsdp:  # the model holds only shards: write the gathered full `weights`
            return save_reward_model(model, tokenizer, target, cfg.to_dict(), card, state_dict=weights)
        save = save_lora_model if cfg.use_peft else save_reward_model  # LoRA: merged weights + adapter/
        return save(model, tokenizer, target, cfg.to_dict(), card)

    def save_checkpoint(step: int, state: dict) -> None:
        if not cfg.fsdp:
            save_training_checkpoint(out_dir, step, export, state, cfg.save_total_limit)
            return
        weights = full_weights(model)  # called on every rank (the gather is collective); {} but on rank 0
        if world.is_main:
            write = lambda path: export(path, weights=weights)  # noqa: E731
            save_training_checkpoint(out_dir, step, write, state, cfg.save_total_limit)

    result = train(
        cfg, model, train_ds, eval_ds, collate, precision, writer, save_checkpoint, resume_state, should_stop, world
    )
    if not result.stopped and (world.is_main or cfg.fsdp):  # for normalising consumers (RewardFunction(normalize=True))
        stats = reward_statistics(model, result, eval_ds, train_ds, cfg, precision, tokenizer.pad_token_id)
        setattr(unwrap(model).config, STATS_KEY, stats)
        result.collapsed = collapse_problem(stats, cfg.learning_rate)
    weights = full_weights(model) if cfg.fsdp and not result.stopped else None  # FSDP: every rank gathers
    if not world.is_main:
        barrier(world)  # wait for rank 0's export, then leave together
        return result
    if result.stopped:
        print(
            f"stopped after optimizer step {result.steps}; checkpoint saved in {out_dir / f'checkpoint-{result.steps}'}"
        )
        barrier(world)
        return result
    if result.collapsed:  # saved all the same (it is what the run produced), but never silently
        print(f"WARNING: {result.collapsed}", file=sys.stderr)
    saved = export(out_dir, {f"eval_{k}": v for k, v in (result.eval or {}).items()}, weights, result.collapsed)
    if cfg.plot_curves:
        from reward.plotting import plot_training_curves  # matplotlib is an optional extra

        plot_training_curves(metrics_path, cfg.plot_curves)
        print(f"loss/accuracy curves: {cfg.plot_curves}")

    # --- report ----------------------------------------------------------------------------------
    if result.eval:
        print(
            f"held-out: accuracy {result.eval['accuracy']:.4f} | loss {result.eval['loss']:.4f} | "
            f"margin {result.eval['margin']:.3f} over {result.eval['pairs']} pairs"
        )
    if data.held_out and data.test is not None:  # so the printed command can be run as is
        score_input = str(out_dir / "heldout_pairs.jsonl")
        data.test.to_json(score_input, lines=True, force_ascii=False)
    else:
        score_input = cfg.dataset_name if Path(cfg.dataset_name).exists() else "PAIRS.jsonl"
    score = f"python score.py --model {shlex.quote(str(saved))} --input {shlex.quote(score_input)}"
    print(
        f"saved reward model to {saved}\nscore with: {score}\n"
        f"check what GRPO, RewardBench, PPO and the pipeline see: {score} --check_consumers"
    )
    barrier(world)
    return result


def loaded_from(checkpoint: Path | None, load: Callable, *args, **kwargs):
    """`load(*args)`; when it reads a checkpoint and fails, the error also says which one to resume instead."""
    try:
        return load(*args, **kwargs)
    except UserError as exc:
        if checkpoint is None:
            raise
        raise UserError(f"{exc}; {earlier_checkpoint_hint(checkpoint)}") from exc


def fit_positions(
    model: PreTrainedModel, train_ds: Dataset, eval_ds: Dataset | None, cfg: TrainConfig
) -> tuple[Dataset, Dataset | None]:
    """Drop pairs longer than a model with learned absolute positions takes (BERT 512, GPT-2 1024) when
    --max_length allows more: they would fail inside the forward. Said in the log, like --max_length."""
    limit = position_limit(unwrap(model))
    if limit is None or (cfg.max_length is not None and cfg.max_length <= limit):
        return train_ds, eval_ds
    fitted = []
    for split, ds in (("train", train_ds), ("eval", eval_ds)):
        if ds is not None:
            ds, dropped = drop_longer(ds, limit, cfg.dataset_num_proc, split)
            if dropped:
                print(f"{split}: dropped {dropped} more pairs longer than the {limit} positions the model has")
        fitted.append(ds)
    if len(fitted[0]) == 0:
        raise UserError(f"no training pair fits the {limit} positions the model has")
    return fitted[0], fitted[1]


def resume_argv(argv: list[str]) -> list[str]:
    """The same options, continuing from the newest checkpoint (and never overwriting it)."""
    out, i = [], 0
    while i < len(argv):
        name = argv[i].split("=", 1)[0]
        if name in ("--overwrite_output_dir", "--resume_from_checkpoint"):
            takes_value = name == "--resume_from_checkpoint" or (
                i + 1 < len(argv) and argv[i + 1].lower() in ("true", "false", "yes", "no", "1", "0")
            )
            i += 1 + (takes_value and "=" not in argv[i])
            continue
        out.append(argv[i])
        i += 1
    return [*out, "--resume_from_checkpoint", "latest"]


def batching_summary(cfg: TrainConfig, model) -> str:
    if (cfg.padding_free or cfg.share_prefix) and is_encoder(unwrap(model)):
        return (
            "plain padded batches (an encoder's tokens attend to the whole sequence: nothing can be packed or shared)"
        )
    parts = [name for on, name in ((cfg.group_by_length, "length-grouped"), (cfg.padding_free, "padding-free packing"),
                                   (cfg.share_prefix, "shared prompt prefix")) if on]  # fmt: skip
    return " + ".join(parts) or "plain padded batches in shuffled order (TRL's batching)"


def describe(stats: TokenizeStats, max_length: int | None) -> str:
    return (
        f"{stats.kept} (dropped {stats.dropped_too_long} over {max_length} tokens, "
        f"{stats.dropped_identical} with chosen == rejected)"
    )


def cli(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done, 2 bad input or options, 3 non-finite training, 4 trained but collapsed (every
    reward the same: saved, with a warning in the log and the model card), 128 + N stopped by signal N."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_config(argv)
        with StopOnSignal() as stop:
            result = main(cfg, should_stop=stop)
    except (UserError, NonFiniteError) as exc:
        if "--debug" in argv:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UserError) else 3
    finally:
        shutdown()  # leave the process group (torchrun) if there is one
    if result.stopped:
        print(f"resume with: python train.py {shlex.join(resume_argv(argv))}")
        return 128 + (stop.requested or 0)
    return 4 if result.collapsed else 0  # main() printed the warning


if __name__ == "__main__":
    sys.exit(cli())
