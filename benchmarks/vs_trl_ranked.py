"""Rankings: TRL's RewardTrainer on the all-pairs expansion vs our grouped rankings, in one run.

    python benchmarks/vs_trl.py --mode ranked                        # tiny model (this file's main)
    python benchmarks/vs_trl_ranked.py --model small --num_prompts 600 --max_steps 30
    python benchmarks/vs_trl_ranked.py --model small --pretrain_steps 338 --num_prompts 3000 --max_steps 300

Data: `synthetic-ranked-long` (reward/presets/synthetic.py `generate_long_rankings`): K = 4 totally
ordered responses behind a multi-turn history, 10 % of the prompts held out whole. A TRL user must
expand each ranking into its C(4, 2) = 6 pairs; TRL then runs 12 sequences per prompt, the prompt in
each. Ours trains the rankings grouped (--rankings grouped, the default): one packed segment
[P | R1' | R2' | R3' | R4'] per prompt, every comparison weighted alike, so it optimises the same
all-pairs Bradley–Terry loss over the same comparisons (tests/test_rankings_grouped.py proves the
loss and gradient equal the expansion's). Same init, same comparisons per optimizer step (TRL: B
pairs x accumulation = 6 x our prompts per step; equal micro-batches, so its mean of means is the
per-comparison mean), same steps, learning rate and schedule. The order differs (prompts vs pairs
shuffled): both are valid epochs of the same data.

Reported per system, timed over the training call alone: comparisons/s (min / median / max over
repeats), tokens computed per comparison (non-pad tokens the model runs; positions run with padding
beside it), peak memory of training alone (benchmarks/measure.py: the RSS peak reset right before
the training call and read right after it; CUDA: the allocator's peak) and what training added over
the start, and held-out all-pairs accuracy, best-of-4 accuracy and Kendall's tau, evaluated by
one function on the same held-out comparisons. The fp32 matmul rate is measured before and after the
runs; a spread over 20 % there, or over 15 % between repeats, prints "machine busy: ratios unreliable".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inits import build_init, load_rows, pretrain, start_worker  # noqa: E402
from benchmarks.measure import TrainingMemory, busy_warning, matmul_flops, summarise  # noqa: E402
from benchmarks.vs_trl import RESULTS  # noqa: E402

DATA = "synthetic-ranked-long"
K = 4
COMPARISONS_PER_PROMPT = K * (K - 1) // 2


def worker(args: argparse.Namespace) -> dict:
    """Train one system in this process; return its measurements."""
    from benchmarks import trl_parity as harness
    from reward.batching import BatchPlan, optimizer_steps
    from reward.collate import PairwiseCollator
    from reward.config import pick
    from reward.fast.packed_forward import forward_counts
    from reward.metrics import MetricsWriter
    from reward.model import count_parameters
    from reward.ranked.rows import group_rankings
    from reward.run.parts import batch_order, evaluation, train_with, training_collator

    device, precision, tokenizer, model = start_worker(args)
    data = load_rows(DATA, args.num_prompts, args.seed)
    comparisons_per_step = args.prompts_per_step * COMPARISONS_PER_PROMPT
    if comparisons_per_step % args.trl_batch_size:
        sys.exit(f"--trl_batch_size must divide the {comparisons_per_step} comparisons of a step")
    common = dict(
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
        bf16=args.bf16,
        use_cpu=device.type == "cpu",
        output_dir=str(args.workdir / args.system),
    )
    pairs = harness.tokenize(data.train, tokenizer, harness.our_config(), keep=data.carried)  # the expansion
    if args.system == "trl":  # as it ships: plain padded pairs, shuffled, mean of micro-batch means
        cfg = harness.our_config(
            per_device_train_batch_size=args.trl_batch_size,
            gradient_accumulation_steps=comparisons_per_step // args.trl_batch_size,
            **common,
        )
        text_pairs = data.train.select_columns(["prompt", "chosen", "rejected"])
    else:  # our defaults: prompts grouped by length, one packed segment each
        cfg = harness.our_config(
            per_device_train_batch_size=args.prompts_per_step,
            group_by_length=True,
            padding_free=True,
            share_prefix=True,
            **common,
        )
        rows = group_rankings(pairs)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    memory = TrainingMemory(device)  # reset right before the training call, read right after it
    if args.system == "trl":
        run, _ = harness.run_trl(model, tokenizer, text_pairs, cfg, cfg.output_dir, on_start=memory.start)
        trained, seconds = run.model, run.seconds
        collate, ds = PairwiseCollator(tokenizer.pad_token_id), pairs
    else:
        trained = model
        collate, ds = training_collator(cfg, tokenizer.pad_token_id, model, grouped=True), rows
        writer = MetricsWriter(Path(cfg.output_dir) / "m.jsonl")
        memory.start()
        started = time.perf_counter()
        train_with(cfg, trained, rows, collate=collate, precision=precision, writer=writer)
        seconds = time.perf_counter() - started
    peak = memory.peak_mb()  # training's alone: reset before it, read before the evaluation below
    forwards = forward_counts(trained)  # which path our micro-batches took (TRL: none of ours)

    # token accounting, replaying this system's batches: non-pad tokens computed, positions run
    grouped = args.system != "trl"
    steps = optimizer_steps(ds, collate, batch_order(cfg, ds, grouped), pick(BatchPlan, cfg))
    computed = positions = comparisons = 0
    for _ in range(args.max_steps):
        for mb in next(steps)[1]:
            if args.system == "trl":
                comparisons += mb.margin.numel()
                computed += mb.sequence_tokens
                positions += mb.input_ids.numel()
            else:
                comparisons += len(mb.comparisons.better)
                computed += mb.num_tokens
                positions += mb.rows.input_ids.numel() if mb.rows is not None else mb.num_tokens
    eval_pairs = harness.tokenize(data.test, tokenizer, cfg, keep=data.carried)
    held = evaluation(cfg, precision, trained, tokenizer.pad_token_id)(trained.to(device), eval_pairs)
    return {
        "system": args.system,
        "seconds": seconds,
        "comparisons": comparisons,
        "comparisons_per_s": comparisons / seconds,
        "tokens_computed_per_comparison": computed / comparisons,
        "positions_per_comparison": positions / comparisons,
        "peak_memory_mb": peak,
        "memory_rise_mb": peak - memory.start_mb,
        "packed_forwards": forwards["packed"],
        "padded_fallbacks": forwards["padded"],
        "eval_accuracy": held["accuracy"],
        "eval_best_of_k_accuracy": held["best_of_k_accuracy"],
        "eval_kendall_tau": held["kendall_tau"],
        "eval_comparisons": held["pairs"],
        "eval_prompts": held["ranked_prompts"],
        "params": count_parameters(model),
    }


def run_worker(args: argparse.Namespace, system: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", system, "--init", str(args.init), *args.passthrough]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{system} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


TIMED = ("seconds", "comparisons_per_s", "peak_memory_mb")


def table(trl: dict, ours: dict) -> str:
    rows = [
        ("comparisons/s (median)", "comparisons_per_s", "{:.1f}"),
        ("non-pad tokens computed per comparison", "tokens_computed_per_comparison", "{:.1f}"),
        ("positions run per comparison (with padding)", "positions_per_comparison", "{:.1f}"),
        ("peak memory of training (MB)", "peak_memory_mb", "{:.0f}"),
        ("memory training added (MB)", "memory_rise_mb", "{:.0f}"),
        ("held-out all-pairs accuracy", "eval_accuracy", "{:.3f}"),
        ("held-out best-of-4 accuracy", "eval_best_of_k_accuracy", "{:.3f}"),
        ("held-out Kendall tau", "eval_kendall_tau", "{:.3f}"),
    ]
    lines = ["| metric | TRL (all-pairs expansion) | ours (grouped) | ours / TRL |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        ratio = ours[key] / trl[key] if trl[key] else float("nan")
        lines.append(f"| {label} | {fmt.format(trl[key])} | {fmt.format(ours[key])} | {ratio:.2f} |")
    spread = " / ".join(
        f"{s['comparisons_per_s_range'][0]:.1f}–{s['comparisons_per_s_range'][1]:.1f}" for s in (trl, ours)
    )
    lines.append(f"| comparisons/s, min–max over repeats (TRL / ours) | {spread} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny | small | smollm2-135m | a model folder or Hub id")
    p.add_argument("--num_prompts", type=int, default=600, help="rankings generated (10 %% held out)")
    p.add_argument("--prompts_per_step", type=int, default=4, help="ours: prompts per step (TRL: 6 x as many pairs)")
    p.add_argument("--trl_batch_size", type=int, default=8, help="TRL's pairs per micro-batch (accumulated to a step)")
    p.add_argument("--max_steps", type=int, default=30)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=2, help="runs per system, alternating")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain_steps", type=int, default=0, help="warm start on the short pair task (vs_trl.py's)")
    p.add_argument("--results_dir", type=Path, default=RESULTS)
    p.add_argument("--worker", choices=["trl", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--init", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=RESULTS / "work-ranked", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.system = args.worker
        print(json.dumps(worker(args)))
        return
    args.passthrough = argv
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.init = args.workdir / f"init-{args.model.replace('/', '_')}"
    build_init(args.model, args.init, args.seed)
    warm = ""
    if args.pretrain_steps > 0:
        out = args.workdir / f"pretrained-{args.model.replace('/', '_')}"
        warm = f", pretrained {args.pretrain_steps} steps ({pretrain(args.init, args.pretrain_steps, args.seed, out)})"
        args.init = out
    flops_before = matmul_flops(args.threads)
    runs: dict[str, list[dict]] = {"trl": [], "ours": []}
    for repeat in range(args.repeats):
        for system in ("trl", "ours") if repeat % 2 == 0 else ("ours", "trl"):
            runs[system].append(run_worker(args, system))
            print(f"{system} run {repeat + 1}: {runs[system][-1]['comparisons_per_s']:.1f} comparisons/s", flush=True)
    flops_after = matmul_flops(args.threads)
    trl, ours = summarise(runs["trl"], TIMED), summarise(runs["ours"], TIMED)
    import transformers
    import trl as trl_lib

    device = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU"
    header = (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, {device} | "
        f"torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl_lib.__version__} | matmul {flops_before / 1e9:.1f} "
        f"GFLOP/s before, {flops_after / 1e9:.1f} after\ncommand: python benchmarks/vs_trl_ranked.py {' '.join(argv)}\n"
        f"model {args.model} ({ours['params'] / 1e6:.1f}M params{warm}), data {DATA} ({args.num_prompts} prompts, "
        f"K = {K}), {args.max_steps} steps x {args.prompts_per_step * COMPARISONS_PER_PROMPT} comparisons "
        f"(ours {args.prompts_per_step} prompts; TRL {args.trl_batch_size} pairs x "
        f"{args.prompts_per_step * COMPARISONS_PER_PROMPT // args.trl_batch_size} accumulation), "
        f"{args.repeats} runs per system; held-out: {ours['eval_prompts']} prompts, "
        f"{ours['eval_comparisons']} comparisons"
    )
    warning = busy_warning(flops_before, flops_after, runs, "comparisons_per_s")
    print("\n" + header + "\n\n" + table(trl, ours) + (f"\n\n**{warning}**" if warning else ""))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-ranked-{args.model.replace('/', '_')}.json"
    out.write_text(json.dumps({"header": header, "warning": warning, "trl": trl, "ours": ours, "runs": runs}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
