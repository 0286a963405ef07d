"""The final model folder, published so that it always holds one run's complete model: the previous export or
the new one, never a mix (a second SIGTERM mid-export used to leave new weights beside the old model card).

The model folder is OUTPUT_DIR itself (`pipeline(model=OUTPUT_DIR)`), beside checkpoint-*/, latest,
metrics.jsonl and .lock, so no single rename can swap it. Instead:

    write    the whole folder into OUTPUT_DIR/.tmp-export-PID/, with .export-files.json (its own file list,
             for the next export to replace), fsync'ed. Ctrl-C, a second SIGTERM or a full disk here removes
             it and leaves the previous export untouched.
    commit   with SIGINT / SIGTERM held: the journal OUTPUT_DIR/.export-commit.json (the temp folder, the new
             names, the previous export's names that the new one lacks) written atomically and locked (flock),
             then each new file or folder renamed into place, the previous export's leftovers removed, the
             journal and the temp folder removed.
    recover  a journal that no process holds locked (its writer was SIGKILLed or lost power inside the few
             renames) is rolled forward by the next process that opens the folder: the next train.py run on it
             (reward/run/output_dir.py) and the next export; a temp folder of a process that is gone is removed.

Only the export's own files are replaced or removed: those the previous export listed, or, for a folder
exported before the list existed, the names save_pretrained writes. Never checkpoints, `latest`,
metrics.jsonl, .lock, trackers' folders, plots or the user's own files.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn

from reward.errors import UserError, first_line
from reward.export import FolderWriter
from reward.model import unwrap
from reward.run.writes import (
    Needed,
    as_write_error,
    human_size,
    remove,
    remove_stale,
    signals_held,
    sync_dir,
    sync_tree,
    tensor_bytes,
)

EXPORT_TEMP = ".tmp-export-"  # + PID
JOURNAL = ".export-commit.json"
MANIFEST = ".export-files.json"
# what a model folder written by save_pretrained (model, tokenizer) and reward/export.py may hold
EXPORT_NAMES = tuple(
    "config.json generation_config.json model.safetensors model.safetensors.index.json training_config.json "
    "README.md adapter tokenizer.json tokenizer_config.json special_tokens_map.json added_tokens.json "
    "chat_template.jinja chat_template.json additional_chat_templates vocab.json merges.txt vocab.txt "
    "tokenizer.model spiece.model".split()
)
EXPORT_GLOBS = ("model-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].safetensors",)  # sharded weights
NEVER = re.compile(r"^(checkpoint-.*|latest|metrics\.jsonl|heldout_pairs\.jsonl|runs|wandb|\..*)$")
UNTOUCHED = (
    "the previous model in it (if any) and the checkpoints are untouched: free space, then export again "
    "(train.py: --resume_from_checkpoint latest)"
)


def export_model(target: str | Path, write: FolderWriter, weights: dict | None, model: nn.Module) -> Path:
    """The final folder (the recipe's, RewardTrainer.save_model's): `write` (reward/run/parts.py `model_writer`)
    published into `target` as below; `weights` are an FSDP model's gathered ones (None otherwise)."""
    target = Path(target)
    needed = lambda: tensor_bytes(weights if weights is not None else unwrap(model).state_dict())  # noqa: E731
    print(f"writing the model folder {target} ...", flush=True)  # seconds to minutes for a large model
    start = time.perf_counter()
    publish(target, lambda staging: write(staging, weights, target), needed)
    size = sum(p.stat().st_size for p in target.glob("*.safetensors"))
    print(f"wrote {target} ({human_size(size)} of weights, {time.perf_counter() - start:.1f} s)")
    return target


def publish(target: Path, write: Callable[[Path], object], needed: Needed = None) -> Path:
    """`write(folder)` writes a whole model folder; it lands in `target` as the module docstring says."""
    target = Path(target)
    with as_write_error(target, needed, UNTOUCHED, kind="the model folder "):
        target.mkdir(parents=True, exist_ok=True)
    recover(target)
    staging = target / f"{EXPORT_TEMP}{os.getpid()}"
    committed = False
    try:
        with as_write_error(target, needed, UNTOUCHED, kind="the model folder "):
            remove(staging)
            write(staging)
            names = sorted(p.name for p in staging.iterdir() if not NEVER.match(p.name))  # a model's files only
            (staging / MANIFEST).write_text(json.dumps({"files": names}, indent=1) + "\n", encoding="utf-8")
            sync_tree(staging)
        plan = {"temp": staging.name, "new": [*names, MANIFEST]}
        plan["remove"] = sorted(set(previous_export(target)) - set(plan["new"]))
        with signals_held():
            with as_write_error(target / JOURNAL, needed, UNTOUCHED):
                lock = write_journal(target, plan)
            committed = True  # from here on the new model wins: an interrupted commit is rolled forward
            try:
                roll_forward(target, plan)
            except Exception as exc:
                raise UserError(
                    f"could not finish moving the new model into {target} ({type(exc).__name__}: {first_line(exc)});"
                    f" {target / JOURNAL} records the rest: the next train.py run on {target} (or export) finishes it"
                ) from exc
            finally:
                os.close(lock)
    except BaseException:
        if not committed:
            remove(staging)
        raise
    return target


