"""Attention over packed segments: each segment attends only to itself, at the cost of its own length.

A packed row holds several segments side by side (reward/fast/packing.py). A dense 4-D mask over the
row would make the kernel score every query against every key of the row, R x T x T, although
all but the block-diagonal is masked out. Here each segment is computed on its own with
`F.scaled_dot_product_attention`, so the cost is the sum of the segments' own squares, and the
longest part of each segment runs on the kernel's plain causal path:

    segment [P | C' | R']   (P: shared prompt prefix, C'/R': chosen/rejected suffixes)
      queries P + C'  ->  keys P + C'      causal                      (is_causal=True)
      queries R'      ->  keys P then R'   all of P, causal inside R'  (a causal mask shifted by len P)

    a ranking's segment [P | R1' | ... | RK'] is the same rule with K suffixes: P + R1' causal, then
    each further Rk' against P and Rk' (reward/ranked/collate.py)

the rule of `PackedBatch.dense_mask()` (tests/test_packing.py checks that this gives the
dense-mask output and gradients). A segment without a shared prefix is (row, start, L,
0, 0): one causal sequence. A variant that gathered all segments into one padded (S, L) batch for
a single masked call was tried on the 2-core CPU: slower for long segments of mixed length (it
pays L x L per segment and loses the causal kernel), faster only for many very short segments,
where this loop's per-call Python overhead shows. Re-measured on the long-prompt data (median P 110,
C' 23, R' 42; forward + backward of one layer, 6 micro-batches, 2026-12-02): that batched call 1.2-1.5x
this loop's time, sdpa's math backend 1.2-1.4x, one masked call per segment (C' hidden from R')
1.1-1.3x.

It plugs into transformers as an attention implementation, "reward_segments", registered with
`AttentionInterface` (how HF lets code supply its own kernel: the attention modules of Llama,
Qwen2 and GPT-2 look the function up by `config._attn_implementation` at every call and pass on
the model's extra keyword arguments). The layout travels as the keyword argument
`reward_segments=[(row, start, len P, len C', len R'), ...]`; a call without it (the padded
forward, evaluation, the pipeline) goes to transformers' own sdpa attention with sdpa's mask, so a
model switched to "reward_segments" computes everything else exactly as "sdpa" does. The switch is
kept for the model's life on purpose: gradient checkpointing re-runs the forward during backward,
after any temporary switch would have been undone. The name is not saved: transformers leaves
`_attn_implementation` out of config.json.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from reward.fast.layout import Segment

NAME = "reward_segments"


def layout_tensor(segments: list[Segment]) -> torch.Tensor:
    """(S, W) int64 on the CPU: the segments as rows, zero-padded to the longest (a zero-length suffix
    adds nothing). This is how the layout travels through the model: a list would make torch.compile
    guard on its length, a recompile whenever the number of segments changes; a tensor's size is
    dynamic."""
    width = max(len(segment) for segment in segments)
    return torch.tensor([list(segment) + [0] * (width - len(segment)) for segment in segments], dtype=torch.long)


def layout_list(reward_segments: list[Segment] | torch.Tensor) -> list[Segment]:
    """The layout as (row, start, len P, len S1', ...) tuples, from `layout_tensor`'s rows or as given."""
    if isinstance(reward_segments, torch.Tensor):
        return [tuple(row) for row in reward_segments.tolist()]
    return reward_segments


# Not traced by torch.compile: the loop is Python over the layout, and tracing it would specialise a
# graph on every segment length (a recompile per micro-batch). Under --torch_compile the layers around
# it are compiled and this runs eagerly between their graphs (reward/fast/compiled.py).
@torch.compiler.disable
def segment_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    reward_segments: list[Segment] | torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention output (R, T, H, d) for query (R, H, T, d) and key/value (R, H_kv, T, d).

    With `reward_segments` (the tuples, or `layout_tensor` of them), row positions outside every
    segment (a row's trailing padding) get a zero output: nothing reads them. Without, this is
    transformers' sdpa attention.
    """
    if reward_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    reward_segments = layout_list(reward_segments)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
        key = key.repeat_interleave(groups, dim=1)  # (R, H, T, d)
        value = value.repeat_interleave(groups, dim=1)  # (R, H, T, d)
    rows, width = query.shape[0], query.shape[2]
    by_row: list[list[Segment]] = [[] for _ in range(rows)]
    for segment in reward_segments:
        by_row[segment[0]].append(segment)
    # Each row is split once into its segments' pieces: [P + S1'], S2', ..., SK' per segment, then the
    # trailing padding. Slicing the whole row per segment instead would make autograd's backward of
    # every slice fill a zero tensor the size of the row and add it up: O(segments x T) per layer, the
    # largest cost of the packed step on CPU (benchmarks/README.md, profile). A split's backward is one
    # concatenation.
    out = []
    for row, (q_row, k_row, v_row) in enumerate(zip(query.unbind(0), key.unbind(0), value.unbind(0))):
        sizes, filled = [], 0
        for _, start, prefix, *suffixes in by_row[row]:
            if start != filled:
                raise ValueError(f"segments of row {row} must be contiguous from column 0 (got start {start})")
            sizes += [prefix + (suffixes[0] if suffixes else 0), *suffixes[1:]]
            filled = start + prefix + sum(suffixes)
        sizes.append(width - filled)
        qs, ks, vs = (x.split(sizes, dim=1) for x in (q_row, k_row, v_row))  # pieces (H, n, d)
        pieces, i = [], 0
        for _, _, prefix, *suffixes in by_row[row]:
            k_shared, v_shared = ks[i][:, :prefix], vs[i][:, :prefix]  # (H, P, d): every suffix sees P
            pieces.append(
                F.scaled_dot_product_attention(
                    qs[i][None], ks[i][None], vs[i][None], dropout_p=dropout, is_causal=True, scale=scaling
                )[0]  # (H, P + S1', d)
            )
            for length in suffixes[1:]:  # R' of a pair; R2'..RK' of a ranking
                i += 1
                if length:
                    keys = torch.cat([k_shared, ks[i]], dim=1)  # (H, P + Sk', d)
                    values = torch.cat([v_shared, vs[i]], dim=1)  # (H, P + Sk', d)
                    # Sk' query i sees all of P and Sk' keys 0..i: a causal mask shifted right by len(P)
                    see = torch.ones(length, prefix + length, dtype=torch.bool, device=query.device).tril(prefix)
                    pieces.append(
                        F.scaled_dot_product_attention(
                            qs[i][None], keys[None], values[None], attn_mask=see, dropout_p=dropout, scale=scaling
                        )[0]  # (H, Sk', d)
                    )
            i += 1
        if sizes[-1]:  # trailing padding of the row: nothing reads it
            pieces.append(query.new_zeros(query.shape[1], sizes[-1], value.shape[-1]))
        out.append(torch.cat(pieces, dim=1))  # (H, T, d)
    out = torch.stack(out)  # (R, H, T, d)
    return out.transpose(1, 2).contiguous(), None  # (R, T, H, d), as transformers' attention functions


def register_segment_attention() -> None:
    """Make "reward_segments" known to transformers (idempotent). An explicit call, made by
    `use_segment_attention`, rather than an import side effect: importing this module changes nothing."""
    AttentionInterface.register(NAME, segment_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # calls without segments get sdpa's own mask


def switch_changes_nothing_else(model: PreTrainedModel) -> bool:
    """True if switching `model` to "reward_segments" leaves every call without segments as it was: the
    model runs sdpa (those calls go to sdpa) or is switched already. Evaluation and scoring pack only
    then, so an eager model trained padded stays eager."""
    return model.config._attn_implementation in ("sdpa", NAME)


def use_segment_attention(model: PreTrainedModel) -> None:
    """Switch `model` to "reward_segments" (from "sdpa" or "eager"); idempotent.

    From "eager", calls without segments then run sdpa rather than eager attention: the same
    function up to float rounding.
    """
    register_segment_attention()
    if model.config._attn_implementation != NAME:
        model.config._attn_implementation = NAME  # the setter passes it on to sub-configs
