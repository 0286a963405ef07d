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
    with pytest.raises(UserError, match=r"could not append to /dev/full \(OSError: .*No space left on device"):
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
