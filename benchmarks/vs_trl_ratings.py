"""Ratings: TRL's RewardTrainer on the pairs the ratings imply vs our regression on the ratings, in one run.

    python benchmarks/vs_trl_ratings.py                                  # tiny model, the default size
    python benchmarks/vs_trl_ratings.py --model small --num_prompts 1200 --max_steps 60
    python benchmarks/vs_trl_ratings.py --max_steps 300 --learning_rate 1e-3 --repeats 1   # trained on: quality

Data: `synthetic-ratings` (reward/presets/graded.py `generate_ratings`): K = 4 completions per prompt,
each rated 0..3 (how many of its three items belong to the asked category), read as train.py reads it:
each run of adjacent rows with one prompt is one group (two generated prompts of the same text in a
row make one group of 8), 10 % of the groups held out whole. TRL's RewardTrainer cannot regress on a
rating: a TRL user expands each group into the pairs its ratings imply (every (i, j) with s_i > s_j as
chosen / rejected; equal ratings imply nothing: reward/labels/loss.py `implied_pairs`), about 4.5 of
the C(4, 2) = 6 per prompt, and trains Bradley–Terry on them: 2 sequences per pair, the prompt in
each. Ours trains the regression on the ratings (our defaults: standardised ratings, no pair term,
length-grouped prompts, each packed as one segment [P | C1' | ... | CK']): K sequences per prompt,
the prompt once. The two systems optimise different losses on the same labels, so a step's work
differs; what is matched is the data: the same training groups, the same init, the same number of
optimizer steps, learning rate and schedule (linear, no warmup), and as many epochs: TRL's pairs per
step are B x accumulation with the accumulation chosen so that a step holds --prompts_per_step
prompts' worth of pairs (the training set's mean implied pairs per prompt).

Reported per system, timed over the training call alone: training prompts per second (the common unit:
ours counts its prompts, TRL its pairs / the mean pairs per prompt), each system's own unit (TRL pairs/s,
ours rated completions/s), sequences run per second, non-pad tokens computed and positions run (padding
included), peak memory of training alone (benchmarks/measure.py: the RSS peak reset right before the
training call and read right after it; CUDA: the allocator's peak) and what training added, and the
held-out quality of both models computed by one function (reward/labels/evaluation.py, training's
held-out evaluation: every held-out completion's reward, then reward/labels/metrics.py
`rating_metrics`): accuracy on the pairs the ratings imply within each held-out prompt, Pearson's r and
Spearman's ρ between reward and rating over every held-out completion. All three are invariant to
the reward's offset and scale, which Bradley–Terry leaves free (RMSE is saved for ours only). The fp32
matmul rate is measured before and after the runs; a spread over 20 % there, or over 15 % between
repeats, prints "machine busy: ratios unreliable".
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

DATA = "synthetic-ratings"
K = 4  # completions generated per prompt (reward/presets/synthetic.py `generate_rated_rows`)
OUR_DEFAULTS = ("group_by_length", "padding_free", "share_prefix")  # our speed options, at TrainConfig's defaults


def implied_pair_rows(groups) -> list[dict]:
    """A TRL user's rows for rated data: {"prompt", "chosen", "rejected"} for every pair a group's ratings imply.

    >>> implied_pair_rows([{"prompt": "p", "completions": ["a", "b", "c"], "scores": [1.0, 3.0, 1.0]}])
    [{'prompt': 'p', 'chosen': 'b', 'rejected': 'a'}, {'prompt': 'p', 'chosen': 'b', 'rejected': 'c'}]
    """
    from reward.labels.loss import implied_pairs

    out = []
    for group in groups:
        better, worse = implied_pairs([group["scores"]])
        texts = group["completions"]
        out += [{"prompt": group["prompt"], "chosen": texts[b], "rejected": texts[w]} for b, w in zip(better, worse)]
    return out


def trl_accumulation(prompts_per_step: int, pairs_per_prompt: float, batch_size: int) -> int:
    """TRL's accumulation steps: B x this ≈ the implied pairs of `prompts_per_step` prompts (at least 1)."""
    return max(1, round(prompts_per_step * pairs_per_prompt / batch_size))


