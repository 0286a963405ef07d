"""The writes that are not a checkpoint or the final folder (those: tests/test_atomic_export.py): metrics.jsonl
appends on a full disk, a record cut off mid-append dropped on resume, images written beside and renamed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reward.errors import UserError
from reward.metrics import MetricsWriter
from reward.run.checkpoints import trim_metrics

FULL = Path("/dev/full")  # every write fails with ENOSPC, as on a full disk


@pytest.mark.skipif(not FULL.exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_metrics_jsonl_is_one_line_saying_the_checkpoints_are_whole():
    with pytest.raises(UserError, match=r"could not append to /dev/full \(OSError: .*No space left on device.*MB free"):
        MetricsWriter(FULL).write({"step": 1, "loss": 0.5})


def test_a_record_cut_off_mid_append_is_dropped_when_the_run_resumes(tmp_path):
    path = tmp_path / "metrics.jsonl"
    whole = [{"step": s, "loss": 0.1 * s} for s in (1, 2, 3, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in whole) + '{"step": 5, "lo')  # a crash mid-line
    trim_metrics(path, 3)
    assert [json.loads(line) for line in path.read_text().splitlines()] == whole[:3]
    trim_metrics(path, 10)  # nothing after the step, nothing cut: unchanged
    assert [json.loads(line) for line in path.read_text().splitlines()] == whole[:3]


def test_an_image_that_fails_to_save_keeps_the_previous_one_and_leaves_no_temporary(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from reward.eval.plotting import save

    out = tmp_path / "curves.png"
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    save(fig, out)
    before = out.read_bytes()
    assert before.startswith(b"\x89PNG") and [p.name for p in tmp_path.iterdir()] == ["curves.png"]

    def fail(path, **kwargs):
        Path(path).write_bytes(b"\x89PNG half")  # part of the image, then the disk is full
        raise OSError(28, "No space left on device")

    fig.savefig = fail
    with pytest.raises(UserError, match=r"could not write the image .*curves.png .*No space left on device"):
        save(fig, out)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["curves.png"]


# --- the final folder's commit (reward/run/publish.py): what a failure leaves, what a commit may remove ---------
def files_writer(files: dict[str, str]):
    def write(staging: Path) -> None:
        staging.mkdir(parents=True)
        for name, text in files.items():
            (staging / name).write_text(text)

    return write


def folder_files(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def test_a_journal_that_cannot_be_synced_is_taken_back_and_the_previous_model_stays(tmp_path, monkeypatch):
    """The journal is in place but its folder's fsync fails: the commit has not started, so the journal goes with
    the temp folder it names. Left behind, the next run's roll-forward would find no new file to move and still
    remove the old model's leftovers (here its chat template), then say it finished."""
    from reward.run import publish as publishing

    target = tmp_path / "out"
    old = {"config.json": "old", "README.md": "old card", "chat_template.jinja": "old template"}
    publishing.publish(target, files_writer(old))
    real = publishing.sync_dir

    def sync_dir(folder: Path) -> None:
        if (target / publishing.JOURNAL).exists():
            raise OSError(5, "Input/output error")
        real(folder)

    monkeypatch.setattr(publishing, "sync_dir", sync_dir)
    with pytest.raises(UserError, match="could not write .*export-commit.json .*Input/output error"):
        publishing.publish(target, files_writer({"config.json": "new", "README.md": "new card"}))
    monkeypatch.setattr(publishing, "sync_dir", real)
    assert not (target / publishing.JOURNAL).exists() and not list(target.glob(".tmp-export-*"))
    assert publishing.recover(target) is False
    assert folder_files(target) == old


def test_a_folder_exported_before_file_lists_loses_only_the_files_save_pretrained_writes(tmp_path):
    from reward.run.publish import publish

    target = tmp_path / "out"
    target.mkdir()
    legacy = {"config.json": "old", "tokenizer.json": "old", "model.safetensors": "old", "README.md": "old card"}
    mine = {"tokenizer_notes.md": "my notes", "model_comparison.txt": "mine", "notes.txt": "mine"}
    for name, text in {**legacy, **mine}.items():
        (target / name).write_text(text)
    publish(target, files_writer({"config.json": "new", "model.safetensors": "new"}))
    assert folder_files(target) == {"config.json": "new", "model.safetensors": "new", **mine}


def test_overwrite_clears_a_damaged_journal_and_a_run_removes_dead_writers_temporaries(tmp_path, capsys):
    """--overwrite_output_dir replaces the previous run, a damaged export journal included (refused only when
    the run continues: test_atomic_export.py); a `.latest.tmp-PID` whose writer is gone is removed."""
    from conftest import small_run

    import train
    from reward.run.publish import JOURNAL

    out = tmp_path / "run"
    one_step = ["--max_steps", "1", "--eval_strategy", "no"]
    assert train.cli(small_run(out, *one_step)) == 0
    (out / JOURNAL).write_text("{not json")
    (out / ".latest.tmp-999999999").write_text("checkpoint-")  # a writer killed mid-write, long gone
    assert train.cli(small_run(out, *one_step, "--overwrite_output_dir")) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out  # the export is said as it starts and when it is done (#29: nothing looks hung)
    assert f"writing the model folder {out} ..." in printed and f"wrote {out} (" in printed
    assert not (out / JOURNAL).exists() and not (out / ".latest.tmp-999999999").exists()
    assert (out / "latest").read_text().strip() == "checkpoint-1"
