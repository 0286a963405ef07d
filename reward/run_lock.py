"""One run per output dir: a lock file naming its owner, refused to a second run, taken over from a dead one.

    OUTPUT_DIR/.lock    {"pid": 4242, "host": "node-3", "started": "2026-12-01T10:00:00"}

Two runs writing one folder delete each other's checkpoints and interleave metrics.jsonl, so the
lock is created with O_CREAT | O_EXCL (atomic: exactly one of two simultaneous runs gets it) before
anything in the folder is read or removed. A lock whose owner is gone (same host, pid no longer
running: a crash, `kill -9`) is taken over with a line saying so; one held by a live process, or by
another host (whose processes cannot be checked from here), stops the run with one line. Under
torchrun rank 0 holds it for the whole job. `release` removes it only if this process owns it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from reward.errors import UserError

LOCK_FILE = ".lock"
UNREADABLE_AFTER_S = 5.0


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


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
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
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
