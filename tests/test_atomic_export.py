"""Every write is atomic, the final export included (reward/run/publish.py, reward/run/writes.py): killed at
any filesystem call, the output folder holds the previous complete model or the new one (a commit cut short
is rolled forward by the next process); a full disk is one line naming the folder and the space, and leaves
no temporary and every earlier checkpoint as it was."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import signal
import sys
from copy import deepcopy
from functools import partial
from pathlib import Path

import pytest
import torch
import transformers.modeling_utils
from conftest import build_gpt2_model, build_gpt2_style_tokenizer, latest, small_run, weights
from safetensors import SafetensorError
from test_bad_input import assert_clean_error, invoke, pairs, write_jsonl
from transformers import pipeline

import score
import train
from reward.errors import UserError
from reward.eval.model_card import render_model_card
from reward.export import save_reward_model
from reward.finetune.lora import folder_writer
from reward.run.checkpoints import LATEST_FILE, STATE_FILE, save_training_checkpoint
from reward.run.output_dir import prepare_output_dir, release
from reward.run.publish import EXPORT_TEMP, JOURNAL, MANIFEST, export_model, publish, recover
from reward.run.signals import StopOnSignal
from reward.run.writes import human_size, write_atomically

pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")
TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
WRITES = {"os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.mkdir", "os.truncate", "os.link", "os.symlink"}


def loader_view(folder: Path) -> dict[str, str]:
    """What a loader (the pipeline, score.py) reads from the folder: every file not hidden, with its hash."""
    files = [
        p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    ]
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


class Writes:
    """Counts the filesystem writes of the code under test: Python's audit events (open for writing, rename,
    remove, rmtree, mkdir...) and the safetensors writer (Rust, so patched). `each()` runs at every one,
    `action()` at the k-th."""

    def __init__(self) -> None:
        self.k: int | None = None
        self.count = 0
        self.action = self.each = None

    def arm(self, k: int, action=None, each=None) -> None:
        self.k, self.count, self.action, self.each = k, 0, action, each

    def audit(self, event: str, args: tuple) -> None:
        if self.k is None:
            return
        if event == "open":
            _, mode, flags = args
            writing = any(c in mode for c in "wax+") if isinstance(mode, str) else flags & WRITE_FLAGS
            if not writing:
                return
        elif event not in WRITES:
            return
        self.fire()

    def fire(self) -> None:
        if self.k is None:
            return
        self.count += 1
        if self.each:
            self.each()
        if self.count == self.k:
            action, self.k = self.action, None  # once; disarmed before the action (it reads files itself)
            action()


WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
WATCH = Writes()
sys.addaudithook(WATCH.audit)  # for the life of the process: costs one attribute check per event when disarmed


@pytest.fixture()
def watched(monkeypatch):
    real = transformers.modeling_utils.safe_save_file

    def save_file(*args, **kwargs):
        WATCH.fire()
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", save_file)
    yield WATCH
    WATCH.k = None


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A folder holding a previous complete export (saved before export lists existed, with a chat template)
    beside a run's other files, and the new model to export over it (other weights, options, no template)."""
    base = tmp_path_factory.mktemp("exports")
    old_tok = build_gpt2_style_tokenizer()
    old_tok.chat_template = TEMPLATE
    new_tok = deepcopy(old_tok)
    new_tok.chat_template = None
    old, new = build_gpt2_model(old_tok, seed=1), build_gpt2_model(new_tok, seed=2)
    previous = base / "previous"
    card = partial(render_model_card, card={"format": "explicit prompt"})
    save_reward_model(old, old_tok, previous, {"run": "old"}, card=partial(card, cfg={"run": "old"}))
    (previous / "checkpoint-1").mkdir()
    (previous / "checkpoint-1" / STATE_FILE).write_bytes(b"state")
    (previous / LATEST_FILE).write_text("checkpoint-1\n")
    (previous / "metrics.jsonl").write_text('{"step": 1}\n')
    (previous / "notes.txt").write_text("the user's own file\n")
    write = folder_writer(new, new_tok, {"run": "new"}, partial(card, cfg={"run": "new"}))
    return previous, write, new


