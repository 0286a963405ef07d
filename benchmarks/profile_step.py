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

The utilisation comes from the same steps run again unprofiled, with the matmul rate read before
the first and after every one of them: on a shared machine a single reading can land in a
neighbour's burst and put the ceiling 20-40 % low (a utilisation over 100 % once). The highest
reading is the ceiling (the conservative choice: a higher ceiling, a lower utilisation), and a
reading more than 20 % below it prints "machine busy: utilisation unreliable". Also printed: the
matmuls' own rate, the linear layers' FLOPs over the profiled `aten::mm` time, as a share of that
ceiling (what a matmul of the model's shapes reaches). The JSON goes to `--results_dir`.
"""

from __future__ import annotations

import argparse
import json
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
    p.add_argument("--steps", type=int, default=10, help="steps profiled, then timed again unprofiled")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--padded", action="store_true", help="profile the plain padded batches instead")
    p.add_argument("--torch_compile", action="store_true", help="compile the decoder layers (compiles during warm-up)")
    p.add_argument("--workdir", type=Path, default=RESULTS / "work-profile")
    p.add_argument("--results_dir", type=Path, default=RESULTS, help="where the JSON goes")
    args = p.parse_args(argv)

    from benchmarks import trl_parity as harness
    from reward.batching import BatchPlan, optimizer_steps
    from reward.config import pick
    from reward.fast.compiled import compile_layers
    from reward.fast.packing import PackedBatch
    from reward.loop import OptimizerOptions, accumulate_gradients, apply_update, build_optimizer, build_scheduler
    from reward.loss import PairObjective
    from reward.model import load_model, resolve_precision
    from reward.run.parts import batch_order, training_collator
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
    collate = training_collator(cfg, tokenizer.pad_token_id, model)
    steps = optimizer_steps(ds, collate, batch_order(cfg, ds), pick(BatchPlan, cfg))
    options, precision = pick(OptimizerOptions, cfg), resolve_precision(False, False, torch.device("cpu"))
    optimizer = build_optimizer(model, options)
    scheduler = build_scheduler(optimizer, options, 100)

    def step(drawn: tuple | None = None) -> tuple[int, int]:
        """One optimizer step (the next one, or `drawn` again); returns its positions and attention scores."""
        _, micro_batches, n = drawn or next(steps)
        accumulate_gradients(model, micro_batches, PairObjective(), precision, n)
        apply_update(model, optimizer, scheduler, precision, cfg.max_grad_norm)
        positions = sum(
            mb.num_positions if isinstance(mb, PackedBatch) else mb.input_ids.numel() for mb in micro_batches
        )
        return positions, sum(attention_scores(mb) for mb in micro_batches)

    started = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup = time.perf_counter() - started
    drawn = [next(steps) for _ in range(args.steps)]  # profiled, then timed again unprofiled: the same work
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for one in drawn:
            step(one)
        wall = time.perf_counter() - started
    # self CPU time per op: each microsecond counted once, in the op that spent it
    times: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        times[bucket(event.key)] += event.self_cpu_time_total / 1e6
    ops = sum(times.values())
    times["Python, collator, dispatch (not in any op)"] = max(wall - ops, 0.0)
    # profiling inflates the wall time: measure the same steps unprofiled for the utilisation, the
    # matmul rate read around each step (the ceiling: the highest reading)
    readings, plain, positions, scores = [matmul_flops(args.threads)], 0.0, 0, 0
    for one in drawn:
        started = time.perf_counter()
        ran = step(one)
        plain += time.perf_counter() - started
        positions, scores = positions + ran[0], scores + ran[1]
        readings.append(matmul_flops(args.threads))
    ceiling = max(readings)
    low_high = f"{min(readings) / 1e9:.0f}-{ceiling / 1e9:.0f} GFLOP/s"
    warning = None
    if min(readings) < 0.8 * ceiling:  # the threshold of benchmarks/measure.py's busy_warning
        warning = f"machine busy: utilisation unreliable (matmul readings {low_high})"
    linear = linear_flops_per_token(model) * positions
    true_util = (linear + attention_flops_per_score(model) * scores) / plain / ceiling
    linear_util = linear / plain / ceiling
    mm_rate = linear / times["linear (matmul)"] if times["linear (matmul)"] else 0.0  # the matmuls' own rate
    lines = [
        f"model {args.model}, batch {args.batch_size}, {'padded' if args.padded else 'packed (fast mode)'}, fp32, "
        f"{'layers compiled, ' if args.torch_compile else ''}{args.threads} threads | {args.warmup} warm-up steps "
        f"{warmup:.1f} s | {args.steps} profiled steps: {wall:.2f} s ({plain:.2f} s unprofiled) | "
        f"matmul {low_high} over {len(readings)} readings (the ceiling: the highest) | "
        f"true utilisation (model FLOPs of what ran, unprofiled): "
        f"{true_util:.1%} ({linear_util:.1%} linear layers only) | the linear layers' matmuls ran at "
        f"{mm_rate / 1e9:.0f} GFLOP/s, {mm_rate / ceiling:.0%} of the ceiling (profiled)",
        f"command: python benchmarks/profile_step.py {' '.join(sys.argv[1:] if argv is None else argv)}",
        *([warning] if warning else []),
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
    result = {
        "header": "\n".join(lines[:2]),
        "wall": wall,
        "unprofiled": plain,
        "warmup": warmup,
        "buckets": dict(times),
        "true_utilisation": true_util,
        "true_linear_utilisation": linear_util,
        "matmul_flops": readings,
        "matmul_share_of_ceiling": mm_rate / ceiling,
        "warning": warning,
        "top": top[:30],
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    name = f"profile-{args.model.replace('/', '_')}{'-padded' if args.padded else ''}"
    name += "-compiled" if args.torch_compile else ""
    out = args.results_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"results: {out}")
    return result


if __name__ == "__main__":
    main()
