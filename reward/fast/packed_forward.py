"""The packed forward: rewards from rows of segments (reward/fast/layout.py), and when a model can take them.

`forward_segments(model, rows, pad_token_id)` runs `model.base_model` on the packed rows with their position ids
and segment layout (attention per segment: reward/fast/segment_attention.py) and applies `model.score`
at each sequence's reward token only; `supports_packing` decides once per model (architecture
allow-list + a numerical self-check against the padded forward) whether that is exact, and
otherwise the sequences go through the plain padded forward (`padded_forward`). Pairs:
reward/fast/packing.py; rankings: reward/ranked/collate.py; scoring: reward/fast/packed_scoring.py.
`forward_counts(model)` says which of the two paths the model's micro-batches took.
"""

from __future__ import annotations

import collections
import weakref

import torch
from torch import nn
from transformers import PreTrainedModel

from reward.collate import pad_right
from reward.fast.layout import Rows, lay_out, shared_segment, unshared_segment, warn_once
from reward.fast.segment_attention import layout_tensor, use_segment_attention
from reward.model import compute_rewards, is_encoder, model_device, unwrap

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "gpt2")  # each one checked in tests/test_packing.py
SUPPORTED_ATTENTION = ("sdpa", "eager", "reward_segments")  # switched to reward_segments on first use


# --- which path ran ---------------------------------------------------------------------------------
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # unwrapped model -> Counter


def forward_counts(model: nn.Module) -> dict[str, int]:
    """{"packed": n, "padded": m}: how many micro-batches of `model` (or of its PEFT-unwrapped model)
    `forward_segments` ran packed, and how many `padded_forward` ran padded because packing is off for
    the model. The one-time self-check is not counted."""
    counts = _FORWARDS.get(unwrap(model), {})
    return {"packed": counts.get("packed", 0), "padded": counts.get("padded", 0)}


def _count(model: nn.Module, path: str) -> None:
    _FORWARDS.setdefault(unwrap(model), collections.Counter())[path] += 1


def forward_segments(model: nn.Module, batch: Rows, pad_token_id: int) -> torch.Tensor:
    """(S,) float32: the reward of every sequence laid out in `batch`'s rows (`Rows`, or a pairs' `PackedBatch`:
    input_ids, position_ids, segments, reward_index), read at `batch.reward_index`. `model` (PEFT-wrapped or
    not) is already known to support packing; the rows were laid out with `pad_token_id`, which must be the
    model's (the head reads the reward before its first pad: a mismatch would move it). Counted in
    `forward_counts`."""
    inner = unwrap(model)
    if pad_token_id != (pad := inner.config.get_text_config().pad_token_id):
        raise ValueError(f"rows laid out with pad_token_id={pad_token_id}, the model reads rewards with {pad}")
    _count(inner, "packed")
    return _segment_rewards(inner, batch)


def padded_forward(model: PreTrainedModel, sequences: list[list[int]], pad_token_id: int) -> torch.Tensor:
    """(S,) float32: the sequences right-padded through the model's own forward, for a model packing does not
    apply to (`supports_packing` said no). Counted in `forward_counts` as "padded"."""
    _count(model, "padded")
    input_ids, attention_mask = pad_right(sequences, pad_token_id)  # (S, T)
    device = model_device(model)
    return compute_rewards(model, input_ids.to(device), attention_mask.to(device))  # (S,)


def _segment_rewards(model: PreTrainedModel, batch: Rows) -> torch.Tensor:
    use_segment_attention(model)  # for good: gradient checkpointing re-runs this forward in backward
    device = model_device(model)
    input_ids = batch.input_ids.to(device)  # (R, T)
    # A 4-D attention_mask is passed through untouched (transformers masking_utils.py:832-834), so
    # this (R, 1, 1, 1) placeholder stops the model from building an (R, 1, T, T) mask that the
    # segment attention would ignore anyway; `reward_segments` is the real layout.
    placeholder = torch.ones((input_ids.shape[0], 1, 1, 1), dtype=torch.bool, device=device)
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=placeholder,
        position_ids=batch.position_ids.to(device),  # (R, T)
        use_cache=False,
        reward_segments=layout_tensor(batch.segments),  # (S, W): a tensor, so torch.compile keeps it dynamic
    ).last_hidden_state  # (R, T, H)
    where = batch.reward_index.to(device)  # (S, 2)
    return model.score(hidden[where[:, 0], where[:, 1]]).squeeze(-1).float()  # (S,)


