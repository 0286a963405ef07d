"""Gradient accumulation is normalised by the pairs in the optimizer step: k micro-batches of b pairs
(with an uneven last one) give the same gradient as one batch of all of them."""

import json

import pytest
import torch
from datasets import Dataset

from reward.batching import optimizer_steps
from reward.collate import PairwiseCollator
from reward.config import TrainConfig
from reward.formatting import tokenize_pairs
from reward.loop import accumulate_gradients, train
from reward.metrics import MetricsWriter
from reward.model import load_model, resolve_precision
from reward.presets.synthetic import generate_pairs

FP32 = resolve_precision(False, False, torch.device("cpu"))


def tokenized(tokenizer, n: int, seed: int = 0) -> Dataset:
    ds, _ = tokenize_pairs(Dataset.from_list(generate_pairs(n, seed=seed)), tokenizer, "explicit prompt", 1024)
    return ds


def grads_of(model) -> list[torch.Tensor]:
    grads = [p.grad.detach().clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def test_uneven_micro_batches_give_the_big_batch_gradient(tiny_tokenizer):
    ds = tokenized(tiny_tokenizer, 7)
    rows = [ds[i] for i in range(7)]
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    model = load_model("tiny", tiny_tokenizer, seed=0)
    model.train()

    big = accumulate_gradients(model, [collate(rows)], FP32, center_coef=0.01)
    g_big = grads_of(model)
    small = accumulate_gradients(model, [collate(rows[:3]), collate(rows[3:6]), collate(rows[6:])], FP32, 0.01)
    g_small = grads_of(model)

    assert big.pairs == small.pairs == 7
    assert abs(big.summary()["loss"] - small.summary()["loss"]) < 1e-6
    for a, b in zip(g_big, g_small):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()
    assert any(g.abs().sum() > 0 for g in g_big)  # the comparison is not between zeros


def test_mean_of_micro_batch_means_would_differ(tiny_tokenizer):
    """Guard that the test above can fail: TRL-style "mean / k" differs on uneven micro-batches."""
    ds = tokenized(tiny_tokenizer, 7)
    rows = [ds[i] for i in range(7)]
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    model = load_model("tiny", tiny_tokenizer, seed=0)
    accumulate_gradients(model, [collate(rows)], FP32, None)
    g_big = grads_of(model)
    for part in (rows[:6], rows[6:]):  # per-micro-batch mean, divided by k = 2
        accumulate_gradients(model, [collate(part)], FP32, None)
        for p in model.parameters():
            p.grad /= 2
    g_trl = [p.grad for p in model.parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(g_big, g_trl)) > 1e-4


def test_step_plan_groups_the_same_pairs(tiny_tokenizer):
    ds = tokenized(tiny_tokenizer, 10)
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    big = optimizer_steps(ds, collate, TrainConfig(per_device_train_batch_size=8, group_by_length=False))
    small = optimizer_steps(
        ds, collate, TrainConfig(per_device_train_batch_size=4, gradient_accumulation_steps=2, group_by_length=False)
    )
    for _ in range(4):  # two epochs: steps of 8 + 2 pairs
        (e1, mb1, n1), (e2, mb2, n2) = next(big), next(small)
        assert n1 == n2 == sum(m["margin"].numel() for m in mb1)
        assert e1 == e2
        assert sum(m["margin"].numel() for m in mb1) == sum(m["margin"].numel() for m in mb2)
        ids1 = {tuple(r[r != 0].tolist()) for m in mb1 for r in m["input_ids"]}
        ids2 = {tuple(r[r != 0].tolist()) for m in mb2 for r in m["input_ids"]}
        assert ids1 == ids2


def test_training_with_accumulation_matches_big_batches(tiny_tokenizer, tmp_path):
    """The whole loop: 3 x 2 and 2 x 3 accumulation reach the weights of 6 x 1. 10 pairs: each epoch ends
    on a step of 4 pairs, which 3 x 2 splits into micro-batches of 3 and 1 (a mean of micro-batch
    means would weight that 1 pair 1/2 instead of 1/4)."""
    ds = tokenized(tiny_tokenizer, 10)
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    plan = optimizer_steps(ds, collate, TrainConfig(per_device_train_batch_size=3, gradient_accumulation_steps=2))
    sizes = [[mb["margin"].numel() for mb in next(plan)[1]] for _ in range(4)]
    assert sizes == [[3, 3], [3, 1], [3, 3], [3, 1]]  # a really uneven step, in both epochs
    weights = []
    for b, k in [(6, 1), (3, 2), (2, 3)]:
        cfg = TrainConfig(
            per_device_train_batch_size=b,
            gradient_accumulation_steps=k,
            max_steps=4,
            learning_rate=1e-4,
            disable_tqdm=True,
            eval_strategy="no",
            logging_steps=1,
            group_by_length=False,  # grouping depends on the batch size; the order must not
        )
        model = load_model("tiny", tiny_tokenizer, seed=0)
        train(cfg, model, ds, collate=collate, precision=FP32, writer=MetricsWriter(tmp_path / f"{b}.jsonl"))
        weights.append([p.detach().clone() for p in model.parameters()])
    initial = list(load_model("tiny", tiny_tokenizer, seed=0).parameters())
    moved = max((w - i).abs().max().item() for w, i in zip(weights[0], initial))
    assert moved > 2e-4  # it trained (Adam moves a weight by up to ~lr per step)
    for other in weights[1:]:
        # Adam divides by sqrt(v): float noise in near-zero gradients can move a weight by a few
        # percent of lr, so compare weights to lr/10 and the per-step losses and gradient norms tightly.
        for a, b in zip(weights[0], other):
            assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
    records = [read(tmp_path / f"{b}.jsonl") for b in (6, 3, 2)]
    assert len(records[0]) == 4
    for other in records[1:]:
        assert [r["loss"] for r in other] == pytest.approx([r["loss"] for r in records[0]], abs=1e-6)
        # the pre-clip norm of each step's gradient: the uneven steps 2 and 4 included
        assert [r["grad_norm"] for r in other] == pytest.approx([r["grad_norm"] for r in records[0]], rel=1e-5)


def test_packed_training_matches_the_padded_loop(tiny_tokenizer, tmp_path):
    """Padding-free packing + shared prefix change the batching of the computation, not the math:
    same per-step losses and (up to float noise amplified by Adam) the same weights as plain padding."""
    from reward.batching import build_collator
    from reward.fast.packed_forward import forward_counts

    ds = tokenized(tiny_tokenizer, 24, seed=5)
    runs = {}
    for name, fast in (("plain", False), ("packed", True)):
        cfg = TrainConfig(
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            max_steps=4,
            learning_rate=1e-4,
            disable_tqdm=True,
            eval_strategy="no",
            logging_steps=1,
            group_by_length=False,
            padding_free=fast,
            share_prefix=fast,
        )
        model = load_model("tiny", tiny_tokenizer, seed=0)
        collate = build_collator(cfg, tiny_tokenizer.pad_token_id)
        assert isinstance(collate, PairwiseCollator) != fast
        train(cfg, model, ds, collate=collate, precision=FP32, writer=MetricsWriter(tmp_path / f"{name}.jsonl"))
        runs[name] = (read(tmp_path / f"{name}.jsonl"), [p.detach() for p in model.parameters()])
        # every micro-batch (4 steps x 2) of the packed run took the packed forward, none fell back
        assert forward_counts(model) == ({"packed": 8, "padded": 0} if fast else {"packed": 0, "padded": 0})
    (plain, w_plain), (packed, w_packed) = runs["plain"], runs["packed"]
    assert [r["loss"] for r in packed] == pytest.approx([r["loss"] for r in plain], abs=1e-5)
    assert [r["accuracy"] for r in packed] == [r["accuracy"] for r in plain]
    assert all(p["tokens_per_s"] > 0 for p in packed)
    for a, b in zip(w_plain, w_packed):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]