def previous_export(target: Path) -> list[str]:
    """The names of the export already in `target`: its own list, or for a folder exported before lists were
    kept (and only if it holds a model: config.json) the names save_pretrained writes."""
    try:
        names = json.loads((target / MANIFEST).read_text(encoding="utf-8"))["files"]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise TypeError(f"{MANIFEST}: not a list of names")
    except (OSError, ValueError, KeyError, TypeError):
        if not (target / "config.json").is_file():
            return []
        names = [n for n in EXPORT_NAMES if (target / n).exists()] + [
            p.name for g in EXPORT_GLOBS for p in target.glob(g)
        ]
    return [name for name in names if plain_name(name) and not NEVER.match(name)]


def plain_name(name: str) -> bool:
    """A file or folder directly inside the target: no separators, no `..`."""
    return bool(name) and name not in (".", "..") and "/" not in name and os.sep not in name


def write_journal(target: Path, plan: dict) -> int:
    """Write the journal atomically and return its descriptor, locked for as long as the commit runs (a reader
    that finds it unlocked knows its writer is gone)."""
    journal = target / JOURNAL
    part = journal.with_name(f"{JOURNAL}.tmp-{os.getpid()}")
    fd = os.open(part, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o644)
    placed = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (json.dumps(plan, indent=1) + "\n").encode())
        os.fsync(fd)
        os.replace(part, journal)
        placed = True
        sync_dir(target)
    except BaseException:
        os.close(fd)
        part.unlink(missing_ok=True)
        if placed:  # the commit has not started: no journal may outlive the temp folder it names
            journal.unlink(missing_ok=True)
        raise
    return fd


def roll_forward(target: Path, plan: dict) -> None:
    """Move each new name that is still in the temp folder into place (replacing what is there), remove the
    previous export's leftovers, then the journal and the temp folder. Idempotent: a commit interrupted at
    any point is finished by running it again."""
    staging = target / plan["temp"]
    for name in plan["new"]:
        source, dest = staging / name, target / name
        if not os.path.lexists(source):
            if not os.path.lexists(dest):  # in neither place: the journal does not describe this folder
                raise UserError(f"{target / JOURNAL}: {name} is neither in {staging} nor in {target}; {JOURNAL_HINT}")
            continue  # moved in before the interruption
        if dest.is_dir() and not dest.is_symlink():
            remove(dest)  # a folder (adapter/) cannot be renamed over a non-empty one
        elif source.is_dir() and os.path.lexists(dest):
            dest.unlink()
        os.replace(source, dest)
    for name in plan["remove"]:
        remove(target / name)
    sync_dir(target)
    (target / JOURNAL).unlink()
    sync_dir(target)
    remove(staging)


def recover(target: Path) -> bool:
    """Finish the commit that a process which is gone left in `target` (True if there was one), and remove
    the export temp folders of processes that are gone."""
    target = Path(target)
    rolled = False
    try:
        fd = os.open(target / JOURNAL, os.O_RDWR)  # read-write: flock on NFS needs it
    except FileNotFoundError:
        fd = None
    except OSError as exc:
        raise UserError(f"{target / JOURNAL}: cannot be opened ({exc.strerror or exc}); {JOURNAL_HINT}") from exc
    if fd is not None:
        with os.fdopen(fd, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a live process is committing right now
            if os.fstat(f.fileno()).st_nlink:  # not finished (and removed) in the meantime
                plan = read_journal(f.read(), target / JOURNAL)
                with as_write_error(target, after=f"{target / JOURNAL} still records the move"):
                    roll_forward(target, plan)
                print(f"{target}: finished moving in the model that an interrupted export left ({plan['temp']})")
                rolled = True
    remove_stale(target, EXPORT_TEMP)
    return rolled


JOURNAL_HINT = (
    "the model files beside it may mix two exports: delete it and the .tmp-export-* folder, then export again "
    "(the checkpoints are intact: --resume_from_checkpoint latest)"
)


def read_journal(data: bytes, path: Path) -> dict:
    """The journal's plan, checked: it names only the export's own files and its temp folder."""
    try:
        plan = json.loads(data)
        lists = [plan["new"], plan["remove"]]
        temp = plan["temp"]
    except (ValueError, KeyError, TypeError) as exc:  # not JSON, not an object, a field missing
        raise UserError(f"{path} is damaged ({first_line(exc)}); {JOURNAL_HINT}") from exc
    names = [n for names in lists if isinstance(names, list) for n in names]
    ours = all(isinstance(n, str) and plain_name(n) and (n == MANIFEST or not NEVER.match(n)) for n in names)
    if not (all(isinstance(names, list) for names in lists) and ours and re.fullmatch(r"\.tmp-export-\d+", str(temp))):
        raise UserError(f"{path} is damaged (it names files that are not an export's); {JOURNAL_HINT}")
    return plan
