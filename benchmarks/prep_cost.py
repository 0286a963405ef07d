"""What preparing the data costs as it grows, ours vs TRL's RewardTrainer (issue #16, "Cost as the work grows").

    python benchmarks/prep_cost.py                                  # 10k / 100k / 1M short generated pairs
    python benchmarks/prep_cost.py --sizes 10000 100000 --data synthetic-long --threads 2
    python benchmarks/prep_cost.py --sizes 200 400 --max_length 128 --results_dir /tmp/prep   # the test's

For each size and system, one fresh process (so its peak RSS is its own) is handed the same in-memory
`Dataset` of generated pairs (reward/presets/synthetic.py; built before anything is timed) and the
tiny preset's tokenizer and model (reward/presets/tiny.py, one seeded init), with dataset_num_proc=1:

- prep, ours: the training recipe's data stages (reward/recipe.py `read_rows`, `ready_tokenizer`,
  `tokenize`: `load_preferences` validates the rows, `tokenize_pairs` tokenizes and drops identical /
  over-max_length pairs; no
  held-out split, TRL makes none), then what the loop does before the first batch: `pair_lengths` and
  the length-grouped order (reward/fast/grouping.py `grouped_batches`, epoch 0).
- prep, TRL: `RewardTrainer._prepare_dataset` as its `__init__` calls it (EOS, tokenize, max_length
  filter), timed inside a real trainer construction.
- first step: from the start of the training call to the end of optimizer step 1 (max_steps=1, 8
  pairs): `reward.loop.train` with our defaults (grouped, packed, shared prefix) vs `trainer.train()`.

Peak memory is VmHWM from /proc/self/status, reset (`5` > /proc/self/clear_refs) right before each
phase, so it is that phase's peak RSS (the process's baseline included). Output: a markdown table, a
loud line for any super-linear growth (time per pair at the largest size > 1.5x that at the
smallest), and JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = ("ours", "trl")
SUPER_LINEAR_FACTOR = 1.5
BATCH_SIZE = 8
SEED = 0


# --- pure helpers (unit-tested without a subprocess) --------------------------------------------------
def super_linear(seconds_by_size: dict[int, float], factor: float = SUPER_LINEAR_FACTOR) -> float | None:
    """Time per pair at the largest size over that at the smallest, when it exceeds `factor`; else None.

    >>> super_linear({10_000: 1.0, 1_000_000: 100.0}), super_linear({10_000: 1.0, 1_000_000: 160.0})
    (None, 1.6)
    """
    sizes = sorted(n for n in seconds_by_size if n > 0)
    if len(sizes) < 2 or seconds_by_size[sizes[0]] <= 0:
        return None
    small, large = sizes[0], sizes[-1]
    ratio = (seconds_by_size[large] / large) / (seconds_by_size[small] / small)
    return round(ratio, 3) if ratio > factor else None


def flags(rows: list[dict], factor: float = SUPER_LINEAR_FACTOR) -> list[str]:
    """One loud line per (system, phase) whose time per pair grows super-linearly over `rows`."""
    out = []
    for system in SYSTEMS:
        for phase in ("prep_s", "first_step_s"):
            ratio = super_linear({r["pairs"]: r[system][phase] for r in rows}, factor)
            if ratio is not None:
                lo, hi = rows[0]["pairs"], rows[-1]["pairs"]
                out.append(
                    f"!!! SUPER-LINEAR: {system} {phase[:-2]}: time per pair at {hi} pairs is {ratio:.2f}x "
                    f"that at {lo} (threshold {factor}x)"
                )
    return out


def table(rows: list[dict]) -> str:
    head = (
        "| pairs | ours prep s | TRL prep s | ours peak MB | TRL peak MB | ours first step s | TRL first step s "
        "| ours prep µs/pair | TRL prep µs/pair | ours first step µs/pair | TRL first step µs/pair |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        o, t, n = r["ours"], r["trl"], r["pairs"]
        lines.append(
            f"| {n:,} | {o['prep_s']:.2f} | {t['prep_s']:.2f} | {o['prep_peak_mb']:.0f} | {t['prep_peak_mb']:.0f} "
            f"| {o['first_step_s']:.2f} | {t['first_step_s']:.2f} | {1e6 * o['prep_s'] / n:.1f} "
            f"| {1e6 * t['prep_s'] / n:.1f} | {1e6 * o['first_step_s'] / n:.2f} | {1e6 * t['first_step_s'] / n:.2f} |"
        )
    return "\n".join(lines)


# --- inside a worker process -------------------------------------------------------------------------
def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def status_mb(field: str) -> float:
    """A /proc/self/status memory field (VmHWM: peak RSS, VmRSS: now) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


class Phase:
    """Wall time and peak RSS of one `with` block: `.seconds`, `.peak_mb`, `.start_mb`, `.reset`."""

    def __enter__(self) -> Phase:
        self.reset = reset_peak()
        self.start_mb = status_mb("VmRSS")
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.peak_mb = status_mb("VmHWM")

    def record(self, name: str) -> dict:
        return {f"{name}_s": self.seconds, f"{name}_peak_mb": self.peak_mb, f"{name}_start_mb": self.start_mb}


