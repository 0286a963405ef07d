"""Preflight: every check that can fail before data or a model loads, and what it decides for the run.

One line at the start of a run instead of a traceback after the model has loaded: the process group
(torchrun) and this process's device and precision, the output dir's policy and lock (rank 0), the
checkpoint a resume reads (damaged, or asked to change its data or model: refused here,
reward/run/resume_rules.py), the optional extras the options need (peft, a C++ compiler for
--torch_compile, matplotlib, the trackers), and the Hub repo a push will go to. The recipe's first
stage (reward/recipe.py).
"""

from __future__ import annotations

import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch

from reward.config import TrainConfig
from reward.fast.compiled import require_compiler
from reward.finetune.lora import adapter_to_resume, require_peft
from reward.integrations.hub import HubTarget, check_hub
from reward.integrations.trackers import Trackers, open_trackers, require_trackers
from reward.model import Precision, resolve_precision
from reward.parallel.distributed import barrier, device_for, init_world
from reward.parallel.plan import Plan
from reward.parallel.sharding import check_fsdp_world
from reward.run.checkpoints import load_training_state, resolve_checkpoint
from reward.run.output_dir import prepare_output_dir
from reward.run.resume_rules import check_resume_options


@dataclass
class Setup:
    """What preflight decided: this process's part, its device and precision, and what it resumes."""

    plan: Plan
    precision: Precision
    out_dir: Path
    checkpoint: Path | None = None  # the checkpoint-STEP folder to resume from
    resume_state: dict | None = None  # its training_state.pt
    adapter: Path | None = None  # --use_peft: the adapter a resumed run loads on the base model
    hub: HubTarget | None = None  # --push_to_hub: where rank 0 pushes (checked already)
    trackers: Trackers | None = None  # --report_to: rank 0's, open for the run


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
    setup = Setup(Plan(world, cfg.fsdp, device), resolve_precision(cfg.bf16, cfg.fp16, device), Path(cfg.output_dir))
    if world.is_main:  # the output-dir policy and its lock: rank 0's
        setup.checkpoint = prepare_output_dir(setup.out_dir, cfg.resume_from_checkpoint, cfg.overwrite_output_dir)
    barrier(world)  # the others read the checkpoint only once rank 0 has checked the output dir
    if not world.is_main and cfg.resume_from_checkpoint:
        setup.checkpoint = resolve_checkpoint(cfg.resume_from_checkpoint, setup.out_dir)
    if cfg.use_peft:
        require_peft()
    require_compiler(cfg.torch_compile, device)
    if cfg.plot_curves:
        from reward.eval.plotting import require_matplotlib  # matplotlib is an optional extra

        require_matplotlib()
    require_trackers(cfg.report_to)
    if world.is_main:  # a push or a tracker that cannot work stops the run now, not after training
        setup.hub = check_hub(cfg)
    if setup.checkpoint:  # a damaged state, or an option that would change the data or model, stops it here
        setup.resume_state = load_training_state(setup.checkpoint)
        check_resume_options(setup.checkpoint, cfg, world.size, setup.resume_state)
    # a LoRA checkpoint's weights are merged (W + BA): its exact state is base model + saved adapter
    setup.adapter = adapter_to_resume(setup.checkpoint, cfg.use_peft)
    setup.trackers = open_trackers(cfg, cfg.to_dict(), world.is_main)  # last: nothing after it can fail
    return setup
