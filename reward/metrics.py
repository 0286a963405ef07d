r"""Every number the loop and score.py report, computed exactly, and where it goes.

**Averages.** Over several micro-batches (an optimizer step, or the whole eval set) every mean is
weighted by the number of pairs in each, so accuracy is "correct pairs / all pairs", never a mean
of means (`MetricTotals`); the step log line and OUTPUT_DIR/metrics.jsonl record them. The sums
stay tensors where the rewards are until `summary()`: reading a GPU value into Python waits for the
GPU, so it happens once per optimizer step (and once per evaluation), never per micro-batch.

**Diagnostics** beyond accuracy — calibration, length bias, subsets — are pure functions of
per-pair rewards (plus token lengths and subset labels), used by `score.py` and by the training
loop's evaluation (`eval_ece`, `eval_length_corr`, `eval_accuracy/<subset>` in metrics.jsonl).

**Calibration.** A Bradley–Terry model states a probability, p = σ(r_c − r_r), that the chosen
response wins (the margin column, a training device, is not part of it). The label always says
"chosen wins", so scoring p against an outcome of 1 would only reward confidence. We use the
symmetric, classification form of Guo et al. (2017, "On Calibration of Modern Neural Networks"):
the model *predicts* the side it prefers, with

    confidence = max(p, 1 − p) ∈ [0.5, 1]        correct = (p > 0.5), i.e. r_c > r_r

(a tie, p = 0.5, counts as wrong, as in the accuracy metric, so the bins' accuracies average to
the reported accuracy). The pairs are put in K equal-width bins of confidence over [0.5, 1],
bin k = (0.5 + k·w, 0.5 + (k+1)·w] with w = 0.5/K (the first bin also holds 0.5), and

    ECE = Σ_k (n_k / N) · |accuracy_k − mean confidence_k|

0 means "when the model says 80 %, it is right 80 % of the time" in every bin. The reliability
table lists every bin's count, mean confidence and accuracy (None for an empty bin).

**Length bias.** Pearson correlation between reward and sequence length in tokens over all 2B
sequences (chosen and rejected alike). A large |r| on data where length should not matter means
the model partly rewards length. None when it is undefined (fewer than 2 sequences, or all
lengths or all rewards equal).

**Subsets.** Accuracy per value of a `subset` (or else `category`) column, when the data has one.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from reward.errors import UserError, first_line
from reward.loss import LossOutput


class MetricTotals:
    """Running sums over LossOutputs; `summary()` gives pair-weighted means and global min/max.

    Counts come from shapes (Python ints); the sums stay tensors on the rewards' device, so adding a
    micro-batch waits for nothing. Accuracy and margin are over the decided pairs (every pair, except a
    ranking's tie trained toward ½), a tie of rewards counting as wrong; the loss is over every pair.
    """

    def __init__(self) -> None:
        self.pairs = self.decided = self.rewards = 0
        self.sums: torch.Tensor | None = None  # (4,) float64: Σ ℓ, correct pairs, Σ Δ of the decided, Σ reward
        self.extremes: torch.Tensor | None = None  # (2,) float64: −min reward, max reward

    def add(self, out: LossOutput) -> None:
        delta, rewards = out.delta.double(), out.rewards.double()  # (B',), (R,)
        sums = torch.stack([out.loss_sum.double(), (delta > 0).sum().double(), delta.sum(), rewards.sum()])  # (4,)
        extremes = torch.stack([-rewards.min(), rewards.max()])  # (2,)
        self.merge_sums(out.num_pairs, delta.numel(), rewards.numel(), sums, extremes)

    def merge(self, other: MetricTotals) -> None:
        if other.sums is not None:
            self.merge_sums(other.pairs, other.decided, other.rewards, other.sums, other.extremes)

    def merge_sums(self, pairs: int, decided: int, rewards: int, sums: torch.Tensor, extremes: torch.Tensor) -> None:
        self.pairs, self.decided, self.rewards = self.pairs + pairs, self.decided + decided, self.rewards + rewards
        self.sums = sums if self.sums is None else self.sums + sums
        self.extremes = extremes if self.extremes is None else torch.maximum(self.extremes, extremes)

    def summary(self) -> dict[str, float]:
        """The means, read off the device in one transfer."""
        if self.sums is None:
            loss_sum = correct = margin_sum = reward_sum = 0.0
            low, high = math.inf, -math.inf
        else:
            values = torch.cat([self.sums, self.extremes]).tolist()  # the one wait for the device
            loss_sum, correct, margin_sum, reward_sum, negative_low, high = values
            low = -negative_low
        return {
            "loss": loss_sum / max(self.pairs, 1),
            "accuracy": correct / max(self.decided, 1),
            "margin": margin_sum / max(self.decided, 1),
            "reward_mean": reward_sum / max(self.rewards, 1),
            "reward_min": low,
            "reward_max": high,
            "pairs": self.pairs,
        }


def loss_metrics(out: LossOutput) -> dict[str, float]:
    """The metrics of one loss call (score.py's pairs, the tour): loss, accuracy, margin, reward stats.

    >>> from reward.loss import bradley_terry_loss
    >>> m = loss_metrics(bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])))
    >>> m["accuracy"], m["margin"], m["pairs"]
    (0.5, 0.5, 2)
    """
    totals = MetricTotals()
    totals.add(out)
    return totals.summary()


class Window:
    """The optimizer steps since the last record: their metrics and gradient norms (finite steps only), their
    real tokens, and the compute time of every step (evaluation and saving excluded: pairs/s measures training)."""

    def __init__(self) -> None:
        self.totals, self.grad_norms, self.tokens, self.seconds = MetricTotals(), [], 0, 0.0

    def add(self, totals: MetricTotals, grad_norm: float, tokens: int) -> None:
        self.totals.merge(totals)
        self.grad_norms.append(grad_norm)
        self.tokens += tokens

    def close(self) -> tuple[dict[str, float], dict[str, float]]:
        """(the metrics of its finite steps, the fields a step record gets: those, the mean gradient norm and
        the rates); both empty when every step of the window was skipped."""
        if not self.grad_norms:
            return {}, {}
        summary = self.totals.summary()
        rates = {
            "grad_norm": sum(self.grad_norms) / len(self.grad_norms),
            "pairs_per_s": summary["pairs"] / self.seconds,
            "tokens_per_s": self.tokens / self.seconds,
        }
        return summary, {**summary, **rates}


def eval_record(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Evaluation metrics as a step record's fields: eval_loss, ... for the held-out split (named ""), and
    eval_<name>_loss, ... for each named set (TRL's names for a dict eval_dataset)."""
    return {f"eval_{name}_{k}" if name else f"eval_{k}": v for name, m in results.items() for k, v in m.items()}


