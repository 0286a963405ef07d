"""Attention calls (and, on CUDA, kernel launches) per micro-batch: packed per-segment loop vs padded.

    python benchmarks/kernel_count.py --model small --batch_size 8              # CPU: aten attention calls
    python benchmarks/kernel_count.py --model smollm2-135m --bf16 --out k.json  # on a GPU: + CUDA kernels

One micro-batch of `--batch_size` pairs (the first pairs of the seeded training split of `--data`)
runs forward + Bradley-Terry loss + backward twice under torch.profiler: once packed (one
padding-free row, shared prompt, reward/fast/segment_attention.py's loop over segments) and once as
the plain padded (2B, T) batch. Counted per micro-batch:

- `sdpa_forward`: calls of `aten::scaled_dot_product_attention` (what F.scaled_dot_product_attention
  dispatches to), and `sdpa_backward`: backward kernels `aten::_scaled_dot_product_*_backward`
  (none where a call fell back to the math path: autograd then differentiates its pieces);
- `aten_ops`: outermost aten ops (dispatcher calls from Python and from the autograd engine), and
  `aten_compute_ops`: those that are not views (slice, transpose, ...): on a GPU each runs at least
  one kernel, so a proxy for launches that also exists on a CPU;
- on CUDA: `cuda_kernels` (device-side kernel events) and `cuda_launches` (cudaLaunchKernel-style
  runtime calls), plus the wall time per micro-batch.

The per-segment loop's formula (tested: tests/test_gpu_check.py): a segment [P | C' | R'] costs one
causal call for P + C' and one masked call for R' when R' is not empty, in every layer:
    packed sdpa_forward = layers x sum over segments of (1 + [len R' > 0])  (= 2 x segments x layers
    when every rejected side has tokens past the prompt);   padded sdpa_forward = layers.
Writes one JSON (`--out`) and prints it. docs/gpu.md reads the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import PreTrainedModel

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:  # the named Llama shapes benchmarks/vs_trl.py runs (--model tiny | small | smollm2-135m)
    from benchmarks.inits import MODELS
except ImportError:  # before benchmarks/inits.py existed they lived in vs_trl.py
    from benchmarks.vs_trl import MODELS  # type: ignore[no-redef]
from reward.collate import PairBatch, PairwiseCollator  # noqa: E402
from reward.fast.packed_forward import supports_packing  # noqa: E402
from reward.fast.packing import (  # noqa: E402
    PackedBatch,
    Segment,
    pack_pairs,  # noqa: E402
)
from reward.loss import bradley_terry_loss  # noqa: E402

SDPA = "aten::scaled_dot_product_attention"
# aten ops that only make a new view of memory (no kernel on a GPU), and ops that copy only sometimes
VIEWS = {
    f"aten::{n}"
    for n in "slice select view _unsafe_view transpose t expand as_strided unsqueeze squeeze permute alias detach "
    "narrow split split_with_sizes chunk unbind empty empty_strided lift_fresh resolve_conj resolve_neg".split()
}
SOMETIMES = {f"aten::{n}" for n in "reshape contiguous flatten to type_as view_as expand_as".split()}
LAUNCHES = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")


def build_model(name: str, layers: int | None = None, seed: int = 0) -> tuple[PreTrainedModel, Any]:
    """(model, tokenizer): a random-init Llama of the benchmarks' `MODELS[name]` shape, in memory."""
    from transformers import AutoModelForSequenceClassification

    from reward.model import configure_for_reward
    from reward.presets.tiny import build_tiny_tokenizer, tiny_config

    tokenizer = build_tiny_tokenizer()
    config = tiny_config(tokenizer)
    for key, value in (MODELS[name] or {}).items():
        setattr(config, key, value)
    if layers is not None:
        config.num_hidden_layers = layers
    config.head_dim = config.hidden_size // config.num_attention_heads
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    configure_for_reward(model, tokenizer)
    return model, tokenizer


def micro_batch(data: str, batch_size: int, tokenizer: Any, seed: int = 0) -> list[dict]:
    """The first `batch_size` tokenized pairs of `data`'s seeded training split."""
    from benchmarks.inits import load_rows
    from reward.data import detect_format
    from reward.formatting import tokenize_pairs

    rows = load_rows(data, max(100, 2 * batch_size), seed).train
    rows = rows.select(range(batch_size))
    ds, _ = tokenize_pairs(rows, tokenizer, detect_format(rows.column_names, rows[0]), 1024)
    return [{"chosen_ids": r["chosen_ids"], "rejected_ids": r["rejected_ids"]} for r in ds]


def expected_sdpa_forward(segments: list[Segment], layers: int) -> int:
    """SDPA calls of one packed forward: per layer, 1 causal call per segment + 1 per non-empty later suffix."""
    return layers * sum(1 + sum(1 for length in suffixes[1:] if length) for _, _, _, *suffixes in segments)


