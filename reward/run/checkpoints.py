"""Training checkpoints that a run can continue from exactly, written so a crash never corrupts them.

    OUTPUT_DIR/
      checkpoint-STEP/          the HF model folder (pipeline-loadable) + training_state.pt
      latest                    a one-line file naming the newest complete checkpoint

Atomicity: a checkpoint is written into a hidden temporary sibling (`.tmp-checkpoint-STEP-PID`),
fsync'ed, and renamed into place only when complete (SIGINT / SIGTERM held for the rename); `latest`
is replaced with `os.replace`, which is atomic on POSIX. A process killed mid-save (even by SIGKILL)
leaves the previous checkpoint and `latest` as they were; the next save removes stale temporaries.
A failed write (a full disk) or Ctrl-C removes the temporary folder; the failure is one line naming
the checkpoint, the free space and the size needed (reward/run/writes.py).

`training_state.pt` holds only tensors and plain Python values (optimizer, scheduler and gradient
scaler state, the step, RNG states) and is read with `torch.load(weights_only=True)`, so loading
a checkpoint cannot run code. Weights are safetensors.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from reward.errors import UserError, first_line
from reward.export import FolderWriter
from reward.loop import Progress
from reward.parallel.plan import Plan
from reward.run.state import training_state
from reward.run.writes import (
    as_write_error,
    folder_size,
    remove,
    remove_stale,
    removed_on_failure,
    signals_held,
    sync_dir,
    sync_tree,
    tensor_bytes,
    write_atomically,
    writing,
)

STATE_FILE = "training_state.pt"
LATEST_FILE = "latest"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class CheckpointWriter:
    """The training loop's `save(progress)`: checkpoint-STEP folders, written atomically. Every rank that
    takes part calls it (under FSDP the optimizer state and the full weights are gathered from all ranks);
    rank 0 writes, with `write_folder` (the recipe's: plain, or LoRA merged). `rows`: the training pairs'
    fingerprint, saved in the state for a resume to compare (reward/run/resume_rules.py)."""

    def __init__(self, out_dir: Path, model, write_folder: FolderWriter, plan: Plan, limit: int | None, rows=None):
        self.out_dir, self.model, self.write_folder = Path(out_dir), model, write_folder
        self.plan, self.limit, self.rows = plan, limit, rows

    def __call__(self, progress: Progress) -> None:
        state = training_state(progress, self.model, self.plan, self.rows)
        weights = self.plan.full_weights(self.model)  # None unless sharded
        if self.plan.is_main:
            final = self.out_dir / f"checkpoint-{progress.step}"  # what its card names
            write = lambda path: self.write_folder(path, weights, final)  # noqa: E731 - the folder, then the state
            weight_bytes = lambda: tensor_bytes(weights if weights is not None else self.model.state_dict())  # noqa: E731
            save_training_checkpoint(self.out_dir, progress.step, write, state, self.limit, weight_bytes)


def save_training_checkpoint(
    out_dir: Path,
    step: int,
    write_model_folder,
    state: dict[str, Any],
    save_total_limit: int | None = None,
    weight_bytes: Callable[[], int] | None = None,
) -> Path:
    """Write checkpoint-STEP atomically, point `latest` at it, prune old ones. Returns its path.

    `write_model_folder(path)` writes the HF model folder (weights, tokenizer, configs) into `path`. Any
    failure of the writes (a full disk: OSError, SafetensorError, torch.save's RuntimeError) removes the
    temporary folder and is one UserError naming the checkpoint, the free space and about the size needed
    (the previous checkpoint's, else the state's tensors plus `weight_bytes()`); the previous checkpoint and
    `latest` are untouched. Ctrl-C removes the temporary folder too.
    """
    out_dir = Path(out_dir)
    remove_stale(out_dir, ".tmp-checkpoint-")  # left by a process killed mid-save; never another's
    final = out_dir / f"checkpoint-{step}"
    tmp = out_dir / f".tmp-checkpoint-{step}-{os.getpid()}"
    previous = list_checkpoints(out_dir)

    def needed() -> int:
        if previous:
            return folder_size(previous[-1])
        return tensor_bytes(state) + (weight_bytes() if weight_bytes else 0)

    untouched = f"the previous checkpoint and `{LATEST_FILE}` are untouched"
    with writing(final, tmp, needed, untouched, kind="checkpoint "):
        write_model_folder(tmp)
        torch.save(state, tmp / STATE_FILE)
        sync_tree(tmp)
    with signals_held(), removed_on_failure(tmp), as_write_error(final, needed, untouched, kind="checkpoint "):
        replace_folder(tmp, final)
        sync_dir(out_dir)
    complete = f"{final} is complete: resume with --resume_from_checkpoint {final}"
    write_atomically(out_dir / LATEST_FILE, final.name + "\n", after=complete)
    if save_total_limit:
        for old in list_checkpoints(out_dir)[:-save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def replace_folder(new: Path, final: Path) -> None:
    """Rename `new` to `final`. An existing `final` (the same step saved again after a resume) is set aside
    first, and put back if the rename fails."""
    if not final.exists():
        os.replace(new, final)
        return
    aside = final.with_name(f".tmp-{final.name}-replaced-{os.getpid()}")
    os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(aside, final)
        raise
    remove(aside)


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


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric records after `step` (written after the checkpoint we resume from), and a line that is not
    a whole record (the last one, cut off by a crash or a full disk while it was appended)."""
    if path.exists():
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if (r := record(line)) and r["step"] <= step]
        write_atomically(path, "".join(line + "\n" for line in kept))


def record(line: str) -> dict | None:
    """A metrics.jsonl line as its record, or None when it is not a whole one."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("step"), int) else None
