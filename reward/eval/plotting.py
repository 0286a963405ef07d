"""Figures: reward histograms + reliability diagram (score.py --plot), and training curves.

    python -m reward.eval.plotting RUN_DIR/metrics.jsonl curves.png     # loss and accuracy, train and eval

matplotlib is an optional extra (`pip install -e ".[plot]"`), imported only inside these functions,
so the trainer never needs it. We draw on a bare `matplotlib.figure.Figure` (no pyplot): no global
figure state and no GUI backend, so it works the same on a headless server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from reward.errors import UserError
from reward.metrics import Calibration
from reward.run.writes import writing

INSTALL_HINT = 'pip install -e ".[plot]"'
HIST_BINS = 30


def require_matplotlib():
    """The `Figure` class, or a UserError that says how to install the plot extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UserError(
            f"plotting needs matplotlib, an optional extra: install it with `{INSTALL_HINT}` "
            "(or `pip install matplotlib`)"
        ) from exc
    return Figure


def plot_scores(r_chosen: torch.Tensor, r_rejected: torch.Tensor, calib: Calibration, out_path: str | Path):
    """Left: histograms of chosen and rejected rewards on shared bins. Right: the reliability diagram
    (accuracy per confidence bin against the diagonal of perfect calibration). Returns the Figure."""
    Figure = require_matplotlib()
    chosen, rejected = r_chosen.double().tolist(), r_rejected.double().tolist()
    lo, hi = min(chosen + rejected), max(chosen + rejected)
    if lo == hi:  # one value everywhere: give the single bar some width
        lo, hi = lo - 0.5, hi + 0.5
    edges = [lo + (hi - lo) * i / HIST_BINS for i in range(HIST_BINS + 1)]  # shared, so bars compare

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    hist, rel = fig.subplots(1, 2)
    hist.hist(chosen, bins=edges, alpha=0.6, label=f"chosen (n={len(chosen)})", color="tab:green")
    hist.hist(rejected, bins=edges, alpha=0.6, label=f"rejected (n={len(rejected)})", color="tab:red")
    hist.set(xlabel="reward", ylabel="sequences", title="Rewards of chosen vs rejected")
    hist.legend()

    full = [b for b in calib.bins if b.count]
    width = calib.bins[0].upper - calib.bins[0].lower
    rel.bar(
        [(b.lower + b.upper) / 2 for b in full],
        [b.accuracy for b in full],
        width=width,
        edgecolor="black",
        alpha=0.7,
        label="accuracy in bin",
    )
    rel.plot([0.5, 1.0], [0.5, 1.0], "--", color="gray", label="perfect calibration")
    ece = "n/a" if calib.ece is None else f"{calib.ece:.4f}"
    rel.set(
        xlim=(0.5, 1.0),
        ylim=(0.0, 1.05),
        xlabel="confidence max(p, 1 - p), p = sigmoid(r_chosen - r_rejected)",
        ylabel="accuracy (r_chosen > r_rejected)",
        title=f"Reliability diagram (ECE {ece})",
    )
    rel.legend(loc="lower right")
    save(fig, out_path)
    return fig


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a metrics.jsonl (a run folder also works: its metrics.jsonl is read)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: no such metrics file")
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not a JSON-lines metrics file ({exc})") from exc
    if not any("loss" in r or "eval_loss" in r for r in records):
        raise UserError(f"{path}: no loss records to plot")
    return records


def plot_training_curves(metrics_path: str | Path, out_path: str | Path):
    """Loss (left) and accuracy (right) against the optimizer step, train and eval. Returns the Figure."""
    Figure = require_matplotlib()
    records = read_metrics(metrics_path)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("eval_", "o-")):
            points = [(r["step"], r[prefix + key]) for r in records if r.get(prefix + key) is not None]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, style, label=("eval " if prefix else "train ") + key)
        ax.set(xlabel="optimizer step", ylabel=key, title=key.capitalize())
        ax.legend()
    save(fig, out_path)
    return fig


def save(fig, out_path: str | Path) -> None:
    """The image written beside `out_path` (its suffix kept: matplotlib picks the format from it) and renamed over
    it, so a failed or interrupted save leaves the previous image and no half-written one."""
    out = Path(out_path)
    temp = out.with_name(f".{out.stem}.tmp-{os.getpid()}{out.suffix}")
    with writing(out, temp, kind="the image "):
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(temp, dpi=120)
        os.replace(temp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reward.eval.plotting", description=plot_training_curves.__doc__)
    parser.add_argument("metrics", help="RUN_DIR/metrics.jsonl (or RUN_DIR)")
    parser.add_argument("out", help="image to write, e.g. curves.png")
    args = parser.parse_args(argv)
    try:
        plot_training_curves(args.metrics, args.out)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
