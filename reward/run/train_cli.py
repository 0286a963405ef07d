"""The train command (`python train.py` = `reward-train`): the options (a resume reuses the saved ones),
the run under signal handlers, the exit codes. The run itself is reward/recipe.py `main`.

The options are parsed before the training stack (torch, transformers' models: seconds) is imported, so
`--help` and a bad flag answer at once: what needs torch is imported inside the functions that run.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from reward.config import TrainConfig, parse_config
from reward.errors import run_cli
from reward.run.signals import StopOnSignal


def run(cfg: TrainConfig) -> int:
    """Exit codes: 0 done, 2 bad input or options, 3 non-finite training, 4 trained but collapsed (every
    reward the same: saved, with a warning in the log and the model card), 128 + N stopped by signal N."""
    from reward.parallel.distributed import shutdown
    from reward.recipe import main
    from reward.run.console import quiet_libraries_unless_tty

    if not quiet_libraries_unless_tty():  # output to a file: no progress-bar frames in it, the step lines stay
        cfg = replace(cfg, disable_tqdm=True)
    try:
        with StopOnSignal() as stop:
            result = main(cfg, should_stop=stop)
    finally:
        shutdown()  # leave the process group (torchrun) if there is one
    if result.stopped:  # the checkpoint holds the run's options: its folder is all a resume needs
        print(
            f"resume with: python train.py --output_dir {shlex.quote(cfg.output_dir)} --resume_from_checkpoint latest"
        )
        return 128 + (stop.requested or 0)
    return 4 if result.collapsed else 0  # main() printed the warning


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(argv, parse=parse_train, run=lambda cfg: train(argv, cfg))


def train(argv: list[str], cfg: TrainConfig) -> int:
    """`run`, once the options are parsed; non-finite training exits 3 (its error class is torch-side)."""
    from reward.loop import NonFiniteError

    return run_cli(argv, parse=lambda _: cfg, run=run, failures={NonFiniteError: 3})


def parse_train(argv: list[str]) -> TrainConfig:
    """The options; when resuming, the checkpoint's saved options with the flags given again on top."""
    cfg = parse_config(argv)
    if not cfg.resume_from_checkpoint:
        return cfg
    from reward.run.checkpoints import resolve_checkpoint

    return resumed_config(argv, resolve_checkpoint(cfg.resume_from_checkpoint, Path(cfg.output_dir)))


def resumed_config(argv: list[str], checkpoint: Path) -> TrainConfig:
    """A resumed run's options: the checkpoint's (its training_config.json) with what `argv` gives again
    on top, so `--output_dir DIR --resume_from_checkpoint latest` is a whole command. A change that would
    continue the run on other data or another model is refused here, before anything loads; an allowed
    one is reported (reward/run/resume_rules.py classifies every option)."""
    from reward.run.resume_rules import PER_INVOCATION, allowed_changes, refuse_changes

    path = Path(checkpoint) / "training_config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        saved = None
    if not isinstance(saved, dict):  # missing or damaged: resume with what was given (preflight names the file)
        return parse_config(argv)
    fields = TrainConfig.__dataclass_fields__
    saved = {k: v for k, v in saved.items() if k in fields and k not in PER_INVOCATION}
    cfg = parse_config(argv, saved)  # the flags and a --config file on top of the saved options
    refuse_changes(saved, cfg)
    for line in allowed_changes(saved, cfg):
        print(line)
    return cfg