def _outermost_aten(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return False
        parent = parent.cpu_parent
    return event.name.startswith("aten::")


def _computes(event: Any) -> bool:
    """Does this aten op (or, for reshape / contiguous / to ..., one of the ops it calls) run a kernel?"""
    if event.name in SOMETIMES:
        return any(_computes(child) for child in event.cpu_children)
    return event.name.startswith("aten::") and event.name not in VIEWS


def count_events(events: Any) -> dict[str, Any]:
    """Counts over a profiler's events (see the module docstring for what each one means)."""
    cpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU]
    gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    backward = [e for e in cpu if e.name.startswith("aten::_scaled_dot_product") and e.name.endswith("_backward")]
    by_name: dict[str, int] = {}
    for e in cpu:
        if "scaled_dot_product" in e.name:
            by_name[e.name] = by_name.get(e.name, 0) + 1
    return {
        "sdpa_forward": sum(1 for e in cpu if e.name == SDPA),
        "sdpa_backward": len(backward),
        "aten_ops": sum(1 for e in cpu if _outermost_aten(e)),
        "aten_compute_ops": sum(1 for e in cpu if _outermost_aten(e) and _computes(e)),
        "cuda_kernels": sum(1 for e in gpu if not e.name.lower().startswith(("memcpy", "memset"))),
        "cuda_launches": sum(1 for e in cpu if e.name in LAUNCHES),
        "attention_ops_by_name": dict(sorted(by_name.items())),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step(
    model: PreTrainedModel, batch: PackedBatch | PairBatch, device: torch.device, dtype: torch.dtype | None
) -> torch.Tensor:
    """One micro-batch, already collated (packed, or PairwiseCollator's padded one): forward, loss,
    backward; returns the (2B,) rewards."""
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        r_c, r_r = batch.rewards(model).chunk(2)  # (B,), (B,): [all chosen; all rejected], views
    bradley_terry_loss(r_c, r_r).loss.backward()
    model.zero_grad(set_to_none=True)
    return torch.cat([r_c, r_r]).detach().float()


def measure(
    model: PreTrainedModel,
    pairs: list[dict],
    device: torch.device,
    dtype: torch.dtype | None = None,
    time_repeats: int = 3,
) -> dict:
    """Counts and timings of both paths on one micro-batch, plus how far apart their rewards are."""
    batch = pack_pairs(pairs, model.config.pad_token_id)
    if not supports_packing(model):  # the one-time self-check runs outside the profiled window
        raise SystemExit("packing is off for this model; nothing to count")
    layers = model.config.num_hidden_layers
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    out: dict = {"layers": layers, "pairs": len(pairs), "segments": len(batch.segments)}
    out["segments_with_rejected_suffix"] = sum(1 for s in batch.segments if s[4])
    out["packed_tokens"] = batch.num_tokens
    out["padded_positions"] = 2 * len(pairs) * max(map(len, batch.chosen_ids + batch.rejected_ids))
    rewards = {}
    batches = {"packed": batch, "padded": PairwiseCollator(batch.pad_token_id)(pairs)}  # collated outside
    for path, collated in batches.items():
        rewards[path] = step(model, collated, device, dtype)  # warm-up (kernels, allocator)
        _sync(device)
        with profile(activities=activities) as prof:
            step(model, collated, device, dtype)
            _sync(device)
        counts = count_events(prof.events())
        counts["sdpa_forward_per_layer"] = counts["sdpa_forward"] / layers
        seconds = []
        for _ in range(time_repeats):
            _sync(device)
            started = time.perf_counter()
            step(model, collated, device, dtype)
            _sync(device)
            seconds.append(time.perf_counter() - started)
        counts["ms_per_micro_batch"] = 1000 * statistics.median(seconds) if seconds else None
        out[path] = counts
    out["expected_packed_sdpa_forward"] = expected_sdpa_forward(batch.segments, layers)
    out["expected_padded_sdpa_forward"] = layers
    out["max_abs_reward_difference"] = (rewards["packed"] - rewards["padded"]).abs().max().item()
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="small", choices=list(MODELS), help="a shape of benchmarks/vs_trl.py MODELS")
    p.add_argument("--layers", type=int, help="override the shape's number of layers")
    p.add_argument("--data", default="synthetic-long")
    p.add_argument("--batch_size", type=int, default=8, help="pairs per micro-batch")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (as vs_trl.py --bf16)")
    p.add_argument("--time_repeats", type=int, default=3, help="timed runs per path (0: counts only)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, help="write the JSON here")
    args = p.parse_args(argv)
    import datasets

    datasets.disable_progress_bars()  # stdout / stderr: the JSON and the profiler's own lines only
    if args.threads:
        torch.set_num_threads(args.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    model, tokenizer = build_model(args.model, args.layers)
    model.to(device).train()
    pairs = micro_batch(args.data, args.batch_size, tokenizer)
    result = measure(model, pairs, device, torch.bfloat16 if args.bf16 else None, args.time_repeats)
    import transformers

    result["command"] = "python benchmarks/kernel_count.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["machine"] = (
        f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'} | "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    result.update(model=args.model, data=args.data, device=device.type, bf16=args.bf16)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
