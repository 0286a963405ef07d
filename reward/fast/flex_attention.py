"""A prototype, OFF by default and used by nothing: the packed rows' attention as ONE FlexAttention call.

reward/fast/segment_attention.py calls `F.scaled_dot_product_attention` twice per pair segment
per layer ([P | C'] causal, then R' against [P | R']), so a micro-batch of B pairs launches 2B
attention calls (and their backward kernels) per layer. FlexAttention takes the whole rule as a
`mask_mod` and runs one call per layer over the (R, T) rows; its `BlockMask` skips the key blocks
that no query of a block may see, so the cost stays close to the segments' own squares. The rule
(`PackedBatch.dense_mask()`'s, per token: its segment and its branch, 0 = shared prefix P, k =
suffix k):

    visible(q, k) = same segment  &  k <= q (columns: causal)  &  (branch[k] == P or branch[k] == branch[q])

Column order makes "causal" right for every branch: P comes before all suffixes, and a suffix's own
keys lie before its later queries. Row positions outside every segment see nothing and get 0, as
in the per-segment loop.

Status (docs/gpu.md): the forward equals the per-segment path on CPU (tests/test_flex_attention.py).
torch 2.13 has no FlexAttention backward on CPU (NotImplementedError as soon as an input requires
grad), so its gradients are checked on CUDA only (tests/test_flex_attention.py, run by
benchmarks/gpu_check.sh): until a GPU has passed them, nothing here is registered or selected.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from reward.fast.layout import Segment
from reward.fast.segment_attention import layout_list


def token_layout(segments: list[Segment], rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(segment id (R, T), branch (R, T)) long: -1 / -1 outside every segment; branch 0 = P, k = suffix k.

    >>> seg, branch = token_layout([(0, 0, 2, 1, 2), (0, 5, 1, 1, 0)], rows=1, width=8)
    >>> seg.tolist(), branch.tolist()
    ([[0, 0, 0, 0, 0, 1, 1, -1]], [[0, 0, 1, 2, 2, 0, 1, -1]])
    """
    seg = torch.full((rows, width), -1, dtype=torch.long)
    branch = torch.full((rows, width), -1, dtype=torch.long)
    for number, (row, start, prefix, *suffixes) in enumerate(segments):
        lengths = [prefix, *suffixes]
        end = start + sum(lengths)
        seg[row, start:end] = number
        branch[row, start:end] = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return seg, branch


def segment_block_mask(segments: list[Segment], rows: int, width: int, device: torch.device):
    """The `BlockMask` of the packed rows: built once per micro-batch, shared by every layer."""
    from torch.nn.attention.flex_attention import create_block_mask

    seg, branch = (t.to(device) for t in token_layout(segments, rows, width))

    def visible(b, h, q, k):
        same = (seg[b, q] == seg[b, k]) & (seg[b, q] >= 0)
        return same & (k <= q) & ((branch[b, k] == 0) | (branch[b, k] == branch[b, q]))

    return create_block_mask(visible, B=rows, H=None, Q_LEN=width, KV_LEN=width, device=device)


_CACHE: dict[str, tuple] = {}  # the last (segments, shape, device, block mask): one micro-batch's layers


def flex_kernel(device: torch.device) -> Callable[..., torch.Tensor]:
    """FlexAttention for `device`: compiled on CUDA, where eager FlexAttention materialises every row's
    (T, T) scores and only the compiled call is the fused kernel the cost model counts (docs/gpu.md);
    eager elsewhere (the CPU runs the forward only, in the tests)."""
    from torch.nn.attention.flex_attention import flex_attention

    return compiled_flex_attention() if device.type == "cuda" else flex_attention


@functools.cache
def compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """`torch.compile(flex_attention)`, made once per process (compiling happens at its first call)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_segment_attention(
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
    """`segment_attention`'s signature and result, (R, T, H, d) for query (R, H, T, d), in one call;
    without `reward_segments` (padded batches), transformers' sdpa attention, as there."""
    if reward_segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if dropout:
        raise ValueError("flex_segment_attention has no attention dropout")
    rows, width = query.shape[0], query.shape[2]
    shape = (rows, width, query.device)
    cached = _CACHE.get("last")  # holds the list itself, so `is` cannot match a new list at a reused id
    if cached is None or cached[0] is not reward_segments or cached[1] != shape:
        mask = segment_block_mask(layout_list(reward_segments), *shape)
        cached = _CACHE["last"] = (reward_segments, shape, mask)
    gqa = query.shape[1] != key.shape[1]
    attend = flex_kernel(query.device)
    out = attend(query, key, value, block_mask=cached[2], scale=scaling, enable_gqa=gqa)  # (R, H, T, d)
    return out.transpose(1, 2).contiguous(), None
