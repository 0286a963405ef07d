"""What a run tells its user: what it is about to train, and at the end its held-out scores and the commands
to run next (or, stopped, where its checkpoint is)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from torch import nn

from reward.data import PreferenceData
from reward.labels.rated import ungroup_ratings
from reward.labels.rows import RATED
from reward.loop import TrainResult
from reward.model import Precision, count_parameters, weights_dtype
from reward.run.writes import write_atomically


def start_summary(
    cfg: Any, model: nn.Module, precision: Precision, total_steps: int, processes: int, grouped: bool, forward: str
) -> str:
    """The lines before the first step: the model, the device and precision, the step plan, the forward path.
    `cfg` is the run's TrainConfig (its model name, batch, accumulation, lr, schedule, output dir)."""
    unit, plural = "prompts" if grouped else "pairs", "es" if processes > 1 else ""
    return (
        f"model: {cfg.model_name_or_path} ({type(model).__name__}, {count_parameters(model) / 1e6:.2f}M params, "
        f"{weights_dtype(model)} weights) | device {precision.device} | {precision.name}\n"
        f"optimizer steps: {total_steps} x {cfg.pairs_per_step * processes} {unit} "
        f"({cfg.per_device_train_batch_size} x {cfg.gradient_accumulation_steps} accumulation x {processes} "
        f"process{plural}) | lr {cfg.learning_rate:g} {cfg.lr_scheduler_type} | output: {Path(cfg.output_dir)}\n"
        f"forward: {forward}"
    )


def report(dataset_name: str, out_dir: Path, data: PreferenceData, training: TrainResult, folder: Path | None) -> None:
    """Rank 0's last lines. A stopped run names its checkpoint; a finished one its held-out scores and the
    score.py commands for its folder (writing the held-out pairs, split off or the data's test split, so they
    run as printed on rows the model did not train on)."""
    if training.stopped:
        where = out_dir / f"checkpoint-{training.steps}"
        print(f"stopped after optimizer step {training.steps}; checkpoint saved in {where}")
        return
    rated = data.format == RATED  # rated completions, trained by regression (reward/labels/rated.py)
    if (e := training.eval) and rated:
        fits = " | ".join(f"{k} {e[k]:.4f}" for k in ("rmse", "pearson", "spearman") if k in e)
        pairs = f" | implied-pair accuracy {e['accuracy']:.4f}" if "accuracy" in e else ""
        print(f"held-out: {fits}{pairs} over {e['completions']} completions")
    elif e:
        scores = f"accuracy {e['accuracy']:.4f} | loss {e['loss']:.4f} | margin {e['margin']:.3f}"
        print(f"held-out: {scores} over {e['pairs']} pairs")
    if data.test is not None and len(data.test):  # split off here or the data's own test split: never the train rows
        score_input = str(out_dir / ("heldout_ratings.jsonl" if rated else "heldout_pairs.jsonl"))
        rows = ungroup_ratings(data.test) if rated else data.test  # rated: one row per completion, as it was read
        write_atomically(score_input, (json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))
    else:
        score_input = dataset_name if Path(dataset_name).exists() else "PAIRS.jsonl"
    command = f"python score.py --model {shlex.quote(str(folder))} --input {shlex.quote(score_input)}"
    print(f"saved reward model to {folder}\nscore with: {command}")
    print(f"check what GRPO, RewardBench, PPO and the pipeline see: {command} --check_consumers")
