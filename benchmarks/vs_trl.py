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

Reported per system: pairs/s, real (non-pad) tokens/s, padded share of the tokens computed, peak
memory (RSS on CPU, CUDA peak on GPU), held-out loss/accuracy, model FLOP/s (6 · params · real
tokens / s) over the machine's measured fp32 matmul FLOP/s; then ours/TRL ratios. Output: a
markdown table on stdout, JSON under benchmarks/results/, and a PNG of both loss curves (plot extra).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"

# Llama shapes by name (random init: throughput does not depend on the weights).
MODELS = {
    "tiny": None,  # reward.presets.tiny.tiny_config
    "small": dict(
        hidden_size=512, intermediate_size=1408, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=8
    ),  # ~20M parameters with the tiny vocabulary
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
}


def build_init(model: str, out: Path, seed: int) -> None:
    """Save one random init (+ tokenizer) that both systems load."""
    from transformers import AutoModelForSequenceClassification

    from reward.model import configure_for_reward, load_model
    from reward.presets.tiny import build_tiny_tokenizer, tiny_config

    tokenizer = build_tiny_tokenizer()
    if model in MODELS:
        config = tiny_config(tokenizer)
        for key, value in (MODELS[model] or {}).items():
            setattr(config, key, value)
        config.head_dim = config.hidden_size // config.num_attention_heads
        torch.manual_seed(seed)
        net = AutoModelForSequenceClassification.from_config(config)
        configure_for_reward(net, tokenizer)
    else:  # a user's --model: load it as training would
        from reward.tokenizer import ensure_pad_token, load_tokenizer

        tokenizer = load_tokenizer(model)
        ensure_pad_token(tokenizer)
        net = load_model(model, tokenizer, seed=seed)
    net.save_pretrained(out)
    tokenizer.save_pretrained(out)


# The warm start behind --pretrain_steps: train.py on the short generated task (reward/presets/synthetic.py)
PRETRAIN_ARGS = [
    "--dataset_name",
    "synthetic",
    "--synthetic_num_pairs",
    "6000",
    "--per_device_train_batch_size",
    "32",
    "--learning_rate",
    "1e-4",
]


def pretrain(init: Path, steps: int, seed: int, out: Path) -> str:
    """Train the random init for `steps` on the short generated task with our train.py; return its held-out line.

    Why: reward models start from a pretrained LM, and a random-init model of this size stays at
    chance on the long-prompt task for well over a hundred steps (it has to learn the words first),
    so held-out accuracy after a benchmark-sized run says nothing. From a model that already
    knows the short task, both systems must still learn the long prompts (histories, trailing
    sentences) within the benchmark's steps. Both then start from this model, like any --model."""
    cmd = [
        sys.executable,
        "train.py",
        "--model_name_or_path",
        str(init),
        *PRETRAIN_ARGS,
        "--max_steps",
        str(steps),
        "--eval_steps",
        str(steps),
        "--seed",
        str(seed),
        "--output_dir",
        str(out),
        "--overwrite_output_dir",
        "--disable_tqdm",
        "true",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"pretraining failed:\n{proc.stderr[-4000:]}")
    return next(line for line in proc.stdout.splitlines() if line.startswith("held-out:"))


def load_rows(data: str, num_pairs: int, seed: int):
    from reward.data import load_preferences

    return load_preferences(data, eval_split_size=0.1, seed=seed, synthetic_num_pairs=num_pairs)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# Our options per mode (TRL always runs as it ships, with parity mode's hyper-parameters).
OUR_SPEED_OPTIONS = {
    "parity": {},  # TRL's batching: shuffled order, plain padding
    "same-batches": {"padding_free": True, "share_prefix": True},  # TRL's micro-batches, packed
    "fast": {"group_by_length": True, "padding_free": True, "share_prefix": True},  # our training defaults
}
SAME_BATCHES = ("parity", "same-batches")  # modes whose per-step losses are comparable with TRL's


def start_worker(args: argparse.Namespace):
    """A worker's threads, device, precision, and the shared init (tokenizer, model) on that device."""
    from reward.model import load_model, pick_device, resolve_precision
    from reward.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    device = pick_device()
    tokenizer = load_tokenizer(args.init)
    model = load_model(args.init, tokenizer, seed=args.seed).to(device)
    return device, resolve_precision(args.bf16, False, device), tokenizer, model


def worker(args: argparse.Namespace) -> dict:
    """Train one system in this process and return its measurements."""
    from benchmarks import trl_parity as harness
    from reward.batching import batch_pairs, batch_tokens, build_collator, optimizer_steps
    from reward.fast.packing import PackedBatch
    from reward.model import count_parameters

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
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if args.system == "trl":
        run, _ = harness.run_trl(model, tokenizer, data.train, cfg, cfg.output_dir)
    else:
        run = harness.run_ours(model, tokenizer, data.train, cfg, cfg.output_dir)
    peak = peak_memory_mb(device)

    # Token accounting, replaying the exact batches of this system's run:
    #   real     = tokens of the 2B sequences (prompt counted twice): the same for both systems
    #   computed = non-pad tokens the model ran (shared prefix: P + C' + R' per pair)
    #   slots    = rows x width actually run, padding included
    train_ds = harness.tokenize(data.train, tokenizer, cfg)
    steps = optimizer_steps(train_ds, build_collator(cfg, tokenizer.pad_token_id), cfg)
    real = computed = slots = pairs = 0
    for _ in range(args.max_steps):
        for mb in next(steps)[1]:
            pairs += batch_pairs(mb)
            real += batch_tokens(mb)
            if isinstance(mb, PackedBatch):
                computed, slots = computed + mb.num_tokens, slots + mb.num_positions
            else:
                computed, slots = computed + int(mb["attention_mask"].sum()), slots + mb["input_ids"].numel()
    held_out = held_out_metrics(run.model.to(device), tokenizer, data.test, cfg, precision)
    return {
        "system": args.system,
        "mode": args.mode,
        "seconds": run.seconds,
        "pairs": pairs,
        "pairs_per_s": pairs / run.seconds,
        "real_tokens_per_s": real / run.seconds,
        "padded_share": 1 - computed / slots,
        "tokens_computed_per_pair": computed / pairs,
        "slots_per_pair": slots / pairs,
        "real_tokens_per_pair": real / pairs,
        "peak_memory_mb": peak,
        "eval_loss": held_out["loss"],
        "eval_accuracy": held_out["accuracy"],
        "params": count_parameters(model),
        "real_tokens": real,
        "losses": [s["loss"] for s in run.steps],
    }