def worker(args: argparse.Namespace) -> dict:
    """Prepare `args.pairs` generated pairs with one system, then run its first optimizer step."""
    import datasets
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    from benchmarks import trl_parity as harness
    from reward.model import configure_for_reward
    from reward.presets.synthetic import generate_long_prompt_pairs, generate_pairs
    from reward.presets.tiny import build_tiny_tokenizer, tiny_config

    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    generate = {"synthetic": generate_pairs, "synthetic-long": generate_long_prompt_pairs}[args.data]
    rows = Dataset.from_list(generate(args.pairs, seed=SEED))  # the same rows for both, not timed
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_config(tiny_config(tokenizer))
    configure_for_reward(model, tokenizer)
    workdir = tempfile.TemporaryDirectory(prefix=f"prep-{args.worker}-")  # removed on exit
    speed = {"group_by_length": True, "padding_free": True, "share_prefix": True} if args.worker == "ours" else {}
    cfg = harness.our_config(
        output_dir=workdir.name,
        per_device_train_batch_size=BATCH_SIZE,
        max_steps=1,
        max_length=args.max_length,
        eval_split_size=0.0,
        dataset_num_proc=1,
        seed=SEED,
        **speed,
    )
    out = {"system": args.worker, "pairs": args.pairs}
    with workdir:
        out.update((run_ours if args.worker == "ours" else run_trl)(cfg, rows, tokenizer, model))
    return out


def run_ours(cfg, rows, tokenizer, model) -> dict:
    from benchmarks.trl_parity import FP32
    from reward.batching import pair_lengths
    from reward.fast.grouping import grouped_batches
    from reward.formatting import choose_format
    from reward.metrics import MetricsWriter
    from reward.recipe import read_rows, ready_tokenizer, requested_format, tokenize
    from reward.run.parts import train_with, training_collator

    with Phase() as prep:  # the recipe's data stages, then what the loop computes before its first batch
        tokenizer = ready_tokenizer(cfg, SimpleNamespace(checkpoint=None), tokenizer)
        data, _ = read_rows(cfg, rows, None)
        text_format = choose_format(requested_format(cfg), tokenizer, data.format, None)
        tokens = tokenize(cfg, data, {}, tokenizer, text_format, None)
        grouped_batches(pair_lengths(tokens.train), cfg.per_device_train_batch_size, cfg.seed, 0)
    collate = training_collator(cfg, tokenizer.pad_token_id, model)
    writer = MetricsWriter(Path(cfg.output_dir) / "metrics.jsonl")
    with Phase() as step:
        train_with(cfg, model, tokens.train, collate=collate, precision=FP32, writer=writer)
    return {**prep.record("prep"), **step.record("first_step"), "kept": len(tokens.train), "reset": prep.reset}


def run_trl(cfg, rows, tokenizer, model) -> dict:
    from trl import RewardTrainer

    from benchmarks import trl_parity as harness

    timed: dict = {}

    class TimedPrep(RewardTrainer):
        """TRL's trainer, its own `_prepare_dataset` timed where `__init__` calls it."""

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            with Phase() as prep:
                prepared = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            timed.update(prep.record("prep"), kept=len(prepared), reset=prep.reset)
            return prepared

    args = harness.trl_args(cfg, cfg.output_dir)
    args.dataset_num_proc = 1
    started = time.perf_counter()
    trainer = TimedPrep(model=copy.deepcopy(model), args=args, train_dataset=rows, processing_class=tokenizer)
    timed["init_s"] = time.perf_counter() - started  # the whole construction, _prepare_dataset included
    with Phase() as step:
        trainer.train()
    return {**timed, **step.record("first_step")}


# --- the driver ----------------------------------------------------------------------------------------
def run_worker(args: argparse.Namespace, system: str, pairs: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", system, "--pairs", str(pairs), "--data", args.data]
    cmd += ["--threads", str(args.threads), "--max_length", str(args.max_length)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        sys.exit(f"{system} worker ({pairs} pairs) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def header(args: argparse.Namespace, load_before: tuple, load_after: tuple) -> str:
    import datasets
    import torch
    import transformers
    import trl

    return (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} threads, CPU | torch "
        f"{torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, datasets "
        f"{datasets.__version__}\ncommand: python benchmarks/prep_cost.py {' '.join(sys.argv[1:])}\n"
        f"data {args.data}, max_length {args.max_length}, tiny model and tokenizer, dataset_num_proc 1 | "
        f"load average (1, 5, 15 min) before {load_before}, after {load_after}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="pairs per run")
    p.add_argument("--data", default="synthetic", choices=["synthetic", "synthetic-long"])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--max_length", type=int, default=1024, help="both systems drop pairs longer than this")
    p.add_argument("--results_dir", type=Path, default=RESULTS)
    p.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--pairs", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    load_before = tuple(round(x, 2) for x in os.getloadavg())
    rows = []
    for i, pairs in enumerate(sorted(args.sizes)):
        order = SYSTEMS if i % 2 == 0 else SYSTEMS[::-1]  # alternate, so drift in load hits both
        row = {"pairs": pairs}
        for system in order:
            row[system] = run_worker(args, system, pairs)
            print(
                f"{pairs} pairs, {system}: prep {row[system]['prep_s']:.2f} s, peak "
                f"{row[system]['prep_peak_mb']:.0f} MB, first step {row[system]['first_step_s']:.2f} s",
                flush=True,
            )
        rows.append(row)
    load_after = tuple(round(x, 2) for x in os.getloadavg())
    text = header(args, load_before, load_after)
    loud = flags(rows)
    print("\n" + text + "\n\n" + table(rows) + ("\n\n" + "\n".join(loud) if loud else "\n\nno super-linear growth"))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-prep-cost-{args.data}.json"
    report = {"header": text, "load_before": load_before, "load_after": load_after, "rows": rows, "flags": loud}
    out.write_text(json.dumps(report, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
