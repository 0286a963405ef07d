"""What the benchmarks measure, and how they say when the machine was not quiet.

- `TrainingMemory`: the peak memory of one phase (training), not of the whole process. On Linux the
  process's peak RSS (VmHWM) is reset right before the phase (writing 5 to /proc/self/clear_refs,
  proc(5)) and read right after, so imports, the data and the later evaluation do not set it; on
  CUDA the allocator's peak is reset and read the same way.
- `matmul_flops`: the machine's fp32 matmul rate, the ceiling the utilisation rows divide by; the
  benchmarks measure it before and after their runs.
- `busy_warning`: "machine busy: ratios unreliable" when that rate moved by more than 20 % or the
  repeats of one system spread by more than 15 %.
- `summarise`: median plus [min, max] over repeats for the timed numbers.
- `linear_flops_per_token`: the FLOPs a token costs in the model's linear layers (forward + backward
  = 6 x their weights); `attention_flops_per_score`: what one query-key score costs across the layers
  (12 x layers x heads x head_dim); `attention_scores` / `real_attention_scores`: how many scores a
  micro-batch computes as run / as if every sequence ran whole. Together the numerator of the
  utilisation rows: the model FLOPs of PaLM's accounting (Chowdhery et al. 2022, appendix B),
  with causal attention counted as the half it is.
"""

from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import torch
from torch import nn

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def rss_field_mb(name: str) -> float | None:
    """VmRSS / VmHWM of this process in MB, or None where /proc has no such field (not Linux)."""
    try:
        found = re.search(rf"^{name}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) / 1024 if found else None


class TrainingMemory:
    """start() before the phase, peak_mb() after: the phase's own peak (RSS on CPU, allocated on CUDA)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset = False  # whether the CPU peak could be reset (else it is the process's lifetime peak)
        self.start_mb = 0.0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start_mb, self.reset = torch.cuda.memory_allocated() / 2**20, True
            return
        try:
            CLEAR_REFS.write_text("5")  # peak RSS := current RSS (Linux >= 4.0)
            self.reset = True
        except OSError:
            self.reset = False
        self.start_mb = rss_field_mb("VmRSS") or 0.0

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        import resource

        return rss_field_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def matmul_flops(threads: int, size: int = 1024, repeats: int = 20) -> float:
    """The machine's measured fp32 matmul FLOP/s (best of 3 timings: the ceiling, not an average)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 * repeats / best


def busy_warning(flops_before: float, flops_after: float, runs: dict[str, list[dict]], key: str) -> str | None:
    """The machine was not quiet if its matmul rate moved > 20 % or repeats of one system spread > 15 % in `key`."""
    problems = []
    if abs(flops_after - flops_before) > 0.2 * max(flops_before, flops_after):
        problems.append(f"matmul {flops_before / 1e9:.0f} -> {flops_after / 1e9:.0f} GFLOP/s")
    for name, rs in runs.items():
        values = [r[key] for r in rs]
        if len(values) > 1 and (max(values) - min(values)) > 0.15 * max(values):
            low, high = (f"{v:.1f}" if v >= 1 else f"{v:.3g}" for v in (min(values), max(values)))
            problems.append(f"{name} repeats {low}–{high} {key.replace('_per_s', '')}/s")
    return f"machine busy: ratios unreliable ({'; '.join(problems)})" if problems else None


def summarise(runs: list[dict], timed: tuple[str, ...]) -> dict:
    """The first run, with the median of each timed key over the repeats and its [min, max] as key_range."""
    out = dict(runs[0])
    for key in timed:
        values = [r[key] for r in runs]
        out[key] = statistics.median(values)
        out[f"{key}_range"] = [min(values), max(values)]
    return out


def linear_flops_per_token(model: nn.Module) -> int:
    """6 x the weights of the model's nn.Linear layers: a token's forward (2 per weight) + backward (4).

    Embedding lookups cost no matmul and the score head is read at one token per sequence, so both
    are left out. Attention's score and value products are not weights: `attention_flops_per_score`
    counts them, and this figure alone is the utilisation's lower bound ("linear layers only")."""
    return 6 * sum(
        m.weight.numel() for name, m in model.named_modules() if isinstance(m, nn.Linear) and "score" not in name
    )


def attention_flops_per_score(model: nn.Module) -> int:
    """12 x layers x heads x head_dim: one query-key score of every layer, forward + backward.

    Forward, a score is the q.k product and the weighting of one value row (2 x head_dim FLOPs each,
    per head); backward costs twice the forward, as for the linear layers (PaLM, appendix B). The
    flash kernels' recomputation in backward is not counted: it is not model work."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 12 * c.num_hidden_layers * c.num_attention_heads * head_dim


def causal_scores(n: int) -> int:
    """Scores of a causal sequence of n tokens: query i sees keys 0..i."""
    return n * (n + 1) // 2


def attention_scores(mb) -> int:
    """Query-key scores the forward computes for a micro-batch, as it ran.

    Packed (reward/fast/segment_attention.py): per segment (row, start, P, S1', S2', ...), P + S1'
    causal, then each further Sk' against all of P and itself causally. Padded: every row causal over
    its whole width, padding included. Counted as causal: a padded batch's masked kernel may compute
    the full square, so its figure is a lower bound."""
    if hasattr(mb, "segments"):
        total = 0
        for _, _, prefix, *suffixes in mb.segments:
            total += causal_scores(prefix + (suffixes[0] if suffixes else 0))
            total += sum(length * prefix + causal_scores(length) for length in suffixes[1:])
        return total
    rows, width = mb.input_ids.shape
    return rows * causal_scores(width)


def real_attention_scores(mb) -> int:
    """Scores if every sequence of the micro-batch ran whole and unpadded (the prompt once per side)."""
    if hasattr(mb, "chosen_ids"):
        lengths = [len(ids) for ids in mb.chosen_ids + mb.rejected_ids]
    else:
        lengths = mb.attention_mask.sum(dim=1).tolist()
    return sum(causal_scores(int(n)) for n in lengths)
