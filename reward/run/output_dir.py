"""The output dir: who owns it (one run at a time) and what may be done with what is already in it.

One run per output dir: a lock file naming its owner, refused to a second run, taken over from a dead one.

    OUTPUT_DIR/.lock    {"pid": 4242, "host": "node-3", "started": "2026-12-01T10:00:00"}

Two runs writing one folder delete each other's checkpoints and interleave metrics.jsonl, so the
lock is created with O_CREAT | O_EXCL (atomic: exactly one of two simultaneous runs gets it) before
anything in the folder is read or removed. A lock whose owner is gone (same host, pid no longer
running: a crash, `kill -9`) is taken over with a line saying so; one held by a live process, or by
another host (whose processes cannot be checked from here), stops the run with one line. Under
torchrun rank 0 holds it for the whole job. `release` removes it only if this process owns it.

Policy: a non-empty output dir is never overwritten silently: continue it (`--resume_from_checkpoint`),
replace the previous run's files (`--overwrite_output_dir`), or stop with an error; an unwritable
dir, a path that is a file, or a disk too small for the checkpoints fails before training.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from reward.errors import UserError
from reward.run.checkpoints import LATEST_FILE, resolve_checkpoint
from reward.run.publish import EXPORT_GLOBS, EXPORT_NAMES, EXPORT_TEMP, JOURNAL, MANIFEST, recover
from reward.run.writes import as_write_error, process_alive, remove_stale

LOCK_FILE = ".lock"
UNREADABLE_AFTER_S = 5.0


def read_owner(lock: Path) -> dict | None:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None  # being written right now, half-written by a run killed while creating it, or gone
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def wait_for_owner(lock: Path) -> dict | None:
    """The owner of an existing lock; None if it stays unreadable for UNREADABLE_AFTER_S (a crashed writer)."""
    while (owner := read_owner(lock)) is None:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return None
        if age > UNREADABLE_AFTER_S:
            return None
        time.sleep(0.1)  # a newcomer between its O_EXCL create and its write
    return owner


def acquire(out_dir: Path) -> Path:
    """Own `out_dir` (created if needed) or raise a UserError naming the run that owns it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = out_dir / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for _ in range(3):  # a stale lock removed by us (or another newcomer) is raced for again
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = wait_for_owner(lock)
            if owner is None or stale(owner, me):
                if owner is not None and owner["pid"] != me["pid"]:
                    print(f"{out_dir}: taking over the lock of a run that is gone (pid {owner['pid']})")
                lock.unlink(missing_ok=True)
                continue
            raise UserError(
                f"output_dir {out_dir} is in use by another run (pid {owner['pid']} on {owner.get('host')}, "
                f"since {owner.get('started')}): wait for it or choose another --output_dir; if that run is gone, "
                f"delete {lock}"
            ) from None
        try:
            with as_write_error(lock, after=f"{out_dir} is unchanged"), os.fdopen(fd, "w") as f:
                json.dump(me, f)
        except BaseException:
            lock.unlink(missing_ok=True)  # a half-written lock would hold the next run up
            raise
        return lock
    raise UserError(f"could not lock output_dir {out_dir}: {lock} keeps reappearing")


def stale(owner: dict, me: dict) -> bool:
    """The owner is this process (a second call from Python) or a process of this host that is gone."""
    if owner.get("host") != me["host"]:
        return False
    return owner["pid"] == me["pid"] or not process_alive(owner["pid"])


def release(out_dir: Path) -> None:
    lock = Path(out_dir) / LOCK_FILE
    owner = read_owner(lock)
    if owner is not None and owner["pid"] == os.getpid() and owner.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)


# --- the output directory ------------------------------------------------------------------------
# what --report_to writes (TensorBoard's runs/, W&B's wandb/): one subfolder per run, opened in
# preflight, so a run that stopped before training leaves them; they never block the next run
TRACKER_DIRS = ("runs", "wandb")
# what a run writes at the top of its output dir (the final model folder and the run's records)
RUN_FILES = (LATEST_FILE, "metrics.jsonl", "heldout_pairs.jsonl", *EXPORT_NAMES, MANIFEST, JOURNAL, *TRACKER_DIRS)
# what write_atomically (reward/run/writes.py) leaves beside a run's files when killed mid-write: `.NAME.tmp-PID`
FILE_TEMPS = tuple(f".{name}.tmp-" for name in (LATEST_FILE, "metrics.jsonl", "heldout_pairs.jsonl"))
RUN_GLOBS = ("checkpoint-*", ".tmp-checkpoint-*", f"{EXPORT_TEMP}*", f"{JOURNAL}.tmp-*", *EXPORT_GLOBS)
RUN_GLOBS += tuple(f"{prefix}*" for prefix in FILE_TEMPS)


def prepare_output_dir(out_dir: Path, resume_from: str | None, overwrite: bool) -> Path | None:
    """Apply the output-dir policy; return the checkpoint to resume from, if any.

    A non-empty output dir is never overwritten silently: continue it (`resume_from`), replace the
    previous run's files (`overwrite`), or stop with an error. Also fail early if it is unwritable,
    and take its lock (above): the caller releases it when the run ends. An export that a killed run
    left half moved in is finished first (reward/run/publish.py).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output_dir {out_dir} is a file, not a folder: choose another --output_dir")
    check_writable(out_dir)
    acquire(out_dir)  # before anything in it is read or removed: one run per output dir
    try:
        if resume_from or not overwrite:  # an overwrite removes a half-moved export (and a damaged journal) anyway
            recover(out_dir)
        for prefix in FILE_TEMPS:
            remove_stale(out_dir, prefix)
        return apply_output_dir_policy(out_dir, resume_from, overwrite)
    except UserError:
        release(out_dir)
        raise


def apply_output_dir_policy(out_dir: Path, resume_from: str | None, overwrite: bool) -> Path | None:
    if resume_from:
        return resolve_checkpoint(resume_from, out_dir)
    if any(p.name not in (LOCK_FILE, *TRACKER_DIRS) for p in out_dir.iterdir()):
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
