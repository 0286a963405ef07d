"""Gradient accumulation is normalised by the pairs in the optimizer step: k micro-batches of b pairs
(with an uneven last one) give the same gradient as one batch of all of them."""

import dataclasses
import json

import pytest
import torch
from conftest import steps_of
from datasets import Dataset
from transformers import GPT2Config, GPT2ForSequenceClassification

from reward.batching import BatchPlan, Shuffled, optimizer_steps
from reward.collate import PairwiseCollator
from reward.config import TrainConfig, pick
from reward.fast.packing import PackingCollator
from reward.formatting import tokenize_pairs
from reward.loop import (
    Cadence,
    OneProcess,
    OptimizerOptions,
    accumulate_gradients,
    apply_update,
    build_optimizer,
    build_scheduler,
    train,
    warmup_steps,
)
from reward.loss import PairObjective
from reward.metrics import MetricsWriter
from reward.model import resolve_precision
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import tiny_model
from reward.run.parts import train_with, training_collator

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
    model = tiny_model(tiny_tokenizer, seed=0)
    model.train()

    centred = PairObjective(center_rewards_coefficient=0.01)
    big = accumulate_gradients(model, [collate(rows)], centred, FP32)
    g_big = grads_of(model)
    small = accumulate_gradients(model, [collate(rows[:3]), collate(rows[3:6]), collate(rows[6:])], centred, FP32)
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
    model = tiny_model(tiny_tokenizer, seed=0)
    accumulate_gradients(model, [collate(rows)], PairObjective(), FP32)
    g_big = grads_of(model)
    for part in (rows[:6], rows[6:]):  # per-micro-batch mean, divided by k = 2
        accumulate_gradients(model, [collate(part)], PairObjective(), FP32)
        for p in model.parameters():
            p.grad /= 2
    g_trl = [p.grad for p in model.parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(g_big, g_trl)) > 1e-4


def test_training_with_accumulation_matches_big_batches(tiny_tokenizer, tmp_path):
    """The whole loop: 3 x 2 and 2 x 3 accumulation reach the weights of 6 x 1. 10 pairs: each epoch ends
    on a step of 4 pairs, which 3 x 2 splits into micro-batches of 3 and 1 (a mean of micro-batch
    means would weight that 1 pair 1/2 instead of 1/4)."""
    ds = tokenized(tiny_tokenizer, 10)
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    plan = steps_of(ds, collate, TrainConfig(per_device_train_batch_size=3, gradient_accumulation_steps=2))
    sizes = [[mb.margin.numel() for mb in next(plan)[1]] for _ in range(4)]
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
        model = tiny_model(tiny_tokenizer, seed=0)
        train_with(cfg, model, ds, collate=collate, precision=FP32, writer=MetricsWriter(tmp_path / f"{b}.jsonl"))
        weights.append([p.detach().clone() for p in model.parameters()])
    initial = list(tiny_model(tiny_tokenizer, seed=0).parameters())
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
        model = tiny_model(tiny_tokenizer, seed=0)
        collate = training_collator(cfg, tiny_tokenizer.pad_token_id)
        assert isinstance(collate, PairwiseCollator) != fast
        writer = MetricsWriter(tmp_path / f"{name}.jsonl")
        train_with(cfg, model, ds, collate=collate, precision=FP32, writer=writer)
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