def held_out_metrics(model, tokenizer, rows, cfg, precision) -> dict:
    """Loss/accuracy on the held-out pairs: one function, the same plain padded batches, for every system."""
    from benchmarks import trl_parity as harness
    from reward.collate import PairwiseCollator
    from reward.loop import evaluate

    return evaluate(
        model, harness.tokenize(rows, tokenizer, cfg), PairwiseCollator(tokenizer.pad_token_id), cfg, precision
    )


def before_training(args: argparse.Namespace) -> dict:
    """Held-out loss/accuracy of the shared init, so a reader sees what training changed."""
    from benchmarks import trl_parity as harness
    from reward.model import load_model, pick_device, resolve_precision
    from reward.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    device = pick_device()
    tokenizer = load_tokenizer(args.init)
    model = load_model(args.init, tokenizer, seed=args.seed).to(device)
    cfg = harness.our_config(use_cpu=device.type == "cpu", seed=args.seed)
    data = load_rows(args.data, args.num_pairs, args.seed)
    return held_out_metrics(model, tokenizer, data.test, cfg, resolve_precision(args.bf16, False, device))


def matmul_flops(threads: int, size: int = 1024, repeats: int = 20) -> float:
    """The machine's measured fp32 matmul FLOP/s (the ceiling for model FLOP/s)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - started)


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


def summarise(runs: list[dict]) -> dict:
    """Median over repeats for the timed numbers; quality numbers are identical across repeats."""
    out = dict(runs[0])
    for key in ("seconds", "pairs_per_s", "real_tokens_per_s", "peak_memory_mb"):
        out[key] = statistics.median(r[key] for r in runs)
    return out


def table(mode: str, trl: dict, ours: dict, flops: float) -> str:
    mfu = {s["system"]: 6 * s["params"] * s["real_tokens_per_s"] / flops for s in (trl, ours)}
    rows = [
        ("pairs/s", "pairs_per_s", "{:.1f}"),
        ("real tokens/s", "real_tokens_per_s", "{:.0f}"),
        ("padded share of positions run", "padded_share", "{:.1%}"),
        ("real tokens per pair (P+C + P+R)", "real_tokens_per_pair", "{:.1f}"),
        ("non-pad tokens computed per pair", "tokens_computed_per_pair", "{:.1f}"),
        ("positions run per pair (with padding)", "slots_per_pair", "{:.1f}"),
        ("peak memory (MB)", "peak_memory_mb", "{:.0f}"),
        ("held-out loss", "eval_loss", "{:.4f}"),
        ("held-out accuracy", "eval_accuracy", "{:.3f}"),
    ]
    lines = [f"### mode: {mode}", "", "| metric | TRL | ours | ours / TRL |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        ratio = ours[key] / trl[key] if trl[key] else float("nan")
        lines.append(f"| {label} | {fmt.format(trl[key])} | {fmt.format(ours[key])} | {ratio:.2f} |")
    lines.append(
        f"| model FLOP/s / matmul FLOP/s | {mfu['trl']:.1%} | {mfu['ours']:.1%} | {mfu['ours'] / mfu['trl']:.2f} |"
    )
    if mode in SAME_BATCHES:
        diff = max(abs(a - b) for a, b in zip(trl["losses"], ours["losses"]))
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
    flops = matmul_flops(args.threads)
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
    trl_summary = summarise(runs["trl"])
    results, report = {}, []
    for mode in modes:
        results[mode] = {"trl": trl_summary, "ours": summarise(runs[mode])}
        report.append(table(mode, results[mode]["trl"], results[mode]["ours"], flops))
    import transformers
    import trl

    header = (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'} | "
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__} | "
        f"matmul {flops / 1e9:.1f} GFLOP/s\ncommand: python benchmarks/vs_trl.py {' '.join(sys.argv[1:])}\n"
        f"model {args.model} ({results[modes[0]]['ours']['params'] / 1e6:.1f}M params{pretrained}), "
        f"data {args.data}, "
        f"{args.max_steps} steps x {args.batch_size * args.grad_accum} pairs, "
        f"{args.repeats} runs per system\n"
        f"held-out ({before['pairs']} pairs) before training: loss {before['loss']:.4f}, "
        f"accuracy {before['accuracy']:.3f}"
    )
    print("\n" + header + "\n\n" + "\n\n".join(report))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.results_dir / f"{stamp}-{args.model.replace('/', '_')}-{args.data.replace('/', '_')}"
    out.with_suffix(".json").write_text(
        json.dumps({"header": header, "before_training": before, "results": results}, indent=2)
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
