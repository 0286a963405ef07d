"""The optional plots (reward/eval/plotting.py, matplotlib extra): score.py's panels and the training curves,
and the one-line error when matplotlib is missing."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from reward.errors import UserError
from reward.metrics import (
    calibration,
    preference_probability,
)


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    from reward.eval import plotting

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UserError, match=r'pip install -e "\.\[plot\]"'):
        plotting.require_matplotlib()
    with pytest.raises(UserError, match="optional extra"):
        plotting.plot_training_curves("unused.jsonl", "unused.png")


def test_score_plot_panels_hold_the_data(tmp_path):
    pytest.importorskip("matplotlib")
    from reward.eval.plotting import plot_scores

    r_c, r_r = torch.tensor([1.0, 2.0, 0.5, 3.0]), torch.tensor([0.0, 2.5, -1.0, 1.0])
    calib = calibration(preference_probability(r_c, r_r), num_bins=5)
    fig = plot_scores(r_c, r_r, calib, tmp_path / "scores.png")

    assert (tmp_path / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist, rel = fig.axes
    heights = [p.get_height() for p in hist.patches]
    assert sum(heights[: len(heights) // 2]) == 4 and sum(heights[len(heights) // 2 :]) == 4  # chosen, rejected
    assert sorted(p.get_height() for p in rel.patches) == sorted(b.accuracy for b in calib.bins if b.count)


def test_training_curves_from_metrics_jsonl(tmp_path):
    pytest.importorskip("matplotlib")
    from reward.eval.plotting import main, plot_training_curves

    records = [
        {"step": 10, "loss": 0.69, "accuracy": 0.5},
        {"step": 20, "loss": 0.40, "accuracy": 0.8, "eval_loss": 0.45, "eval_accuracy": 0.75},
        {"step": 30, "loss": 0.20, "accuracy": 0.9, "eval_loss": 0.30, "eval_accuracy": 0.85},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    fig = plot_training_curves(tmp_path, tmp_path / "curves.png")  # a run folder works too

    loss_ax, acc_ax = fig.axes
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in loss_ax.lines}
    assert lines == {"train loss": ([10, 20, 30], [0.69, 0.40, 0.20]), "eval loss": ([20, 30], [0.45, 0.30])}
    assert [line.get_label() for line in acc_ax.lines] == ["train accuracy", "eval accuracy"]
    assert main([str(path), str(tmp_path / "cli.png")]) == 0 and (tmp_path / "cli.png").exists()
    assert main([str(tmp_path / "missing.jsonl"), str(tmp_path / "x.png")]) == 2