def held_out(cfg, precision, model, tokenizer, test, scale) -> dict:
    """The held-out quality of either system's model: one function, the same rows, the same forward (packed
    per prompt where the model allows it): reward/run/parts.py `evaluation` for rated rows."""
    from reward.formatting import TRL_FORMAT
    from reward.labels.rated import tokenize_ratings
    from reward.run.parts import evaluation

    rows, _ = tokenize_ratings(test, tokenizer, TRL_FORMAT, cfg.max_length, split="eval")
    return evaluation(cfg, precision, model, tokenizer.pad_token_id, scale)(model, rows)


def worker(args: argparse.Namespace) -> dict:
    """Train one system in this process; return its measurements."""
    from datasets import Dataset

    from benchmarks import trl_parity as harness
    from reward.batching import BatchPlan, optimizer_steps
    from reward.collate import PairwiseCollator
    from reward.config import TrainConfig, pick
    from reward.formatting import TRL_FORMAT
    from reward.labels.rated import rating_scale, tokenize_ratings
    from reward.metrics import MetricsWriter
    from reward.model import count_parameters
    from reward.run.parts import batch_order, train_with, training_collator

    device, precision, tokenizer, model = start_worker(args)
    data = load_rows(DATA, K * args.num_prompts, args.seed)  # one row per group {"prompt", "completions", "scores"}
    text_pairs = Dataset.from_list(implied_pair_rows(data.train))
    pairs_per_prompt = len(text_pairs) / len(data.train)
    accumulation = trl_accumulation(args.prompts_per_step, pairs_per_prompt, args.trl_batch_size)
    common = dict(max_steps=args.max_steps, learning_rate=args.learning_rate, seed=args.seed, bf16=args.bf16,
                  use_cpu=device.type == "cpu", output_dir=str(args.workdir / args.system))  # fmt: skip
    if args.system == "trl":  # as it ships: plain padded pairs, shuffled, mean of micro-batch means
        cfg = harness.our_config(
            per_device_train_batch_size=args.trl_batch_size, gradient_accumulation_steps=accumulation, **common
        )
    else:  # our defaults: prompts grouped by length, one packed segment each, the regression
        speed = {name: TrainConfig.default(name) for name in OUR_DEFAULTS}
        cfg = harness.our_config(per_device_train_batch_size=args.prompts_per_step, **speed, **common)
    rows, _ = tokenize_ratings(data.train, tokenizer, TRL_FORMAT, cfg.max_length)  # one row per prompt
    scale = rating_scale(rows, TrainConfig.default("rating_standardize"))  # the training ratings' μ and σ
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    memory = TrainingMemory(device)  # reset right before the training call, read right after it
    if args.system == "trl":
        run, _ = harness.run_trl(model, tokenizer, text_pairs, cfg, cfg.output_dir, on_start=memory.start)
        trained, seconds = run.model, run.seconds
        ds = harness.tokenize(text_pairs, tokenizer, cfg)  # what TRL ran, for the accounting below
        collate, order = PairwiseCollator(tokenizer.pad_token_id), batch_order(cfg, ds)
    else:
        trained, ds = model, rows
        collate = training_collator(cfg, tokenizer.pad_token_id, model, grouped=True)
        writer = MetricsWriter(Path(cfg.output_dir) / "m.jsonl")
        memory.start()
        started = time.perf_counter()
        train_with(cfg, trained, rows, collate=collate, precision=precision, writer=writer, scale=scale)
        seconds = time.perf_counter() - started
        order = batch_order(cfg, rows, grouped=True)
    peak = memory.peak_mb()  # training's alone: reset before it, read before the evaluation below

    # token accounting, replaying this system's batches (TRL's order is ours: tests/test_trl_parity.py)
    steps = optimizer_steps(ds, collate, order, pick(BatchPlan, cfg))
    items = sequences = computed = positions = prompts = 0  # items: TRL pairs, our rated completions
    for _ in range(args.max_steps):
        for mb in next(steps)[1]:
            if args.system == "trl":
                items += mb.margin.numel()
                sequences += 2 * mb.margin.numel()
                computed += mb.sequence_tokens
                positions += mb.input_ids.numel()
            else:
                items += mb.scores.numel()
                sequences += mb.scores.numel()
                prompts += mb.num_prompts
                computed += mb.num_tokens
                positions += mb.rows.input_ids.numel() if mb.rows is not None else mb.num_tokens
    if args.system == "trl":
        prompts = items / pairs_per_prompt  # the training prompts' worth of pairs it ran
    held = held_out(cfg, precision, trained.to(device), tokenizer, data.test, scale)
    return {
        "system": args.system,
        "seconds": seconds,
        "prompts": prompts,
        "epochs": prompts / len(rows),
        "items": items,
        "sequences": sequences,
        "prompts_per_s": prompts / seconds,
        "items_per_s": items / seconds,
        "sequences_per_s": sequences / seconds,
        "tokens_computed": computed,
        "positions_run": positions,
        "tokens_computed_per_prompt": computed / prompts,
        "peak_memory_mb": peak,
        "memory_rise_mb": peak - memory.start_mb,
        "memory_peak_reset": memory.reset,
        "eval_accuracy": held["accuracy"],
        "eval_pearson": held.get("pearson", float("nan")),  # absent: constant rewards
        "eval_spearman": held.get("spearman", float("nan")),
        "eval_rmse": held["rmse"],  # on the rating scale: meaningful for the regression only
        "eval_implied_pairs": held["implied_pairs"],
        "eval_completions": held["completions"],
        "eval_prompts": len(data.test),
        "train_prompts": len(rows),
        "train_implied_pairs": len(text_pairs),
        "trl_pairs_per_step": args.trl_batch_size * accumulation,
        "trl_accumulation": accumulation,
        "params": count_parameters(model),
    }