def fresh(previous: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(previous, target)
    return target


def test_killed_at_each_write_the_folder_holds_the_old_model_or_the_new_one(exports, watched, tmp_path):
    previous, write, model = exports
    target = fresh(previous, tmp_path / "out")
    export_model(target, write, None, model)  # uninterrupted: the new complete export
    old_view, new_view = loader_view(previous), loader_view(target)
    assert "chat_template.jinja" in old_view and "chat_template.jinja" not in new_view  # the old one's is removed
    assert {"checkpoint-1/training_state.pt", "latest", "metrics.jsonl", "notes.txt"} <= new_view.keys()
    assert old_view["model.safetensors"] != new_view["model.safetensors"]
    card = (target / "README.md").read_text()  # it names the final folder, never the temporary one (nor a local path)
    assert EXPORT_TEMP not in card and target.name in card and str(target) not in card
    assert json.loads((target / "training_config.json").read_text()) == {"run": "new"}
    seen_commit = seen_write = 0
    unheld, at_kill = signal.getsignal(signal.SIGINT), {}

    def kill():  # what a loader would read at this instant, then the interruption
        at_kill.update(view=loader_view(target), journal=(target / JOURNAL).exists())
        at_kill["held"] = signal.getsignal(signal.SIGINT) is not unheld
        raise KeyboardInterrupt

    for k in range(1, 500):
        fresh(previous, target)
        watched.arm(k, kill)
        try:
            export_model(target, write, None, model)
        except KeyboardInterrupt:
            pass
        else:
            assert watched.count == k - 1 and loader_view(target) == new_view
            break
        if at_kill["journal"]:  # inside the commit: Ctrl-C and SIGTERM wait there, only SIGKILL lands
            seen_commit += 1
            assert at_kill["held"], k
        else:
            seen_write += 1
            assert at_kill["view"] in (old_view, new_view), k
        left_journal = (target / JOURNAL).exists()
        assert recover(target) == left_journal  # the next process that opens the folder rolls it forward
        after = loader_view(target)
        assert after == new_view if left_journal else after in (old_view, new_view), k
        assert not [p.name for p in target.glob(".*") if p.name != MANIFEST], k  # no journal, no temp
    else:
        pytest.fail("the export never finished")
    assert seen_commit >= 5 and seen_write >= 10  # both phases were cut at every write
    rm = pipeline("text-classification", model=str(target), device="cpu")
    assert isinstance(rm("Name a fruit. mango")[0]["score"], float)


@pytest.mark.parametrize("phase", ["write", "commit"])
def test_a_second_sigterm_stops_a_write_at_once_and_waits_for_a_commit(phase, exports, watched, tmp_path):
    previous, write, model = exports
    target = fresh(previous, tmp_path / "out")
    export_model(target, write, None, model)
    new_view, old_view = loader_view(target), loader_view(previous)
    staging, phases = target / f"{EXPORT_TEMP}{os.getpid()}", []  # a dry run: the phase of each write
    fresh(previous, target)
    watched.arm(10**9, each=lambda: phases.append("commit" if (target / JOURNAL).exists() else staging.exists()))
    export_model(target, write, None, model)
    watched.k = None
    k = phases.index("commit" if phase == "commit" else True) + 1  # the commit's first rename, or a file written
    target = fresh(previous, target)
    with StopOnSignal() as stop:
        stop.requested = signal.SIGTERM  # the first SIGTERM came: the next one raises KeyboardInterrupt
        watched.arm(k, lambda: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(KeyboardInterrupt):
            export_model(target, write, None, model)
    assert loader_view(target) == (new_view if phase == "commit" else old_view)
    assert not [p.name for p in target.glob(".*") if p.name != MANIFEST]


def test_the_next_train_run_on_the_folder_finishes_a_commit_cut_short(exports, watched, tmp_path, capsys):
    previous, write, model = exports
    target = fresh(previous, tmp_path / "out")
    export_model(target, write, None, model)
    new_view = loader_view(target)
    fresh(previous, target)
    phases: list[bool] = []
    watched.arm(10**9, each=lambda: phases.append((target / JOURNAL).exists()))
    export_model(target, write, None, model)
    watched.k = None
    fresh(previous, target)
    watched.arm(phases.index(True) + 2, fails_with(KeyboardInterrupt()))  # SIGKILL after the first file moved in
    with pytest.raises(KeyboardInterrupt):
        export_model(target, write, None, model)
    assert (target / JOURNAL).exists() and loader_view(target) != new_view  # mixed, and the journal says so
    assert prepare_output_dir(target, "latest", overwrite=False) == target / "checkpoint-1"  # train.py's resume
    release(target)
    assert loader_view(target) == new_view and not (target / JOURNAL).exists()
    assert f"{target}: finished moving in the model that an interrupted export left" in capsys.readouterr().out


def test_the_next_export_replaces_only_what_the_previous_one_wrote(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")

    def first(folder: Path) -> None:
        (folder / "adapter").mkdir(parents=True)
        (folder / "adapter" / "a.safetensors").write_text("a")
        (folder / "extra.bin").write_text("x")
        (folder / "config.json").write_text("{}")

    def second(folder: Path) -> None:
        (folder / "adapter").mkdir(parents=True)
        (folder / "adapter" / "b.safetensors").write_text("b")
        (folder / "config.json").write_text('{"new": 1}')

    publish(target, first)
    assert json.loads((target / MANIFEST).read_text())["files"] == ["adapter", "config.json", "extra.bin"]
    publish(target, second)
    assert loader_view(target).keys() == {"adapter/b.safetensors", "config.json", "notes.txt"}


def test_a_commit_in_progress_is_left_alone_and_a_damaged_journal_is_one_line(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / f"{EXPORT_TEMP}1").mkdir()
    journal = target / JOURNAL
    journal.write_text(json.dumps({"temp": f"{EXPORT_TEMP}1", "new": ["config.json"], "remove": []}))
    with journal.open("r+") as held:  # the writer, alive, holds its journal locked
        fcntl.flock(held, fcntl.LOCK_EX)
        assert recover(target) is False and journal.exists() and (target / f"{EXPORT_TEMP}1").exists()
    journal.write_text(json.dumps({"temp": f"{EXPORT_TEMP}1", "new": ["checkpoint-2"], "remove": []}))
    with pytest.raises(UserError, match=f"{journal} is damaged .*not an export's.*--resume_from_checkpoint latest"):
        recover(target)
    journal.write_bytes(b"\x80garbage")
    with pytest.raises(UserError, match=f"{journal} is damaged"):
        recover(target)


# --- a full disk ---------------------------------------------------------------------------------------
def fails_with(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


FAILURES = {
    "safetensors": ("safe_save_file", SafetensorError("Error while serializing: IoError(No space left on device)")),
    "oserror": ("safe_save_file", OSError(errno.ENOSPC, "No space left on device")),
    "torch_save": ("torch.save", RuntimeError("[enforce fail at inline_container.cc:626] unexpected pos 832 vs 777")),
    "ctrl_c": ("safe_save_file", KeyboardInterrupt()),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_checkpoint_write_keeps_the_previous_one_and_leaves_no_temp(failure, tmp_path, monkeypatch):
    tokenizer = build_gpt2_style_tokenizer()
    write = folder_writer(build_gpt2_model(tokenizer), tokenizer, {}, None)
    save = lambda path: write(path, None, None)  # noqa: E731
    state = {"step": 2, "moments": torch.zeros(1000)}
    save_training_checkpoint(tmp_path, 2, save, state)
    before = loader_view(tmp_path)
    where, exc = FAILURES[failure]
    if where == "torch.save":
        monkeypatch.setattr(torch, "save", fails_with(exc))
    else:
        monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", fails_with(exc))
    with pytest.raises(type(exc) if failure == "ctrl_c" else UserError) as info:
        save_training_checkpoint(tmp_path, 4, save, {**state, "step": 4})
    if failure != "ctrl_c":
        line = str(info.value)
        assert line.startswith(f"could not write checkpoint {tmp_path / 'checkpoint-4'} ({type(exc).__name__}: ")
        assert "free on its disk, about" in line and "the previous checkpoint and `latest` are untouched" in line
        size = sum(p.stat().st_size for p in (tmp_path / "checkpoint-2").iterdir())  # the previous checkpoint's
        assert f"about {human_size(size)} needed" in line, line
    assert not list(tmp_path.glob(".tmp-*")) and not (tmp_path / "checkpoint-4").exists()
    assert loader_view(tmp_path) == before and latest(tmp_path) == "checkpoint-2"


def test_a_full_disk_at_the_final_export_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = transformers.modeling_utils.safe_save_file

    def full_at_export(tensors, filename, *args, **kwargs):
        if EXPORT_TEMP in str(filename):
            raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full_at_export)
    code, _, err = invoke(train.cli, small_run(out, "--max_steps", "2"), capsys)
    needles = [f"could not write the model folder {out} (SafetensorError: ", "No space left on device", "free on"]
    assert_clean_error(code, err, [*needles, "checkpoints are untouched", "--resume_from_checkpoint latest"])
    assert latest(out) == "checkpoint-2" and (out / "checkpoint-2" / STATE_FILE).is_file()
    assert not (out / "config.json").exists() and not list(out.glob(".tmp-*")) and not (out / ".lock").exists()
    monkeypatch.undo()
    code, printed, err = invoke(train.cli, ["--output_dir", str(out), "--resume_from_checkpoint", "latest"], capsys)
    assert code == 0, err[-2000:]
    assert f"saved reward model to {out}" in printed
    trained, exported = weights(out / "checkpoint-2"), weights(out)
    assert trained.keys() == exported.keys() and all(torch.equal(trained[k], exported[k]) for k in trained)


def test_a_full_disk_under_score_output_is_one_line_and_keeps_the_previous_file(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(4))
    output = tmp_path / "scores.jsonl"
    output.write_text("the previous scores\n")
    real_open = Path.open

    def open_full(self, mode="r", *args, **kwargs):  # the temporary sibling lands on a full device
        return real_open(Path("/dev/full") if ".tmp-" in self.name else self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_full)
    argv = ["--model", str(tiny_model_dir), "--input", str(data), "--output", str(output)]
    code, _, err = invoke(score.cli, argv, capsys)
    assert_clean_error(code, err, [f"could not write {output} (OSError: [Errno 28] No space left on device)", "free"])
    assert output.read_text() == "the previous scores\n" and not list(tmp_path.glob(".*tmp-*"))


def test_an_error_of_what_is_written_stays_its_own_and_leaves_no_temp(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text("before\n")

    def rows():
        yield "one\n"
        raise ValueError("row 2: no completion")

    with pytest.raises(ValueError, match="row 2"):
        write_atomically(path, rows())
    assert path.read_text() == "before\n" and [p.name for p in tmp_path.iterdir()] == ["scores.jsonl"]
