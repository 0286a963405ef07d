"""One optimizer step of the default run, from a preference row to the AdamW update, with its numbers.

    python -m reward.presets.tour

Builds what `python train.py` builds (the `tiny` model, the generated task, the default options),
takes the first optimizer step's micro-batch of the default data order, and prints every stage of
that step through the project's own functions: the formatted strings, the token ids, the collated
(2B, T) tensors, the rewards, Δ, the loss, ∂L/∂r, the gradient norm, and what AdamW's first update
does to the weights. docs/tour.md walks through the output; tests/test_docs.py checks that the
output printed there is what this prints today.

It uses the plain padded collator (the reference the faster packed path is tested against) and
prints the packed layout beside it, with the largest difference between the two paths' rewards.
"""

from __future__ import annotations

import torch

from reward.batching import BatchPlan, optimizer_steps, pair_lengths
from reward.collate import PairBatch, PairwiseCollator
from reward.config import TrainConfig, pick
from reward.data import load_preferences
from reward.fast.grouping import LengthGrouped
from reward.fast.packing import pack_pairs, packed_rewards
from reward.formatting import TRL_FORMAT, encode_pair, format_text, tokenize_pairs
from reward.loop import OptimizerOptions, accumulate_gradients, apply_update, build_optimizer, build_scheduler
from reward.loss import PairObjective, bradley_terry_loss
from reward.metrics import loss_metrics
from reward.model import compute_rewards, resolve_precision
from reward.presets.synthetic import synthetic_dataset
from reward.presets.tiny import tiny_model, tokenizer_for

SHOWN = 2  # pairs printed in full


def fmt(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values.tolist()) + "]"