def test_no_weight_decay_on_biases_and_norms(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    decay, no_decay = build_optimizer(model, pick(OptimizerOptions, TrainConfig(weight_decay=0.1))).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all("norm" in names[id(p)] for p in no_decay["params"])  # Llama has no biases
    assert {names[id(p)] for p in decay["params"]} >= {"score.weight", "model.embed_tokens.weight"}
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("linear", [0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8]),  # warmup 2 steps, then (10 - s) / 8
        ("cosine", [0.0, 0.5, 1.0, 0.9619, 0.8536, 0.6913]),  # (1 + cos(π (s - 2) / 8)) / 2
    ],
)
def test_warmup_then_schedule(kind, expected, tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    options = pick(OptimizerOptions, TrainConfig(learning_rate=1.0, warmup_ratio=0.2, lr_scheduler_type=kind))
    optimizer = build_optimizer(model, options)
    scheduler = build_scheduler(optimizer, options, total_steps=10)
    lrs = []
    for _ in expected:
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx(expected, abs=1e-4)
    assert warmup_steps(pick(OptimizerOptions, TrainConfig(warmup_steps=3, warmup_ratio=0.5)), 10) == 3  # steps win
    assert warmup_steps(pick(OptimizerOptions, TrainConfig(warmup_ratio=0.25)), 10) == 3  # ceil(2.5), as HF


def test_clipping_reports_the_norm_before_and_clips_to_max(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.1)
    expected = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())).item()
    clipped = []

    class Recorder(torch.optim.SGD):  # records the gradient norm the update sees
        def step(self, closure=None):
            clipped.append(torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())).item())

    optimizer = Recorder(model.parameters(), lr=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    norm = apply_update(model, optimizer, scheduler, resolve_precision(False, False, torch.device("cpu")), 1.0)
    assert norm == pytest.approx(expected, rel=1e-4) and expected > 1  # fp32 sums of 0.5M squares
    assert clipped[0] == pytest.approx(1.0, rel=1e-4)


# --- the loop's own duties: each caught here, not only by the TRL parity tests ----------------------------
def options(**changes) -> tuple[BatchPlan, OptimizerOptions, Cadence]:
    """The loop's option groups for a few steps of 4 pairs, one record per step, no evaluation."""
    cfg = TrainConfig(
        per_device_train_batch_size=4,
        max_steps=4,
        learning_rate=1e-3,
        warmup_ratio=0.0,
        logging_steps=1,
        eval_strategy="no",
        disable_tqdm=True,
        group_by_length=False,
    )
    cfg = dataclasses.replace(cfg, **changes)
    return pick(BatchPlan, cfg), pick(OptimizerOptions, cfg), pick(Cadence, cfg)


def run_loop(model, ds, tmp_path, collate, order=None, **hooks) -> list[dict]:
    """reward/loop.py `train` on `ds` with the options above (or `hooks["optim"]`, ...); the records."""
    batches, optim, cadence = options()
    parts = {"batches": batches, "optim": optim, "cadence": cadence}
    parts |= {k: hooks.pop(k) for k in list(hooks) if k in parts}
    path = tmp_path / f"m{len(list(tmp_path.glob('m*.jsonl')))}.jsonl"
    train(
        model,
        ds,
        collate=collate,
        order=order or Shuffled(len(ds), 0),
        objective=hooks.pop("objective", PairObjective()),
        precision=FP32,
        writer=MetricsWriter(path),
        **parts,
        **hooks,
    )
    return read(path)


def dropout_gpt2(tokenizer) -> torch.nn.Module:
    """A 2-layer GPT-2 reward model with dropout on (0.5): a forward in train mode is random."""
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256, num_labels=1,
        resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return GPT2ForSequenceClassification(config)


def test_training_forwards_run_in_train_mode_even_after_an_evaluation_that_left_eval_mode(tiny_tokenizer, tmp_path):
    """The model arrives in eval mode, and the evaluator leaves it there: every training forward still runs
    with dropout on (model.train() at the start and after each evaluation)."""
    model = dropout_gpt2(tiny_tokenizer).eval()
    seen = []  # (phase, dropout module's training flag) per forward
    phase = {"now": "train"}
    model.transformer.drop.register_forward_pre_hook(lambda module, args: seen.append((phase["now"], module.training)))

    def evaluator(model) -> dict:  # an evaluation that forgets to give the training state back
        phase["now"] = "eval"
        model.eval()
        with torch.no_grad():
            model(input_ids=torch.tensor([[5, 6, 7]]))
        phase["now"] = "train"
        return {"": {"loss": 0.0}}

    _, _, cadence = options(eval_strategy="steps", eval_steps=1)
    run_loop(model, tokenized(tiny_tokenizer, 12), tmp_path, PairwiseCollator(tiny_tokenizer.pad_token_id),
             cadence=cadence, evaluator=evaluator)  # fmt: skip
    assert [p for p, _ in seen].count("eval") == 4 and [p for p, _ in seen].count("train") == 4 * 1
    assert all(training for p, training in seen if p == "train")  # dropout on for every training step


def test_a_scheduled_checkpoint_holds_the_state_after_its_steps_update(tiny_tokenizer, tmp_path):
    """`save` sees the weights, AdamW moments and schedule of the step it is named after: the update of that
    step is in them (weights equal to what `should_stop` saw after the step, AdamW's step count = the step)."""
    model = tiny_model(tiny_tokenizer, seed=0)
    after_step, saved = {}, {}

    def should_stop(step: int) -> bool:
        after_step[step] = {k: v.clone() for k, v in model.state_dict().items()}
        return False

    def save(progress) -> None:
        adam_steps = {int(s["step"]) for s in progress.optimizer.state.values()}
        saved[progress.step] = ({k: v.clone() for k, v in model.state_dict().items()}, adam_steps,
                                progress.scheduler.last_epoch)  # fmt: skip

    _, _, cadence = options(save_steps=2)
    run_loop(model, tokenized(tiny_tokenizer, 16), tmp_path, PairwiseCollator(tiny_tokenizer.pad_token_id),
             cadence=cadence, save=save, should_stop=should_stop)  # fmt: skip
    assert sorted(saved) == [2, 4]
    for step, (weights, adam_steps, schedule_steps) in saved.items():
        assert adam_steps == {step} and schedule_steps == step
        assert all(torch.equal(weights[k], after_step[step][k]) for k in weights)
    assert any(not torch.equal(saved[2][0][k], saved[4][0][k]) for k in saved[2][0])  # steps 3, 4 moved them


def test_each_step_gets_a_gradient_of_its_own_micro_batches_only(tiny_tokenizer, tmp_path):
    """With lr 0 the weights stay put, so every step's logged gradient norm must be the norm of that step's
    micro-batches alone, recomputed from scratch (a gradient left over from the step before would add to it)."""
    ds = tokenized(tiny_tokenizer, 16)
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    model = tiny_model(tiny_tokenizer, seed=0)
    batches, optim, _ = options(learning_rate=0.0, max_grad_norm=0.0)
    records = run_loop(model, ds, tmp_path, collate, optim=optim, batches=batches)
    fresh = tiny_model(tiny_tokenizer, seed=0).train()
    steps = optimizer_steps(ds, collate, Shuffled(len(ds), 0), batches)
    for record in records:
        _, micro_batches, units = next(steps)
        fresh.zero_grad(set_to_none=True)
        accumulate_gradients(fresh, micro_batches, PairObjective(), FP32, units)
        norm = torch.nn.utils.clip_grad_norm_(fresh.parameters(), float("inf")).item()
        assert record["grad_norm"] == pytest.approx(norm, rel=1e-5), record["step"]
    assert len({round(r["grad_norm"], 6) for r in records}) == 4  # four different steps, four norms


def test_apply_update_leaves_no_gradient_behind(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer, seed=0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optim = options()[1]
    optimizer = build_optimizer(model, optim)
    apply_update(model, optimizer, build_scheduler(optimizer, optim, 10), FP32, 1.0)
    assert all(p.grad is None for p in model.parameters())


def test_the_logged_learning_rate_is_the_one_each_update_used(tiny_tokenizer, tmp_path):
    """Warmup 2 of 6 steps at peak 1e-3, linear: updates 1..6 use lr (0, 1/2, 1, 3/4, 1/2, 1/4) x 1e-3
    (transformers' schedule: s / W, then (T − s) / (T − W) for the s-th update, s from 0); the first update
    is at lr 0 and leaves every weight as it was."""
    model = tiny_model(tiny_tokenizer, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    after_first = {}

    def should_stop(step: int) -> bool:
        if step == 1:
            after_first.update({k: v.clone() for k, v in model.state_dict().items()})
        return False

    batches, optim, _ = options(max_steps=6, warmup_steps=2, lr_scheduler_type="linear")
    records = run_loop(model, tokenized(tiny_tokenizer, 24), tmp_path, PairwiseCollator(tiny_tokenizer.pad_token_id),
                       batches=batches, optim=optim, should_stop=should_stop)  # fmt: skip
    assert [r["lr"] for r in records] == pytest.approx([0.0, 5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4], abs=1e-12)
    assert all(torch.equal(before[k], after_first[k]) for k in before)


@pytest.mark.parametrize("layout", ["padded", "packed", "packed-rows", "unshared"])
def test_every_layout_trains_on_the_margin_column(tiny_tokenizer, layout):
    """The loss of a micro-batch reads its pairs' margins whatever its layout (reward/loss.py `PairObjective`):
    the same loss and gradient as the padded batch, and not those of the same pairs without margins."""
    rows = [{**row, "margin": m} for row, m in zip(tokenized(tiny_tokenizer, 6), [0.5, 2.0, 0.0, 1.0, 3.0, 0.25])]
    pad = tiny_tokenizer.pad_token_id
    collate = {
        "padded": PairwiseCollator(pad),
        "packed": PackingCollator(pad, "all", share_prefix=True),
        "packed-rows": PackingCollator(pad, 64, share_prefix=True),
        "unshared": PackingCollator(pad, "all", share_prefix=False),
    }[layout]
    model = tiny_model(tiny_tokenizer, seed=0).train()

    def loss_and_grads(batch_rows, collate):
        model.zero_grad(set_to_none=True)
        totals = accumulate_gradients(model, [collate(batch_rows)], PairObjective(), FP32)
        return totals.summary()["loss"], [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads(rows, collate)
    want_loss, want_grads = loss_and_grads(rows, PairwiseCollator(pad))
    no_margin_loss, _ = loss_and_grads([{**r, "margin": 0.0} for r in rows], collate)
    assert loss == pytest.approx(want_loss, abs=1e-5) and abs(loss - no_margin_loss) > 0.1
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class Recording(OneProcess):
    """One process that records what the loop asks of it, in order."""

    def __init__(self) -> None:
        self.calls = []

    def extra_passes(self, num_passes):
        self.calls.append(("extra_passes", num_passes))
        return 0

    def sync_gradients(self, model):
        self.calls.append(("sync_gradients",))

    def clip_gradients(self, model, max_norm):
        self.calls.append(("clip_gradients",))
        return super().clip_gradients(model, max_norm)

    def reduce(self, totals):
        self.calls.append(("reduce", totals.pairs))
        return totals

    def total(self, value):
        self.calls.append(("total", value))
        return value

    def any(self, flag):
        self.calls.append(("any",))
        return flag


def test_processes_meet_where_the_plan_says_once_per_step(tiny_tokenizer, tmp_path):
    """The loop asks the `processes` it is given (reward/parallel/plan.py's Plan under torchrun), never torch.
    distributed itself, once a step and in this order: the extra passes, the gradient sync, the totals."""
    ds = tokenized(tiny_tokenizer, 10)
    processes = Recording()
    batches, _, _ = options(max_steps=2, per_device_train_batch_size=3, gradient_accumulation_steps=2)
    run_loop(tiny_model(tiny_tokenizer, seed=0), ds, tmp_path, PairwiseCollator(tiny_tokenizer.pad_token_id),
             batches=batches, processes=processes)  # fmt: skip
    names = [c[0] for c in processes.calls]
    per_step = ["extra_passes", "sync_gradients", "reduce", "clip_gradients", "total", "any"]
    assert names == per_step * 2
    assert [c for c in processes.calls if c[0] in ("extra_passes", "reduce")] == [
        ("extra_passes", 2), ("reduce", 6), ("extra_passes", 2), ("reduce", 4)  # 10 pairs: 3 + 3, then 3 + 1
    ]  # fmt: skip


def test_restore_puts_the_run_at_its_step_and_the_data_order_follows(tiny_tokenizer, tmp_path):
    """`restore` sets the loop's Progress (reward/run/state.py does it from a checkpoint): the loop goes on from
    the next step, on that step's micro-batches of the shared order."""
    ds = tokenized(tiny_tokenizer, 24)
    plain, seen = PairwiseCollator(tiny_tokenizer.pad_token_id), []

    def collate(rows: list[dict]):  # records which pairs each micro-batch holds
        seen.append([tuple(r["chosen_ids"]) for r in rows])
        return plain(rows)

    def restore(progress) -> None:
        progress.step = 2

    records = run_loop(tiny_model(tiny_tokenizer, seed=0), ds, tmp_path, collate, restore=restore)
    assert [r["step"] for r in records] == [3, 4]
    ids = optimizer_steps(ds, lambda rows: [tuple(r["chosen_ids"]) for r in rows], Shuffled(len(ds), 0), options()[0])
    order = [mb for _, mbs, _ in (next(ids) for _ in range(4)) for mb in mbs]  # steps 1..4, one micro-batch each
    assert seen == order[2:]
