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
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from reward.errors import UserError
from reward.run_lock import LOCK_FILE, acquire, process_alive, release

STATE_FILE = "training_state.pt"
LATEST_FILE = "latest"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss)  # tensors load safely
    except ImportError:  # numpy is optional for us
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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
        text = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path} is damaged ({text}); {earlier_checkpoint_hint(checkpoint)}") from exc


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


# --- the output directory ------------------------------------------------------------------------
# what a run writes at the top of its output dir (the final model folder and the run's records)
RUN_FILES = ("metrics.jsonl", LATEST_FILE, "heldout_pairs.jsonl", "training_config.json", "README.md", "config.json",
             "generation_config.json", "chat_template.jinja", "special_tokens_map.json", "adapter")  # fmt: skip
RUN_GLOBS = ("checkpoint-*", ".tmp-checkpoint-*", "model*.safetensors", "model.safetensors.index.json", "tokenizer*")


def prepare_output_dir(out_dir: Path, resume_from: str | None, overwrite: bool) -> Path | None:
    """Apply the output-dir policy; return the checkpoint to resume from, if any.

    A non-empty output dir is never overwritten silently: continue it (`resume_from`), replace the
    previous run's files (`overwrite`), or stop with an error. Also fail early if it is unwritable,
    and take its lock (reward/run_lock.py): the caller releases it when the run ends.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output_dir {out_dir} is a file, not a folder: choose another --output_dir")
    check_writable(out_dir)
    acquire(out_dir)  # before anything in it is read or removed: one run per output dir
    try:
        return apply_output_dir_policy(out_dir, resume_from, overwrite)
    except UserError:
        release(out_dir)
        raise


def apply_output_dir_policy(out_dir: Path, resume_from: str | None, overwrite: bool) -> Path | None:
    if resume_from:
        return resolve_checkpoint(resume_from, out_dir)
    if any(p.name != LOCK_FILE for p in out_dir.iterdir()):
        if not overwrite:
            raise UserError(
                f"output_dir {out_dir} is not empty: pass --resume_from_checkpoint latest to continue that run, "
                "--overwrite_output_dir to replace it, or choose another --output_dir"
            )
        for old in [out_dir / name for name in RUN_FILES] + [p for g in RUN_GLOBS for p in out_dir.glob(g)]:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    return None


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"output_dir {out_dir} is not writable ({exc.strerror or exc})") from exc


def check_free_space(out_dir: Path, num_parameters: int, save_total_limit: int | None) -> int:
    """Fail before training if the disk cannot hold the checkpoints; returns the bytes estimated.

    One checkpoint = fp32 weights + AdamW's two fp32 moments = 12 bytes per parameter; the final
    export adds 4. A save in progress needs room for one more checkpoint beside the kept ones.
    """
    kept = (save_total_limit or 1) + 1
    needed = num_parameters * (12 * kept + 4)
    free = shutil.disk_usage(out_dir).free
    if free < needed:
        raise UserError(
            f"not enough disk space in {out_dir}: about {needed / 1e9:.2f} GB needed for checkpoints, "
            f"{free / 1e9:.2f} GB free (lower --save_total_limit or free space)"
        )
    return needed


def trim_metrics(path: Path, step: int) -> None:
    """Drop metric records after `step` (written after the checkpoint we resume from)."""
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        write_atomically(path, "".join(line + "\n" for line in kept))
