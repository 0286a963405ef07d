"""TRL's RewardTrainer vs. our loop: same model, data, hyper-parameters and machine, in one run.

    python benchmarks/vs_trl.py                                   # tiny model, long-prompt data, all modes
    python benchmarks/vs_trl.py --model small --data synthetic-long --mode fast --max_steps 60
    python benchmarks/vs_trl.py --model smollm2-135m --data synthetic-long --bf16   # on a GPU: unchanged
    python benchmarks/vs_trl.py --model small --pretrain_steps 338 --mode fast --num_pairs 3000 --max_steps 300
                                # warm start, then train both to the end: compare held-out accuracy
    python benchmarks/vs_trl.py --mode ranked --model small   # rankings (benchmarks/vs_trl_ranked.py)

Each measured run is a fresh process (so peak memory is that system's alone), and the systems
alternate (TRL, ours..., then ours..., TRL, ...) so drift in machine load hits both. Both start from
one saved random init and are evaluated by the same function on the same held-out pairs. TRL runs
as it ships (plain padded batches in shuffled order), once per repeat; each mode of ours is
compared with those runs:

- parity: our loop on TRL's batching (the same pairs in the same micro-batches, plain padding),
  fp32 — the per-step losses must agree (max difference reported); the speed ratio is the loop's
  overhead.
- same-batches: TRL's micro-batches, run padding-free with the shared prompt prefix: the speed of
  the exact token savings alone, with per-step losses still comparable (max difference reported)
  and so the same held-out accuracy: speed not bought with quality.
- fast: our training defaults (length grouping + padding-free packing + shared prefix). Grouping
  changes which pairs share a micro-batch (a different, equally valid order), so losses are not
  step-for-step comparable; in the packed path it saves nothing (one row has no padding).

Reported per system (benchmarks/measure.py): pairs/s (median, min–max over repeats), real (non-pad)
tokens/s, padded share of the tokens computed, peak memory of the training call alone (RSS peak
reset before it; CUDA: the allocator's peak) and what training added, held-out loss/accuracy (one
shared evaluation, packed where the model allows), utilisation over the fp32 matmul rate measured
before and after the runs, in model FLOPs (linear layers 6N per token + causal attention scores):
effective (every sequence whole, prompt counted twice), true (what ran: the prompt once, padding
included) and true counting the linear layers only (a lower bound), and how many of our
micro-batches the forward ran packed; then ours/TRL ratios and, when the matmul rate or the repeats
moved, "machine busy: ratios unreliable".
Output: a markdown table on stdout, JSON under benchmarks/results/, and a PNG of both loss curves (plot extra).
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

RESULTS = ROOT / "benchmarks" / "results"

from benchmarks.inits import build_init, load_rows, pretrain, start_worker  # noqa: E402
from benchmarks.measure import (  # noqa: E402
    TrainingMemory,
    attention_flops_per_score,
    attention_scores,
    busy_warning,
    linear_flops_per_token,
    matmul_flops,
    real_attention_scores,
    summarise,
)

# Our options per mode (TRL always runs as it ships, with parity mode's hyper-parameters).
OUR_SPEED_OPTIONS = {
    "parity": {},  # TRL's batching: shuffled order, plain padding
    "same-batches": {"padding_free": True, "share_prefix": True},  # TRL's micro-batches, packed
    "fast": {"group_by_length": True, "padding_free": True, "share_prefix": True},  # our training defaults
}
SAME_BATCHES = ("parity", "same-batches")  # modes whose per-step losses are comparable with TRL's


def worker(args: argparse.Namespace) -> dict:
    """Train one system in this process and return its measurements."""
    from benchmarks import trl_parity as harness
    from reward.batching import BatchPlan, optimizer_steps
    from reward.config import pick
    from reward.fast.packed_forward import forward_counts
    from reward.fast.packing import PackedBatch
    from reward.model import count_parameters
    from reward.run.parts import batch_order, training_collator

    device, precision, tokenizer, model = start_worker(args)
    data = load_rows(args.data, args.num_pairs, args.seed)
    cfg = harness.our_config(
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        max_steps=args.max_steps,
        learning_rate=args.learning_rate,
        seed=args.seed,
        bf16=args.bf16,
        use_cpu=device.type == "cpu",
        output_dir=str(args.workdir / args.system),
        **(OUR_SPEED_OPTIONS[args.mode] if args.system == "ours" else {}),
    )
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    memory = TrainingMemory(device)  # reset right before the training call, read right after it
    if args.system == "trl":
        run, _ = harness.run_trl(model, tokenizer, data.train, cfg, cfg.output_dir, on_start=memory.start)
    else:
        run = harness.run_ours(model, tokenizer, data.train, cfg, cfg.output_dir, memory.start, precision)
    peak = memory.peak_mb()
    forwards = forward_counts(run.model)  # which path our micro-batches took (TRL: none of ours)

    # Token accounting, replaying the exact batches of this system's run:
    #   real     = tokens of the 2B sequences (prompt counted twice): the same for both systems
    #   computed = non-pad tokens the model ran (shared prefix: P + C' + R' per pair)
    #   slots    = rows x width actually run, padding included
    #   scores   = attention's query-key scores as run (real_scores: each sequence whole, unpadded)
    train_ds = harness.tokenize(data.train, tokenizer, cfg)
    collate = training_collator(cfg, tokenizer.pad_token_id)
    steps = optimizer_steps(train_ds, collate, batch_order(cfg, train_ds), pick(BatchPlan, cfg))
    real = computed = slots = scores = real_scores = pairs = micro_batches = 0
    for _ in range(args.max_steps):
        for mb in next(steps)[1]:
            pairs, micro_batches = pairs + mb.margin.numel(), micro_batches + 1
            real += mb.sequence_tokens
            scores, real_scores = scores + attention_scores(mb), real_scores + real_attention_scores(mb)
            if isinstance(mb, PackedBatch):
                computed, slots = computed + mb.num_tokens, slots + mb.num_positions
            else:
                computed, slots = computed + mb.sequence_tokens, slots + mb.input_ids.numel()
    started = time.perf_counter()
    held_out = held_out_metrics(run.model.to(device), tokenizer, data.test, cfg, precision)
    flops, per_score = linear_flops_per_token(model), attention_flops_per_score(model)
    return {
        "system": args.system,
        "mode": args.mode,
        "seconds": run.seconds,
        "pairs": pairs,
        "micro_batches": micro_batches,
        "packed_forwards": forwards["packed"],
        "padded_fallbacks": forwards["padded"],
        "pairs_per_s": pairs / run.seconds,
        "real_tokens_per_s": real / run.seconds,
        "padded_share": 1 - computed / slots,
        "tokens_computed_per_pair": computed / pairs,
        "slots_per_pair": slots / pairs,
        "real_tokens_per_pair": real / pairs,
        "peak_memory_mb": peak,
        "memory_rise_mb": peak - memory.start_mb,
        "memory_peak_reset": memory.reset,
        # model FLOPs (linear layers + attention scores) per second of training
        "effective_flops_per_s": (flops * real + per_score * real_scores) / run.seconds,  # every sequence whole
        "true_flops_per_s": (flops * slots + per_score * scores) / run.seconds,  # what ran, padding included
        "true_linear_flops_per_s": flops * slots / run.seconds,  # linear layers only: a lower bound
        "eval_loss": held_out["loss"],
        "eval_accuracy": held_out["accuracy"],
        "eval_seconds": time.perf_counter() - started,
        "params": count_parameters(model),
        "linear_flops_per_token": flops,
        "attention_flops_per_score": per_score,
        "attention_scores": scores,
        "real_attention_scores": real_scores,
        "real_tokens": real,
        "losses": [s["loss"] for s in run.steps],
    }


def held_out_metrics(model, tokenizer, rows, cfg, precision) -> dict:
    """Loss/accuracy on the held-out pairs: one function, the same batches, for every system (packed,
    the prompt once, where the model allows it: reward/run/parts.py `evaluation`)."""
    from benchmarks import trl_parity as harness
    from reward.run.parts import evaluation

    pairs = harness.tokenize(rows, tokenizer, cfg)
    return evaluation(cfg, precision, model, tokenizer.pad_token_id)(model, pairs)


def before_training(args: argparse.Namespace) -> dict:
    """Held-out loss/accuracy of the shared init, so a reader sees what training changed."""
    from benchmarks import trl_parity as harness

    device, precision, tokenizer, model = start_worker(args)
    cfg = harness.our_config(use_cpu=device.type == "cpu", seed=args.seed)
    data = load_rows(args.data, args.num_pairs, args.seed)
    return held_out_metrics(model, tokenizer, data.test, cfg, precision)


def run_worker(args: argparse.Namespace, system: str, mode: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        system,
        "--mode",
        mode,
        "--init",
        str(args.init),
        "--workdir",
        str(args.workdir),
    ] + args.passthrough
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{system} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


TIMED = (
    "seconds",
    "pairs_per_s",
    "real_tokens_per_s",
    "peak_memory_mb",
    "effective_flops_per_s",
    "true_flops_per_s",
    "true_linear_flops_per_s",
)


def table(mode: str, trl: dict, ours: dict, flops: float) -> str:
    rows = [
        ("pairs/s (median)", "pairs_per_s", "{:.1f}"),
        ("real tokens/s", "real_tokens_per_s", "{:.0f}"),
        ("padded share of positions run", "padded_share", "{:.1%}"),
        ("real tokens per pair (P+C + P+R)", "real_tokens_per_pair", "{:.1f}"),
        ("non-pad tokens computed per pair", "tokens_computed_per_pair", "{:.1f}"),
        ("positions run per pair (with padding)", "slots_per_pair", "{:.1f}"),
        ("peak memory of training (MB)", "peak_memory_mb", "{:.0f}"),
        ("memory training added (MB)", "memory_rise_mb", "{:.0f}"),
        ("held-out loss", "eval_loss", "{:.4f}"),
        ("held-out accuracy", "eval_accuracy", "{:.3f}"),
    ]
    lines = [f"### mode: {mode}", "", "| metric | TRL | ours | ours / TRL |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        ratio = ours[key] / trl[key] if trl[key] else float("nan")
        lines.append(f"| {label} | {fmt.format(trl[key])} | {fmt.format(ours[key])} | {ratio:.2f} |")
    for label, key in (
        ("effective utilisation (model FLOPs of the whole sequences / matmul)", "effective_flops_per_s"),
        ("true utilisation (model FLOPs of what ran / matmul)", "true_flops_per_s"),
        ("true utilisation, linear layers only (lower bound)", "true_linear_flops_per_s"),
    ):
        t, o = trl[key] / flops, ours[key] / flops
        lines.append(f"| {label} | {t:.1%} | {o:.1%} | {o / t:.2f} |")
    spread = " / ".join(f"{s['pairs_per_s_range'][0]:.1f}–{s['pairs_per_s_range'][1]:.1f}" for s in (trl, ours))
    lines.append(f"| pairs/s, min–max over repeats (TRL / ours) | {spread} | | |")
    lines.append(
        f"| our micro-batches run packed / padded | | {ours['packed_forwards']} / {ours['padded_fallbacks']} | |"
    )
    if mode in SAME_BATCHES:
        diff = max(abs(a - b) for a, b in zip(trl["losses"], ours["losses"], strict=True))
        lines.append(f"| max per-step loss difference | | {diff:.2e} | |")
    return "\n".join(lines)


def plot(results: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('(no plot: pip install -e ".[plot]")')
        return
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (mode, pair) in zip(axes[0], results.items()):
        for system in ("trl", "ours"):
            ax.plot(range(1, len(pair[system]["losses"]) + 1), pair[system]["losses"], label=system)
        ax.set(title=f"training loss ({mode})", xlabel="optimizer step", ylabel="loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    print(f"loss curves: {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny | small | smollm2-135m | a model folder or Hub id")
    p.add_argument("--data", default="synthetic-long", help="synthetic | synthetic-long | a file | a Hub dataset")
    p.add_argument(
        "--mode",
        default="all",
        choices=[*OUR_SPEED_OPTIONS, "both", "all", "ranked"],
        help="both = parity + fast; all = parity + same-batches + fast; ranked = benchmarks/vs_trl_ranked.py",
    )
    p.add_argument("--num_pairs", type=int, default=1200)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--grad_accum", type=int, default=1)
    p.add_argument("--max_steps", type=int, default=40)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=2, help="runs per system (alternating); timings are medians")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pretrain_steps",
        type=int,
        default=0,
        help="first train the init this many steps on the short generated task (batch 32, "
        "lr 1e-4) with train.py, standing in for a pretrained LM; both systems start from it",
    )
    p.add_argument("--results_dir", type=Path, default=RESULTS, help="where the JSON and PNG go")
    p.add_argument("--worker", choices=["trl", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--system", help=argparse.SUPPRESS)
    p.add_argument("--init", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / "results" / "work", help=argparse.SUPPRESS)
    args, _ = p.parse_known_args()
    if args.mode == "ranked":  # rankings: TRL on the all-pairs expansion vs grouped (its own options)
        from benchmarks.vs_trl_ranked import main as ranked

        return ranked(strip_option(sys.argv[1:], "--mode"))
    if args.worker:
        args.system = args.worker
        print(json.dumps(worker(args)))
        return

    args.passthrough = strip_option(sys.argv[1:], "--mode")
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.init = args.workdir / f"init-{args.model.replace('/', '_')}"
    build_init(args.model, args.init, args.seed)
    pretrained = ""
    if args.pretrain_steps > 0:
        out = args.workdir / f"pretrained-{args.model.replace('/', '_')}"
        line = pretrain(args.init, args.pretrain_steps, args.seed, out)
        pretrained = f", pretrained {args.pretrain_steps} steps on synthetic ({line})"
        print(f"init{pretrained}", flush=True)
        args.init = out
    before = before_training(args)
    print(f"held-out before training: loss {before['loss']:.4f}, accuracy {before['accuracy']:.3f}", flush=True)
    flops_before = matmul_flops(args.threads)
    modes = {"both": ["parity", "fast"], "all": list(OUR_SPEED_OPTIONS)}.get(args.mode, [args.mode])
    # TRL's runs do not depend on the mode: run them once per repeat and compare every mode of ours
    # with them. Alternate the order per repeat so drift in machine load hits both systems.
    runs = {"trl": [], **{mode: [] for mode in modes}}
    for repeat in range(args.repeats):
        order = ["trl", *modes] if repeat % 2 == 0 else [*modes, "trl"]
        for name in order:
            system, mode = ("trl", "parity") if name == "trl" else ("ours", name)
            runs[name].append(run_worker(args, system, mode))
            print(f"{name} run {repeat + 1}: {runs[name][-1]['pairs_per_s']:.1f} pairs/s", flush=True)
    flops_after = matmul_flops(args.threads)
    flops = max(flops_before, flops_after)  # the ceiling: the better of the two measurements
    trl_summary = summarise(runs["trl"], TIMED)
    results, report = {}, []
    for mode in modes:
        results[mode] = {"trl": trl_summary, "ours": summarise(runs[mode], TIMED)}
        report.append(table(mode, results[mode]["trl"], results[mode]["ours"], flops))
    warning = busy_warning(flops_before, flops_after, runs, "pairs_per_s")
    import transformers
    import trl

    header = (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'} | "
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__} | "
        f"matmul {flops_before / 1e9:.1f} GFLOP/s before, {flops_after / 1e9:.1f} after\n"
        f"command: python benchmarks/vs_trl.py {' '.join(sys.argv[1:])}\n"
        f"model {args.model} ({results[modes[0]]['ours']['params'] / 1e6:.1f}M params{pretrained}), "
        f"data {args.data}, "
        f"{args.max_steps} steps x {args.batch_size * args.grad_accum} pairs, "
        f"{args.repeats} runs per system\n"
        f"held-out ({before['pairs']} pairs) before training: loss {before['loss']:.4f}, "
        f"accuracy {before['accuracy']:.3f}"
    )
    print("\n" + header + "\n\n" + "\n\n".join(report) + (f"\n\n**{warning}**" if warning else ""))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.results_dir / f"{stamp}-{args.model.replace('/', '_')}-{args.data.replace('/', '_')}"
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "header": header,
                "warning": warning,
                "matmul_flops": [flops_before, flops_after],
                "before_training": before,
                "results": results,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(f"results: {out.with_suffix('.json')}")
    plot(results, out.with_suffix(".png"))


def strip_option(argv: list[str], name: str) -> list[str]:
    """argv without `name` and its value (both `--x v` and `--x=v` forms)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == name:
            skip = True
        elif not a.startswith(name + "="):
            out.append(a)
    return out


if __name__ == "__main__":
    main()
