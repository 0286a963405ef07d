"""Where the time of one packed training step goes (torch.profiler), on the ~20M model.

    python benchmarks/profile_step.py                         # small model, long-prompt data, fast mode, fp32
    python benchmarks/profile_step.py --model tiny --steps 3 --padded
    python benchmarks/profile_step.py --torch_compile          # the layers compiled (reward/fast/compiled.py)

Runs our loop's own pieces (reward/loop.py `accumulate_gradients` + `apply_update`) for `--warmup`
steps, then profiles `--steps` more and sorts every aten op into a bucket: the linear layers
(matmuls), attention (the per-segment scaled_dot_product_attention calls and their backward), norms,
the optimizer (AdamW and clipping), the other element-wise work, and what no op accounts for
(Python, the collator, dispatch). Prints the table and the true utilisation of the steps: the model
FLOPs of what ran (linear layers 6N per position, causal attention scores; benchmarks/measure.py) over
the measured matmul rate, and the linear layers' share alone (a lower bound).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inits import build_init, load_rows  # noqa: E402
from benchmarks.measure import (  # noqa: E402
    attention_flops_per_score,
    attention_scores,
    linear_flops_per_token,
    matmul_flops,
)

RESULTS = ROOT / "benchmarks" / "results"

# aten op name fragments -> bucket; the first match wins
BUCKETS = [
    ("attention", ("scaled_dot_product", "_flash_attention", "_efficient_attention", "attention")),
    ("linear (matmul)", ("addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("norms", ("rms_norm", "layer_norm", "aten::pow", "aten::rsqrt", "aten::mean")),
    ("optimizer + clipping", ("_foreach", "adam", "clip", "aten::norm", "linalg_vector_norm")),
    ("embedding", ("embedding",)),
    ("copies / layout", ("aten::copy_", "aten::cat", "aten::contiguous", "aten::clone", "index", "aten::to")),
]


def bucket(name: str) -> str:
    return next((b for b, keys in BUCKETS if any(k in name for k in keys)), "other element-wise")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--padded", action="store_true", help="profile the plain padded batches instead")
    p.add_argument("--torch_compile", action="store_true", help="compile the decoder layers (compiles during warm-up)")
    p.add_argument("--workdir", type=Path, default=RESULTS / "work-profile")
    args = p.parse_args(argv)

    from benchmarks import trl_parity as harness
    from reward.batching import build_collator, optimizer_steps
    from reward.fast.compiled import compile_layers
    from reward.fast.packing import PackedBatch
    from reward.loop import accumulate_gradients, apply_update, build_optimizer, build_scheduler
    from reward.model import load_model, resolve_precision
    from reward.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    init = args.workdir / f"init-{args.model}"
    build_init(args.model, init, 0)
    tokenizer = load_tokenizer(init)
    model = load_model(init, tokenizer, seed=0).train()
    if args.torch_compile:
        print(compile_layers(model))
    fast = {} if args.padded else {"group_by_length": True, "padding_free": True, "share_prefix": True}
    cfg = harness.our_config(per_device_train_batch_size=args.batch_size, max_steps=100, use_cpu=True, **fast)
    ds = harness.tokenize(load_rows("synthetic-long", 1200, 0).train, tokenizer, cfg)
    collate = build_collator(cfg, tokenizer.pad_token_id, model)
    steps = optimizer_steps(ds, collate, cfg)
    optimizer, precision = build_optimizer(model, cfg), resolve_precision(False, False, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, cfg, 100)

    def step() -> tuple[int, int]:
        """One optimizer step; returns the positions it ran and its attention scores."""
        _, micro_batches, n = next(steps)
        accumulate_gradients(model, micro_batches, precision, num_pairs_in_step=n)
        apply_update(model, optimizer, scheduler, precision, cfg.max_grad_norm)
        positions = sum(
            mb.num_positions if isinstance(mb, PackedBatch) else mb["input_ids"].numel() for mb in micro_batches
        )
        return positions, sum(attention_scores(mb) for mb in micro_batches)

    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup = time.perf_counter() - started
    ceiling = matmul_flops(args.threads)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = time.perf_counter() - started
    # self CPU time per op: each microsecond counted once, in the op that spent it
    times: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        times[bucket(event.key)] += event.self_cpu_time_total / 1e6
    ops = sum(times.values())
    times["Python, collator, dispatch (not in any op)"] = max(wall - ops, 0.0)
    # profiling inflates the wall time: measure the same steps unprofiled for the utilisation
    started, positions, scores = time.perf_counter(), 0, 0
    for _ in range(args.steps):
        ran = step()
        positions, scores = positions + ran[0], scores + ran[1]
    plain = time.perf_counter() - started
    linear = linear_flops_per_token(model) * positions
    true_util = (linear + attention_flops_per_score(model) * scores) / plain / ceiling
    linear_util = linear / plain / ceiling
    lines = [
        f"model {args.model}, batch {args.batch_size}, {'padded' if args.padded else 'packed (fast mode)'}, fp32, "
        f"{'layers compiled, ' if args.torch_compile else ''}{args.threads} threads | {args.warmup} warm-up steps "
        f"{warmup:.1f} s | {args.steps} profiled steps: {wall:.2f} s ({plain:.2f} s unprofiled) | "
        f"matmul {ceiling / 1e9:.0f} GFLOP/s | true utilisation (model FLOPs of what ran, unprofiled): "
        f"{true_util:.1%} ({linear_util:.1%} linear layers only)",
        f"command: python benchmarks/profile_step.py {' '.join(sys.argv[1:] if argv is None else argv)}",
        "",
        "| where | seconds | share |",
        "|---|---|---|",
    ]
    for name, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {seconds:.2f} | {seconds / wall:.1%} |")
    print("\n".join(lines))
    top = [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()]
    top.sort(key=lambda t: -t[1])
    print("\ntop ops (self CPU s, calls): " + "; ".join(f"{k} {s:.2f} ({c})" for k, s, c in top[:12]))
    return {
        "wall": wall,
        "unprofiled": plain,
        "warmup": warmup,
        "buckets": dict(times),
        "true_utilisation": true_util,
        "true_linear_utilisation": linear_util,
        "top": top[:30],
    }


if __name__ == "__main__":
    main()