class MetricsWriter:
    """Appends one JSON object per line to `path` (created with its folder), then hands the same record
    to each of `sinks` (the trackers of `--report_to`, reward/integrations/trackers.py)."""

    def __init__(self, path: str | Path, sinks: Sequence[Callable[[dict[str, Any]], None]] = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.sinks = list(sinks)

    def write(self, record: dict[str, Any]) -> None:
        try:  # one line per record, appended: a crash can cut only the last one (a resume drops it)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:  # a full disk mid-run: one line; the checkpoints written so far are whole
            try:
                room = f"{shutil.disk_usage(self.path.parent).free / 1e6:.1f} MB free on its disk; "
            except OSError:
                room = ""
            raise UserError(
                f"could not append to {self.path} ({type(exc).__name__}: {first_line(exc)}); {room}the checkpoints "
                "saved so far are complete: free some space and resume with --resume_from_checkpoint latest"
            ) from exc
        for sink in self.sinks:
            sink(record)


def format_step_line(record: dict[str, Any]) -> str:
    """`step 42 | loss 0.6410 | acc 0.62 | margin 0.31 | lr 1.0e-05 | grad 1.23 | 57.3 pairs/s`.

    >>> format_step_line({"step": 3, "pairs_per_s": 0.4234})
    'step 3 | 0.423 pairs/s'
    """
    parts = [f"step {record['step']}"]
    for key, label, fmt in [
        ("loss", "loss", ".4f"),
        ("accuracy", "acc", ".3f"),
        ("margin", "margin", ".3f"),
        ("lr", "lr", ".1e"),
        ("grad_norm", "grad", ".3f"),
        ("eval_loss", "eval_loss", ".4f"),
        ("eval_accuracy", "eval_acc", ".3f"),
    ]:
        if key in record:
            parts.append(f"{label} {record[key]:{fmt}}")
    if "pairs_per_s" in record:  # 3 significant digits: a CPU run's 0.42 pairs/s must not read as "0"
        rate = record["pairs_per_s"]
        digits = 0 if rate >= 100 else 1 if rate >= 10 else 2 if rate >= 1 else 3
        parts.append(f"{rate:.{digits}f} pairs/s" if rate >= 0.01 or rate == 0 else f"{rate:.2e} pairs/s")
    return " | ".join(parts)


# --- diagnostics ------------------------------------------------------------------------------------
DEFAULT_BINS = 10


# --- calibration ------------------------------------------------------------------------------------
@dataclass
class ReliabilityBin:
    lower: float  # confidence interval (lower, upper]
    upper: float
    count: int
    mean_confidence: float | None  # None for an empty bin
    accuracy: float | None


@dataclass
class Calibration:
    ece: float | None  # None when there are no pairs
    bins: list[ReliabilityBin]

    def to_dict(self) -> dict:
        return {
            "ece": self.ece,
            "num_bins": len(self.bins),
            "definition": "confidence = max(p, 1 - p), correct = (p > 0.5), p = sigmoid(r_chosen - r_rejected); "
            "equal-width bins over [0.5, 1]; ECE = sum_k n_k / N * |accuracy_k - mean_confidence_k|",
            "bins": [asdict(b) for b in self.bins],
        }


def preference_probability(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """p = σ(r_c − r_r): the Bradley–Terry probability that chosen wins. (B,) float64."""
    return torch.sigmoid(r_chosen.detach().double().cpu() - r_rejected.detach().double().cpu())  # (B,)


def calibration(p_chosen: torch.Tensor, num_bins: int = DEFAULT_BINS) -> Calibration:
    """Expected calibration error and reliability table of the probabilities `p_chosen` (B,).

    Two pairs at p = 0.85 (right, confidence 0.85) and p = 0.35 (wrong, confidence 0.65), 5 bins:

    >>> c = calibration(torch.tensor([0.85, 0.35]), num_bins=5)
    >>> round(c.ece, 4)   # (1/2)·|1 − 0.85| + (1/2)·|0 − 0.65|
    0.4
    >>> [(b.lower, b.upper, b.count) for b in c.bins if b.count]
    [(0.6, 0.7, 1), (0.8, 0.9, 1)]
    """
    if num_bins < 1:
        raise ValueError("num_bins must be >= 1")
    p = p_chosen.detach().double().cpu()  # (B,)
    confidence = torch.maximum(p, 1 - p)  # (B,) in [0.5, 1]
    correct = (p > 0.5).double()  # (B,)
    edges = torch.linspace(0.5, 1.0, num_bins + 1, dtype=torch.float64)  # (K+1,)
    # bucketize(right=False) gives i with edges[i-1] < x <= edges[i]: bins closed on the right;
    # confidence 0.5 (i = 0) joins the first bin
    index = (torch.bucketize(confidence, edges) - 1).clamp(0, num_bins - 1)  # (B,)
    bins, ece, n = [], 0.0, p.numel()
    for k in range(num_bins):
        in_bin = index == k  # (B,)
        count = int(in_bin.sum())
        mean_conf = confidence[in_bin].mean().item() if count else None
        acc = correct[in_bin].mean().item() if count else None
        if count:
            ece += count / n * abs(acc - mean_conf)
        bins.append(ReliabilityBin(round(edges[k].item(), 10), round(edges[k + 1].item(), 10), count, mean_conf, acc))
    return Calibration(ece if n else None, bins)


# --- length bias -------------------------------------------------------------------------------------
def pearson(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Pearson correlation of two (M,) series, or None if undefined (M < 2 or a constant series).

    >>> round(pearson(torch.tensor([1.0, 2, 3, 4]), torch.tensor([2.0, 4, 5, 9])), 6)   # 11 / √130
    0.964764
    """
    x, y = x.detach().double().cpu().flatten(), y.detach().double().cpu().flatten()  # (M,), (M,)
    if x.numel() < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()  # (M,), (M,)
    sxx, syy = (dx * dx).sum().item(), (dy * dy).sum().item()
    if sxx == 0 or syy == 0:  # a constant series has no correlation (0/0), not r = 0
        return None
    r = (dx * dy).sum().item() / math.sqrt(sxx * syy)
    return max(-1.0, min(1.0, r))  # rounding can step just outside [-1, 1]


# --- subsets -----------------------------------------------------------------------------------------
def subset_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor, subsets: list) -> dict[str, tuple[int, float]]:
    """{subset: (pairs, accuracy)} in sorted order; accuracy is r_c > r_r (ties wrong).

    >>> subset_accuracy(torch.tensor([1.0, 0, 3]), torch.tensor([0.0, 1, 2]), ["a", "a", "b"])
    {'a': (2, 0.5), 'b': (1, 1.0)}
    """
    if len(subsets) != r_chosen.numel():
        raise ValueError(f"{len(subsets)} subset labels for {r_chosen.numel()} pairs")
    correct = (r_chosen > r_rejected).tolist()
    counts: dict[str, list[int]] = {}
    for name, ok in zip(subsets, correct):
        tally = counts.setdefault(str(name), [0, 0])
        tally[0] += 1
        tally[1] += int(ok)
    return {name: (n, right / n) for name, (n, right) in sorted(counts.items())}


# --- all of them -------------------------------------------------------------------------------------
@dataclass
class Diagnostics:
    calibration: Calibration
    length_corr: float | None
    subsets: dict[str, tuple[int, float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float | None]:
        """Flat metrics for summaries and metrics.jsonl: ece, length_corr, accuracy/<subset>."""
        out = {"ece": self.calibration.ece, "length_corr": self.length_corr}
        out.update({f"accuracy/{name}": acc for name, (_, acc) in self.subsets.items()})
        return out

    def format(self) -> str:
        """Text for the terminal: ECE + reliability table, length correlation, subset accuracies."""
        c = self.calibration
        ece = "n/a" if c.ece is None else f"{c.ece:.4f}"
        lines = [
            f"calibration: ECE {ece} over {len(c.bins)} bins of confidence max(p, 1 - p), "
            "p = sigmoid(r_chosen - r_rejected)",
            f"  {'confidence':>13}  {'pairs':>6}  {'mean conf':>9}  {'accuracy':>8}",
        ]
        for b in c.bins:
            conf = "-" if b.mean_confidence is None else f"{b.mean_confidence:.4f}"
            acc = "-" if b.accuracy is None else f"{b.accuracy:.4f}"
            lines.append(f"  {f'({b.lower:.2f}, {b.upper:.2f}]':>13}  {b.count:>6}  {conf:>9}  {acc:>8}")
        corr = "undefined (constant lengths or rewards)" if self.length_corr is None else f"{self.length_corr:+.4f}"
        lines.append(f"length bias: Pearson r(reward, length in tokens) over chosen and rejected = {corr}")
        if self.subsets:
            width = max(len(name) for name in self.subsets)
            lines.append("accuracy by subset:")
            lines += [f"  {name:<{width}}  {n:>6} pairs  accuracy {acc:.4f}" for name, (n, acc) in self.subsets.items()]
        return "\n".join(lines)


def diagnose(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    subsets: list | None = None,
    num_bins: int = DEFAULT_BINS,
) -> Diagnostics:
    """Every diagnostic for B pairs. All tensors (B,); lengths are token counts."""
    rewards = torch.cat([r_chosen.detach().cpu(), r_rejected.detach().cpu()])  # (2B,)
    lengths = torch.cat([chosen_lengths.detach().cpu(), rejected_lengths.detach().cpu()])  # (2B,)
    return Diagnostics(
        calibration=calibration(preference_probability(r_chosen, r_rejected), num_bins),
        length_corr=pearson(rewards, lengths),
        subsets=subset_accuracy(r_chosen.cpu(), r_rejected.cpu(), subsets) if subsets is not None else {},
    )