def main() -> None:
    cfg = TrainConfig()  # the defaults of `python train.py`
    torch.manual_seed(cfg.seed)
    rows = synthetic_dataset(cfg.dataset_name, cfg.synthetic_num_pairs)  # what reward/recipe.py reads for it
    data = load_preferences(rows, seed=cfg.seed, source=cfg.dataset_name)
    tokenizer = tokenizer_for(cfg.model_name_or_path)
    model = tiny_model(tokenizer, seed=cfg.seed)
    train_ds, _ = tokenize_pairs(data.train, tokenizer, data.format, cfg.max_length)
    collate = PairwiseCollator(tokenizer.pad_token_id)
    order, batches = LengthGrouped(pair_lengths(train_ds), cfg.seed), pick(BatchPlan, cfg)  # the default order

    row = data.train[0]
    print("1. a preference row (reward/presets/synthetic.py, read by reward/data.py):")
    print(f"   prompt {row['prompt']!r} | chosen {row['chosen']!r} | rejected {row['rejected']!r}")
    print("2. the strings that are tokenized: prompt + response + EOS (reward/formatting.py):")
    for side in ("chosen", "rejected"):
        print(f"   {side:<8} {format_text(row['prompt'] + row[side], tokenizer, TRL_FORMAT)!r}")
    ids = encode_pair(row, tokenizer)
    print("3. token ids (the tokenizer puts <s> = 1 in front; </s> = 2 ends each):")
    for side in ("chosen", "rejected"):
        print(f"   {side:<8} {len(ids[f'{side}_ids'])} tokens {ids[f'{side}_ids']}")

    _, micro_batches, pairs = next(optimizer_steps(train_ds, collate, order, batches))  # step 1 of the default order
    batch = micro_batches[0]
    b = batch.margin.numel()
    real = batch.sequence_tokens
    where = "length-grouped (reward/fast/grouping.py), collated (reward/collate.py)"
    print(f"4. step 1's micro-batch: {pairs} pairs, {where}:")
    print(f"   input_ids {tuple(batch.input_ids.shape)} = [all chosen; all rejected], right-padded with <pad> = 0")
    pad = batch.input_ids.numel() - real
    shape = tuple(batch.attention_mask.shape)
    print(f"   attention_mask {shape}: {real} real tokens, {pad} padding | margin {tuple(batch.margin.shape)}: 0s")
    packed = pack_pairs([{"chosen_ids": c, "rejected_ids": r} for c, r in zip(*train_rows(batch, b))], 0)
    print(
        f"   packed instead (reward/fast/packing.py, the default): input_ids {tuple(packed.input_ids.shape)}, "
        f"{packed.num_tokens} tokens, the prompt of each pair once"
    )

    with torch.no_grad():
        rewards = compute_rewards(model, batch.input_ids, batch.attention_mask)  # (2B,)
        r_c, r_r = rewards[:b], rewards[b:]  # (B,), (B,)
        p_c, p_r = packed_rewards(model, packed)  # (B,), (B,)
    out = bradley_terry_loss(r_c, r_r, batch.margin)
    print("5. rewards: the `score` head at each row's last non-pad token (reward/model.py), first pairs:")
    print(f"   r_chosen {fmt(r_c[:SHOWN])} r_rejected {fmt(r_r[:SHOWN])}")
    gap = torch.cat([p_c - r_c, p_r - r_r]).abs().max().item()
    # printed as a bound: the last bits depend on the matmul kernels' blocking, which varies by machine
    print(f"   packed path, max |difference| over all {2 * b}: {'< 1e-6' if gap < 1e-6 else f'{gap:.1e}'}")
    delta = r_c - r_r  # (B,)
    print("6. Δ = r_chosen − r_rejected and ℓ = −log σ(Δ) (reward/loss.py):")
    print(f"   Δ {fmt(delta[:SHOWN])} ℓ {fmt(-torch.nn.functional.logsigmoid(delta[:SHOWN]))}")
    print(
        f"   L = mean ℓ over {b} pairs = {out.loss.item():.4f} (log 2 = 0.6931: a random head is at chance) | "
        f"accuracy {loss_metrics(out)['accuracy']:.4f}"
    )
    print(
        f"7. ∂L/∂r_chosen = (σ(Δ) − 1) / N = {fmt((torch.sigmoid(delta[:SHOWN]) - 1) / b)}, ∂L/∂r_rejected the opposite"
    )

    precision = resolve_precision(False, False, torch.device("cpu"))
    options = pick(OptimizerOptions, cfg)
    optimizer = build_optimizer(model, options)
    scheduler = build_scheduler(optimizer, options, total_steps=676)  # the default run's 676 steps
    steps = optimizer_steps(train_ds, collate, order, batches)
    model.train()
    for step in (1, 2):
        _, micro_batches, pairs = next(steps)
        before = [p.detach().clone() for p in model.parameters()]
        accumulate_gradients(model, micro_batches, PairObjective(), precision, pairs)  # Σ ℓ_i / N, backward
        head = model.score.weight.grad.norm().item()
        lr = scheduler.get_last_lr()[0]
        grad_norm = apply_update(model, optimizer, scheduler, precision, cfg.max_grad_norm)  # clip, AdamW, schedule
        moved = max((p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before))
        if step == 1:
            print(
                f"8. backward (reward/loop.py): gradient norm {grad_norm:.4f} before clipping to {cfg.max_grad_norm}"
                f" (the score head's: {head:.4f})"
            )
            print(f"9. AdamW, step 1 of 676 at lr {lr:.3e}: linear warmup starts from 0 (HF's schedule, as TRL), so")
            print(f"   nothing moves yet (largest change of a weight: {moved:.3e}); the moments m, v are updated")
        else:
            print(f"   step 2, its own micro-batch, at lr {lr:.3e} (1e-4 x 1/68 of the 10 % warmup):")
            change = f"largest change of a weight {moved:.3e}"
            print(f"   gradient norm {grad_norm:.4f}, {change}: about lr (AdamW: m / √v ≈ ±1)")


def train_rows(batch: PairBatch, b: int) -> tuple[list[list[int]], list[list[int]]]:
    """The (chosen, rejected) token ids of the collated batch, without its padding."""
    mask = batch.attention_mask.bool()  # (2B, T)
    rows = [batch.input_ids[i][mask[i]].tolist() for i in range(2 * b)]
    return rows[:b], rows[b:]


if __name__ == "__main__":
    main()
