"""Every write of a run (checkpoints, the final model folder, `latest`, metrics.jsonl trimmed on resume, the
lock, score.py's --output and --reliability_out) goes to a temporary sibling first, and fails as one line.

    writing(path, temp, needed)   around the writes only: any failure of a write (OSError, safetensors'
                                  SafetensorError, torch.save's RuntimeError, ...) removes `temp` and becomes
                                  one UserError naming `path`, the free space on its disk and about how much
                                  is needed; KeyboardInterrupt / SystemExit (Ctrl-C, a second SIGTERM) remove
                                  `temp` too and go on. What was there before is untouched.
    write_atomically(path, text)  a text file: written beside it, synced, renamed over it
    sync_tree(folder)             fsync every file and folder, so that the rename that follows publishes data
                                  that is on disk (after a power loss a renamed file is never empty)
    signals_held()                SIGINT / SIGTERM wait until a commit's few renames are done, then act
    remove_stale(folder, prefix)  temporaries that a process killed mid-write left (never a live one's)

A UserError raised inside (a card writer's own) passes as it is: only failures of the writes are reworded.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch

from reward.errors import UserError, first_line

Needed = Callable[[], "int | None"] | int | None  # bytes the write needs, or how to work it out once it failed


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def human_size(n: int) -> str:
    """Bytes in decimal units, as `df -H` prints them.

    >>> human_size(999), human_size(7_340_032), human_size(3 * 10**9)
    ('999 B', '7.3 MB', '3.0 GB')
    """
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def free_space(path: Path) -> int | None:
    """Free bytes on the filesystem of `path` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state dict: about what writing it takes."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def write_error(path: Path, exc: BaseException, needed: Needed = None, after: str = "", kind: str = "") -> UserError:
    """The one line for a failed write: what (`kind` `path`), why, the free space on its disk and about the size
    needed, and what is safe (`after`)."""
    needed = needed() if callable(needed) else needed
    parts = [f"could not write {kind}{path} ({type(exc).__name__}: {first_line(exc)})"]
    room = [f"{human_size(free)} free on its disk"] if (free := free_space(path)) is not None else []
    room += [f"about {human_size(needed)} needed"] if needed else []
    return UserError("; ".join(parts + ([", ".join(room)] if room else []) + ([after] if after else [])))


def remove(path: Path) -> None:
    """Remove a file or a folder, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def as_write_error(path: Path, needed: Needed = None, after: str = "", kind: str = "") -> Iterator[None]:
    """Any failure of the writes inside (but a UserError) as one UserError naming `path` and the disk space."""
    try:
        yield
    except UserError:
        raise
    except Exception as exc:  # OSError, SafetensorError, RuntimeError from torch.save, ...: each a failed write
        raise write_error(Path(path), exc, needed, after, kind) from exc


@contextmanager
def removed_on_failure(temp: Path) -> Iterator[None]:
    """`temp` is removed if anything inside fails, Ctrl-C and SystemExit included (and they go on)."""
    try:
        yield
    except BaseException:
        remove(temp)
        raise


@contextmanager
def writing(path: Path, temp: Path, needed: Needed = None, after: str = "", kind: str = "") -> Iterator[None]:
    """Writes into `temp` (what becomes `path` once renamed into place): see the module docstring."""
    with removed_on_failure(temp), as_write_error(path, needed, after, kind):
        yield


def sync_dir(folder: Path) -> None:
    """fsync a folder: the renames and removals in it survive a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """fsync every file under `folder`, then each folder, deepest first."""
    for path in Path(folder).rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    for path in sorted((p for p in Path(folder).rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        sync_dir(path)
    sync_dir(folder)


def write_atomically(path: str | Path, text: str | Iterable[str], after: str = "") -> None:
    """Write via a temporary sibling and rename: a reader (or a crash) never sees half a file. A failure of
    the writes is one UserError naming `path` (and `after`: what is safe); an error of the `text` iterable
    itself (a scorer's) stays its own. Either way no temporary is left and `path` is as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    written = 0
    needed = lambda: written  # noqa: E731 - read at failure time: at least what was written so far
    with removed_on_failure(tmp):
        with as_write_error(path, after=after):
            path.parent.mkdir(parents=True, exist_ok=True)
            f = tmp.open("w", encoding="utf-8")
        try:
            for chunk in [text] if isinstance(text, str) else text:  # made outside the guard
                with as_write_error(path, needed, after):
                    written += len(chunk.encode())
                    f.write(chunk)
            with as_write_error(path, needed, after):
                f.flush()
                os.fsync(f.fileno())
                f.close()
                os.replace(tmp, path)
        finally:
            if not f.closed:  # a failure is on its way: closing must not replace it with its own
                with suppress(OSError):
                    f.close()


def remove_stale(folder: Path, prefix: str) -> None:
    """Remove `folder`'s PREFIX...-PID temporaries whose process is gone (or is this one: an earlier write of
    this process that failed); another live process's are left alone."""
    for stale in Path(folder).glob(f"{prefix}*"):
        owner = stale.name.rsplit("-", 1)[-1]
        if owner.isdigit() and (int(owner) == os.getpid() or not process_alive(int(owner))):
            remove(stale)


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then act as they would have (a second Ctrl-C raises
    KeyboardInterrupt, a SIGTERM without a handler ends the process), so a few renames that must all happen
    are never cut in half. The handlers are swapped rather than the main thread's signal mask changed: a
    masked signal would still reach another thread (torch's), and Python runs its handler in the main thread
    all the same. Handlers only exist in the main thread; elsewhere no handler interrupts this thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in held}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        for sig in received:
            signal.raise_signal(sig)
