"""The packed forward: rewards from `PackedBatch` rows, and when a model can take them.

`packed_rewards(model, batch)` runs `model.base_model` on the packed rows with their position ids
and segment layout (attention per segment: reward/fast/segment_attention.py) and applies `model.score`
at each sequence's reward token only; `supports_packing` decides once per model (architecture
allow-list + a numerical self-check against the padded forward) whether that is exact, and
otherwise the batch goes through the plain padded forward. Layout: reward/fast/packing.py.
`forward_counts(model)` says which of the two paths the model's micro-batches took.
"""

from __future__ import annotations

import collections
import weakref

import torch
from torch import nn
from transformers import PreTrainedModel

from reward.collate import PairwiseCollator
from reward.fast.packing import (
    SUPPORTED_ATTENTION,
    SUPPORTED_MODEL_TYPES,
    PackedBatch,
    PackingCollator,
    Rows,
    pack_pairs,
    warn_once,
)
from reward.fast.segment_attention import layout_tensor, use_segment_attention
from reward.model import compute_rewards, is_encoder, unwrap


def packed_rewards(model: PreTrainedModel, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen (B,), r_rejected (B,)) float32: the rewards of the padded forward, from the packed rows.

    Falls back to `compute_rewards` on the `PairwiseCollator` batch when `supports_packing` says
    no. Call it inside the same autocast context as `compute_rewards`. A PEFT-wrapped model is
    run through its adapted inner model (`get_base_model()`: same modules, LoRA layers in place).
    """
    if not supports_packing(model):
        _count(model, "padded")
        return _padded_rewards(model, batch)
    _count(model, "packed")
    return _packed_forward(unwrap(model), batch)


# --- which path ran ---------------------------------------------------------------------------------
_FORWARDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # unwrapped model -> Counter


def forward_counts(model: nn.Module) -> dict[str, int]:
    """{"packed": n, "padded": m}: how many micro-batches of `model` (or of its PEFT-unwrapped model)
    `packed_rewards` / `forward_segments` ran packed, and how many `packed_rewards` sent to the padded
    forward because packing is off for the model. The one-time self-check is not counted."""
    counts = _FORWARDS.get(unwrap(model), {})
    return {"packed": counts.get("packed", 0), "padded": counts.get("padded", 0)}


def _count(model: nn.Module, path: str) -> None:
    _FORWARDS.setdefault(unwrap(model), collections.Counter())[path] += 1


def _packed_forward(model: PreTrainedModel, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    if batch.pad_token_id != (pad := model.config.get_text_config().pad_token_id):
        raise ValueError(f"batch packed with pad_token_id={batch.pad_token_id}, the model reads rewards with {pad}")
    rewards = _segment_rewards(model, batch)  # (2B,)
    b = batch.margin.numel()
    return rewards[:b], rewards[b:]


def forward_segments(model: PreTrainedModel, batch: PackedBatch | Rows) -> torch.Tensor:
    """(S,) float32: the reward of every sequence laid out in `batch`'s rows (pairs or rankings), read at
    `batch.reward_index`. `model` is the unwrapped model, already known to support packing, and the
    rows were laid out with its pad_token_id. Counted in `forward_counts`."""
    _count(model, "packed")
    return _segment_rewards(model, batch)


def _segment_rewards(model: PreTrainedModel, batch: PackedBatch | Rows) -> torch.Tensor:
    use_segment_attention(model)  # for good: gradient checkpointing re-runs this forward in backward
    device = model.get_input_embeddings().weight.device
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


def _padded_rewards(model: PreTrainedModel, batch: PackedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [{"chosen_ids": c, "rejected_ids": r} for c, r in zip(batch.chosen_ids, batch.rejected_ids)]
    plain = PairwiseCollator(batch.pad_token_id)(pairs)
    device = model.get_input_embeddings().weight.device
    rewards = compute_rewards(model, plain["input_ids"].to(device), plain["attention_mask"].to(device))  # (2B,)
    return rewards[: len(pairs)], rewards[len(pairs) :]


def describe_forward(cfg, model: PreTrainedModel, collate) -> str:
    """The path training runs, for the start-up summary: packed rows with per-segment attention, or
    plain padded batches with the model's own attention (after the one-time support check)."""
    attention = unwrap(model).config._attn_implementation
    order = "length-grouped" if cfg.group_by_length else "shuffled (TRL's order)"
    if hasattr(collate, "describe"):  # grouped rankings (reward/ranked/collate.py)
        return collate.describe(model, order)
    if isinstance(collate, PackingCollator) and supports_packing(model):
        layout = "one padding-free row" if cfg.padding_free else "one row per pair"
        prefix = ", the shared prompt computed once" if cfg.share_prefix else ""
        attention = "per-segment attention (reward/fast/segment_attention.py)"
        return f"{order} micro-batches packed into {layout}{prefix}; {attention}"
    why = ""
    if is_encoder(unwrap(model)):
        why = " (an encoder's tokens attend to the whole sequence: nothing can be packed or shared)"
    elif cfg.padding_free or cfg.share_prefix:
        why = " (packing does not apply to this model: see the warning above)"
    return f"{order} micro-batches as plain padded (2B, T) batches{why}; {attention} attention (reward/collate.py)"


# --- support detection ----------------------------------------------------------------------------
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> bool, decided once


def supports_packing(model: PreTrainedModel) -> bool:
    """True if `packed_rewards` can run this model packed; decided (and any reason warned) once per model."""
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
    pairs = [
        {"chosen_ids": prompt + vocab[6:9], "rejected_ids": prompt + vocab[9:11] + [pad]},
        {"chosen_ids": prompt[:2] + vocab[11:13], "rejected_ids": prompt[:2] + vocab[13:18]},
        {"chosen_ids": vocab[18:21], "rejected_ids": vocab[18:20]},
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(model.device.type, enabled=False):
            want = torch.cat(_padded_rewards(model, pack_pairs(pairs, pad, share_prefix=False)))  # (2B,)
            got = [
                torch.cat(_packed_forward(model, pack_pairs(pairs, pad, budget, share)))  # (2B,)
                for budget, share in (("all", True), (8, False))
            ]
    finally:
        model.train(was_training)
    tol = 1e-4 if model.dtype in (torch.float32, torch.float64) else 5e-2
    return all(torch.allclose(g, want, rtol=tol, atol=tol) for g in got)
