"""Held-out evaluation and scoring, packed vs padded: the same numbers, how much faster.

    python benchmarks/eval_speed.py                        # ~20M model, 300 long-prompt held-out pairs
    python benchmarks/eval_speed.py --model tiny --num_pairs 600 --repeats 1

Both paths run in this one process on the same model and pairs, alternating, `--repeats` times:
training's evaluation (reward/evaluate.py `evaluate`, `--eval_padding_free` true vs false) and
score.py's pair scoring (reward/eval/scoring.py `RewardScorer.score_pairs`, `--padding_free`). The
padded path sorts pairs by length and pads each batch; the packed one lays each batch out as one
row, a pair's prompt computed once. Reported: seconds (median, min–max), the speed-up, the largest
difference over every metric, and the tokens each path computes per pair.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inits import build_init, load_rows  # noqa: E402
from benchmarks.measure import busy_warning, matmul_flops  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def timed(fn, repeats: int) -> tuple[list[float], object]:
    seconds, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - started)
    return seconds, out


def max_metric_difference(a: dict, b: dict) -> float:
    return max(abs(a[k] - b[k]) for k in a if isinstance(a[k], float) and isinstance(b.get(k), float))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", help="tiny | small | smollm2-135m | a model folder")
    p.add_argument("--num_pairs", type=int, default=3000, help="generated pairs; 10 %% are the held-out set")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=RESULTS / "work-eval")
    p.add_argument("--results_dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    from benchmarks import trl_parity as harness
    from reward.collate import PairwiseCollator
    from reward.eval.scoring import RewardScorer
    from reward.evaluate import evaluate
    from reward.fast.packing import PackingCollator, pack_pairs
    from reward.loss import PairObjective
    from reward.model import load_model, resolve_precision
    from reward.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    init = args.workdir / f"init-{args.model.replace('/', '_')}"
    build_init(args.model, init, args.seed)
    tokenizer = load_tokenizer(init)
    model = load_model(init, tokenizer, seed=args.seed).eval()
    data = load_rows("synthetic-long", args.num_pairs, args.seed)
    cfg = harness.our_config(use_cpu=True, seed=args.seed)
    pairs = harness.tokenize(data.test, tokenizer, cfg)
    rows = [dict(r) for r in data.test]
    precision = resolve_precision(False, False, torch.device("cpu"))
    pad = tokenizer.pad_token_id
    padded_scorer = RewardScorer(model, tokenizer, device="cpu", show_progress=False, padding_free=False)
    packed_scorer = RewardScorer(model, tokenizer, device="cpu", show_progress=False)
    b, pair_loss = cfg.per_device_eval_batch_size, PairObjective()
    runs = {
        "evaluate padded": lambda: evaluate(model, pairs, PairwiseCollator(pad), pair_loss, b, precision),
        "evaluate packed": lambda: evaluate(model, pairs, PackingCollator(pad, "all", True), pair_loss, b, precision),
        "score.py padded": lambda: padded_scorer.score_pairs(rows).metrics,
        "score.py packed": lambda: packed_scorer.score_pairs(rows).metrics,
    }
    for fn in runs.values():  # warm up (and the one-time packing self-check) outside the timings
        fn()
    flops_before = matmul_flops(args.threads)
    seconds = {name: [] for name in runs}
    metrics = {}
    for _ in range(args.repeats):  # alternate, so drift in machine load hits both paths
        for name, fn in runs.items():
            took, metrics[name] = timed(fn, 1)
            seconds[name] += took
    flops_after = matmul_flops(args.threads)

    by_length = sorted(range(len(pairs)), key=lambda i: len(pairs[i]["chosen_ids"]) + len(pairs[i]["rejected_ids"]))
    padded_positions = packed_tokens = 0
    for start in range(0, len(pairs), b):
        batch = [pairs[i] for i in by_length[start : start + b]]
        padded_positions += PairwiseCollator(pad)(batch).input_ids.numel()
        packed_tokens += pack_pairs(batch, pad).num_tokens
    n = len(pairs)
    table = ["| path | padded s (median, min–max) | packed s (median, min–max) | speed-up | max metric diff |"]
    table.append("|---|---|---|---|---|")
    result = {"pairs": n, "model": args.model, "threads": args.threads, "seconds": seconds}
    for what in ("evaluate", "score.py"):
        slow, fast = seconds[f"{what} padded"], seconds[f"{what} packed"]
        diff = max_metric_difference(metrics[f"{what} padded"], metrics[f"{what} packed"])
        speedup = statistics.median(slow) / statistics.median(fast)
        result[what] = {"speedup": speedup, "max_metric_difference": diff}
        table.append(
            f"| {what} | {statistics.median(slow):.2f} ({min(slow):.2f}–{max(slow):.2f}) | "
            f"{statistics.median(fast):.2f} ({min(fast):.2f}–{max(fast):.2f}) | {speedup:.2f}x | {diff:.1e} |"
        )
    timings = {name: [{"runs_per_s": 1 / s} for s in values] for name, values in seconds.items()}
    warning = busy_warning(flops_before, flops_after, timings, "runs_per_s")
    result |= {"padded_positions_per_pair": padded_positions / n, "packed_tokens_per_pair": packed_tokens / n}
    result |= {"warning": warning, "matmul_flops": [flops_before, flops_after]}
    header = (
        f"{n} held-out pairs of synthetic-long, model {args.model}, {args.threads} threads, CPU | matmul "
        f"{flops_before / 1e9:.0f} GFLOP/s before, {flops_after / 1e9:.0f} after | positions run per pair: padded "
        f"{padded_positions / n:.1f}, packed {packed_tokens / n:.1f}\n"
        f"command: python benchmarks/eval_speed.py {' '.join(sys.argv[1:] if argv is None else argv)}"
    )
    print(header + "\n\n" + "\n".join(table) + (f"\n\n**{warning}**" if warning else ""))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-eval-{args.model.replace('/', '_')}.json"
    out.write_text(json.dumps({"header": header, **result}, indent=2))
    print(f"results: {out}")
    return result


if __name__ == "__main__":
    main()
