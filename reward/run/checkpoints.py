"""Training checkpoints that a run can continue from exactly, written so a crash never corrupts them.

    OUTPUT_DIR/
      checkpoint-STEP/          the HF model folder (pipeline-loadable) + training_state.pt
      latest                    a one-line file naming the newest complete checkpoint

Atomicity: a checkpoint is written into a hidden temporary sibling (`.tmp-checkpoint-STEP-PID`)
and renamed into place only when complete; `latest` is replaced with `os.replace`, which is atomic
on POSIX. A process killed mid-save (even by SIGKILL) leaves the previous checkpoint and `latest`
as they were; the next save removes stale temporaries.

`training_state.pt` holds only tensors and plain Python values (optimizer, scheduler and gradient
scaler state, the step, RNG states) and is read with `torch.load(weights_only=True)`, so loading
a checkpoint cannot run code. Weights are safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from reward.errors import UserError, first_line
from reward.export import FolderWriter
from reward.loop import Progress
from reward.parallel.plan import Plan
from reward.run.state import training_state

STATE_FILE = "training_state.pt"
LATEST_FILE = "latest"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def write_atomically(path: str | Path, text: str | Iterable[str]) -> None:
    """Write via a temporary sibling and rename: a reader (or a crash) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        f.writelines([text] if isinstance(text, str) else text)
    os.replace(tmp, path)


class CheckpointWriter:
    """The training loop's `save(progress)`: checkpoint-STEP folders, written atomically. Every rank that
    takes part calls it (under FSDP the optimizer state and the full weights are gathered from all ranks);
    rank 0 writes, with `write_folder` (the recipe's: plain, or LoRA merged)."""

    def __init__(self, out_dir: Path, model, write_folder: FolderWriter, plan: Plan, limit: int | None):
        self.out_dir, self.model, self.write_folder = Path(out_dir), model, write_folder
        self.plan, self.limit = plan, limit

    def __call__(self, progress: Progress) -> None:
        state = training_state(progress, self.model, self.plan)
        weights = self.plan.full_weights(self.model)  # None unless sharded
        if self.plan.is_main:
            write = lambda path: self.write_folder(path, weights)  # noqa: E731 - the folder, then the state
            save_training_checkpoint(self.out_dir, progress.step, write, state, self.limit)