def run_worker(args: argparse.Namespace, system: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", system, "--init", str(args.init), "--workdir", str(args.workdir)]
    proc = subprocess.run(cmd + args.passthrough, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{system} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def before_training(args: argparse.Namespace) -> dict:
    """The shared init's held-out quality (chance), so a reader sees what training changed."""
    from benchmarks import trl_parity as harness
    from reward.formatting import TRL_FORMAT
    from reward.labels.rated import rating_scale, tokenize_ratings

    device, precision, tokenizer, model = start_worker(args)
    cfg = harness.our_config(use_cpu=device.type == "cpu", seed=args.seed)
    data = load_rows(DATA, K * args.num_prompts, args.seed)
    scale = rating_scale(tokenize_ratings(data.train, tokenizer, TRL_FORMAT, cfg.max_length)[0], True)
    return held_out(cfg, precision, model, tokenizer, data.test, scale)


TIMED = ("seconds", "prompts_per_s", "items_per_s", "sequences_per_s", "peak_memory_mb")


def table(trl: dict, ours: dict) -> str:
    rows = [
        ("training prompts/s (median; TRL: its pairs / pairs per prompt)", "prompts_per_s", "{:.1f}"),
        ("sequences run/s (TRL: 2 per pair; ours: 1 per completion)", "sequences_per_s", "{:.1f}"),
        ("epochs of the training prompts", "epochs", "{:.2f}"),
        ("non-pad tokens computed", "tokens_computed", "{:,}"),
        ("positions run (with padding)", "positions_run", "{:,}"),
        ("non-pad tokens computed per training prompt", "tokens_computed_per_prompt", "{:.1f}"),
        ("peak memory of training (MB)", "peak_memory_mb", "{:.0f}"),
        ("memory training added (MB)", "memory_rise_mb", "{:.0f}"),
        ("held-out implied-pair accuracy", "eval_accuracy", "{:.3f}"),
        ("held-out Pearson r (reward, rating)", "eval_pearson", "{:.3f}"),
        ("held-out Spearman ρ (reward, rating)", "eval_spearman", "{:.3f}"),
    ]
    lines = ["| metric | TRL (implied pairs, BT) | ours (regression) | ours / TRL |", "|---|---|---|---|"]
    for label, key, fmt in rows:
        ratio = ours[key] / trl[key] if trl[key] else float("nan")
        lines.append(f"| {label} | {fmt.format(trl[key])} | {fmt.format(ours[key])} | {ratio:.2f} |")
    native = f"{trl['items_per_s']:.1f} pairs/s | {ours['items_per_s']:.1f} completions/s"
    lines.insert(3, f"| own unit/s (median) | {native} | |")
    spread = " / ".join(f"{s['prompts_per_s_range'][0]:.1f}–{s['prompts_per_s_range'][1]:.1f}" for s in (trl, ours))
    lines.append(f"| training prompts/s, min–max over repeats (TRL / ours) | {spread} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="tiny | small | smollm2-135m | a model folder or Hub id")
    p.add_argument("--num_prompts", type=int, default=600, help="prompts generated, K = 4 rated completions each")
    p.add_argument("--prompts_per_step", type=int, default=8, help="ours: prompts per step (TRL: their pairs' worth)")
    p.add_argument("--trl_batch_size", type=int, default=8, help="TRL's pairs per micro-batch (accumulated to a step)")
    p.add_argument("--max_steps", type=int, default=60)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--repeats", type=int, default=2, help="runs per system, alternating")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain_steps", type=int, default=0, help="warm start on the short pair task (vs_trl.py's)")
    p.add_argument("--results_dir", type=Path, default=RESULTS)
    p.add_argument("--worker", choices=["trl", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--init", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=RESULTS / "work-ratings", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        args.system = args.worker
        print(json.dumps(worker(args)))
        return {}
    args.passthrough = argv
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.init = args.workdir / f"init-{args.model.replace('/', '_')}"
    build_init(args.model, args.init, args.seed)
    warm = ""
    if args.pretrain_steps > 0:
        out = args.workdir / f"pretrained-{args.model.replace('/', '_')}"
        warm = f", pretrained {args.pretrain_steps} steps ({pretrain(args.init, args.pretrain_steps, args.seed, out)})"
        args.init = out
    before = before_training(args)
    flops_before = matmul_flops(args.threads)
    runs: dict[str, list[dict]] = {"trl": [], "ours": []}
    for repeat in range(args.repeats):
        for system in ("trl", "ours") if repeat % 2 == 0 else ("ours", "trl"):
            runs[system].append(run_worker(args, system))
            print(f"{system} run {repeat + 1}: {runs[system][-1]['prompts_per_s']:.1f} prompts/s", flush=True)
    flops_after = matmul_flops(args.threads)
    trl, ours = summarise(runs["trl"], TIMED), summarise(runs["ours"], TIMED)
    import transformers
    import trl as trl_lib

    device = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "CPU"
    header = (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, {device} | "
        f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl_lib.__version__} | "
        f"matmul {flops_before / 1e9:.1f} GFLOP/s before, {flops_after / 1e9:.1f} after\n"
        f"command: python benchmarks/vs_trl_ratings.py {' '.join(argv)}\n"
        f"model {args.model} ({ours['params'] / 1e6:.1f}M params{warm}), data {DATA} ({args.num_prompts} prompts x "
        f"K = {K}: {ours['train_prompts']} training groups, {ours['train_implied_pairs']} implied pairs), "
        f"{args.max_steps} steps, lr {args.learning_rate:g} linear (ours {args.prompts_per_step} prompts per step; "
        f"TRL {args.trl_batch_size} pairs x {trl['trl_accumulation']} accumulation = {trl['trl_pairs_per_step']} "
        f"pairs), {args.repeats} runs per system; held-out: {ours['eval_prompts']} prompts, "
        f"{ours['eval_completions']} completions, {ours['eval_implied_pairs']} implied pairs; the init: "
        f"accuracy {before['accuracy']:.3f}, Spearman {before.get('spearman', float('nan')):.3f}"
    )
    warning = busy_warning(flops_before, flops_after, runs, "prompts_per_s")
    print("\n" + header + "\n\n" + table(trl, ours) + (f"\n\n**{warning}**" if warning else ""))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-ratings-{args.model.replace('/', '_')}.json"
    result = {"header": header, "warning": warning, "before_training": before, "trl": trl, "ours": ours, "runs": runs}
    out.write_text(json.dumps(result, indent=2))
    print(f"results: {out}")
    return result


if __name__ == "__main__":
    main()