# --- support detection ----------------------------------------------------------------------------
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> bool, decided once


def supports_packing(model: PreTrainedModel) -> bool:
    """True if `forward_segments` can run this model packed (else the callers take `padded_forward`); decided,
    and any reason warned, once per model."""
    if model in _CHECKED:
        return _CHECKED[model]
    outer, model = model, unwrap(model)
    config = model.config
    attention = config._attn_implementation  # the self-check switches it; restored if packing is refused
    reason = None
    if is_encoder(model):
        reason = (
            "a bidirectional encoder: every token attends to the whole sequence, so nothing can be packed or shared"
        )
    elif config.model_type not in SUPPORTED_MODEL_TYPES:
        reason = f"model type {config.model_type!r} is not one of {SUPPORTED_MODEL_TYPES}"
    elif not isinstance(getattr(model, "score", None), nn.Module) or model.base_model is model:
        reason = "the model has no `score` head on a separate backbone"
    elif config._attn_implementation not in SUPPORTED_ATTENTION:
        reason = f"attention {config._attn_implementation!r} is not sdpa or eager (flash/flex kernels are not switched)"
    elif "sliding_attention" in (getattr(config, "layer_types", None) or []):
        reason = "the segment attention has no sliding window"
    elif config.get_text_config().pad_token_id is None:
        reason = "config.pad_token_id is not set, so the reward token is undefined for padded batches"
    elif not _self_check(model):
        reason = "packed rewards differ from the padded forward on the self-check example"
    if reason:
        config._attn_implementation = attention
        warn_once(f"packing / shared prefix off, using the padded forward: {reason}")
    _CHECKED[outer] = reason is None
    return reason is None


def _self_check(model: PreTrainedModel) -> bool:
    """Packed (one row with shared prefixes; rows of a budget, unshared) vs padded rewards on a fixed
    example, eval mode, no autocast."""
    pad = model.config.get_text_config().pad_token_id
    vocab = [i for i in range(model.get_input_embeddings().weight.shape[0]) if i != pad]
    vocab = (vocab * 40)[:40]  # non-pad ids, repeated if the vocabulary is tiny
    prompt = vocab[1:6]
    pairs = [  # (chosen, rejected): a shared prompt with a pad id inside, a shorter shared one, none
        (prompt + vocab[6:9], prompt + vocab[9:11] + [pad]),
        (prompt[:2] + vocab[11:13], prompt[:2] + vocab[13:18]),
        (vocab[18:21], vocab[18:20]),
    ]
    sequences = [side for pair in pairs for side in pair]  # sequence 2i is chosen i, 2i + 1 rejected i
    shared = [shared_segment([(2 * i, c), (2 * i + 1, r)], pad) for i, (c, r) in enumerate(pairs)]
    unshared = [unshared_segment(n, ids, pad) for n, ids in enumerate(sequences)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(model.device.type, enabled=False):
            device = model_device(model)
            input_ids, attention_mask = pad_right(sequences, pad)  # (S, T)
            want = compute_rewards(model, input_ids.to(device), attention_mask.to(device))  # (S,)
            got = [
                _segment_rewards(model, lay_out(segments, len(sequences), pad, budget))  # (S,)
                for segments, budget in ((shared, "all"), (unshared, 8))
            ]
    finally:
        model.train(was_training)
    tol = 1e-4 if model.dtype in (torch.float32, torch.float64) else 5e-2
    return all(torch.allclose(g, want, rtol=tol, atol=tol) for g in got)