def save_training_checkpoint(
    out_dir: Path, step: int, write_model_folder, state: dict[str, Any], save_total_limit: int | None = None
) -> Path:
    """Write checkpoint-STEP atomically, point `latest` at it, prune old ones. Returns its path.

    `write_model_folder(path)` writes the HF model folder (weights, tokenizer, configs) into `path`.
    """
    out_dir = Path(out_dir)
    for stale in out_dir.glob(".tmp-checkpoint-*"):  # left by a process killed mid-save; never another's
        owner = stale.name.rsplit("-", 1)[-1]
        if owner.isdigit() and (int(owner) == os.getpid() or not process_alive(int(owner))):
            shutil.rmtree(stale, ignore_errors=True)
    final = out_dir / f"checkpoint-{step}"
    tmp = out_dir / f".tmp-checkpoint-{step}-{os.getpid()}"
    try:
        write_model_folder(tmp)
        torch.save(state, tmp / STATE_FILE)
        if final.exists():  # same step saved again (e.g. after a resume): replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"could not write checkpoint {final} ({exc}); the previous checkpoint is untouched") from exc
    write_atomically(out_dir / LATEST_FILE, final.name + "\n")
    if save_total_limit:
        for old in list_checkpoints(out_dir)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints (with a training state), oldest first."""
    found = [p for p in Path(out_dir).iterdir() if CHECKPOINT_RE.match(p.name) and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)))


def resolve_checkpoint(spec: str, out_dir: Path) -> Path:
    """`latest` (the newest complete checkpoint in out_dir) or a checkpoint folder path."""
    if spec == "latest":
        candidate = read_latest(Path(out_dir))
        if candidate is None or not (candidate / STATE_FILE).exists():
            complete = list_checkpoints(out_dir) if Path(out_dir).is_dir() else []
            if not complete:
                raise UserError(f"--resume_from_checkpoint latest: no checkpoint in {out_dir}")
            candidate = complete[-1]
        return candidate
    path = Path(spec)
    if not (path / STATE_FILE).exists():
        raise UserError(f"--resume_from_checkpoint {spec}: not a checkpoint folder (no {STATE_FILE})")
    return path


def read_latest(out_dir: Path) -> Path | None:
    """The checkpoint `latest` names, or None when it is missing or unreadable (the caller then takes the
    newest complete checkpoint: `latest` is a convenience, the checkpoints are the record)."""
    try:
        name = (out_dir / LATEST_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return out_dir / name if CHECKPOINT_RE.match(name) else None


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or garbage file: torch raises RuntimeError, EOFError, UnpicklingError...
        text = first_line(exc).split(". ")[0]
        raise UserError(f"{path} is damaged ({text}); {earlier_checkpoint_hint(checkpoint)}") from exc


def load_from_checkpoint(checkpoint: Path | None, load, *args, **kwargs):
    """`load(*args, **kwargs)`; when it reads a checkpoint and fails, the error also names the checkpoint to
    resume from instead."""
    try:
        return load(*args, **kwargs)
    except UserError as exc:
        if checkpoint is None:
            raise
        raise UserError(f"{exc}; {earlier_checkpoint_hint(checkpoint)}") from exc


def earlier_checkpoint_hint(checkpoint: Path) -> str:
    """What to resume from instead of a damaged checkpoint: the newest complete one before it."""
    checkpoint = Path(checkpoint)
    step = int(match.group(1)) if (match := CHECKPOINT_RE.match(checkpoint.name)) else None
    earlier = [c for c in list_checkpoints(checkpoint.parent) if step is not None and checkpoint_step(c) < step]
    if earlier:
        return f"resume from the previous checkpoint instead: --resume_from_checkpoint {earlier[-1]}"
    return "there is no earlier checkpoint: start again with --overwrite_output_dir"


def checkpoint_step(path: Path) -> int:
    return int(CHECKPOINT_RE.match(Path(path).name).group(1))


# options that decide which pairs each optimizer step holds: a resumed run must keep them, since its
# position in the data is counted in optimizer steps (reward/batching.py `optimizer_steps`)
DATA_ORDER_OPTIONS = ("per_device_train_batch_size", "gradient_accumulation_steps", "seed", "group_by_length")


def check_resume_options(checkpoint: Path, cfg: Any, world_size: int, state: dict[str, Any]) -> None:
    """Refuse, naming the option, a resume whose batches would not continue the checkpoint's data order."""
    saved_path = Path(checkpoint) / "training_config.json"
    try:
        saved = json.loads(saved_path.read_text()) if saved_path.is_file() else {}
    except ValueError as exc:
        raise UserError(f"{saved_path}: not valid JSON ({exc}); {earlier_checkpoint_hint(checkpoint)}") from exc
    for name in DATA_ORDER_OPTIONS:
        if name in saved and saved[name] != getattr(cfg, name):
            raise UserError(
                f"--{name}: the checkpoint was trained with {saved[name]}, this run asks for {getattr(cfg, name)}; "
                "the data position is counted in optimizer steps, so resume with the same value (or start a new run)"
            )
    saved_world = state.get("world_size")
    if saved_world is not None and saved_world != world_size:
        raise UserError(
            f"the checkpoint was saved by {saved_world} process(es), this run has {world_size}: the data position "
            "is counted in global steps of processes x batch x accumulation pairs; resume with the same number"
        )


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric records after `step` (written after the checkpoint we resume from)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_atomically(path, "".join(line + "\n" for line in kept))
