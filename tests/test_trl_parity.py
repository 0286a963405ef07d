r"""Step-for-step parity with TRL's `RewardTrainer` (trl 1.16, transformers 5.23, accelerate 1.15).

Both implementations get a deep copy of one initial model, the same raw rows, the same AdamW
kernel (`optim`, fused by default on both sides), schedule, clipping and data order, in fp32 on the CPU with dropout off
(`benchmarks/trl_parity.py` has the exact RewardConfig, and why no sampler override is needed:
accelerate's `SeedableRandomSampler` draws `randperm(n, seed + epoch)`, which is our `epoch_order`).
On even micro-batches the two agree to the last bit except the logged loss (~1e-7, summation order).

What TRL does for gradient accumulation in this version (paths under site-packages):

- `RewardTrainer.loss_is_scaled_for_ga = False` (trl/trainer/reward_trainer.py:330), so
  `Trainer.training_step` divides the loss `compute_loss` returns by
  `self.current_gradient_accumulation_steps` (transformers/trainer.py:2103-2111), which
  `Trainer._run_epoch` sets to `len(batch_samples)`: the number of micro-batches in *this*
  optimizer step, fewer in an epoch's last step (transformers/trainer.py:1862, 1877).
- `num_items_in_batch` is passed (transformers/trainer.py:1909, 2082) but is `None`:
  `_get_num_items_in_batch` only counts when the batch has a `"labels"` key
  (transformers/trainer.py:2310), and the preference collator yields none. `RewardTrainer.compute_loss`
  ignores the argument anyway: its loss is the micro-batch *mean*
  `-logsigmoid(r_c - r_r [- margin]).mean() [+ coef * mean((r_c + r_r)**2)]` (reward_trainer.py:790-795).

So for an optimizer step of K micro-batches B_1..B_K with b_j = |B_j| pairs, N = Σ_j b_j, and
per-pair loss ℓ_i (Bradley–Terry term plus centring term):

    TRL:   L_trl  = (1/K) Σ_j (1/b_j) Σ_{i∈B_j} ℓ_i         (each micro-batch mean / K)
    ours:  L_ours = (1/N) Σ_j Σ_{i∈B_j} ℓ_i                  (every pair weighted 1/N)

    L_trl − L_ours = Σ_j Σ_{i∈B_j} ℓ_i · (1/(K·b_j) − 1/N)

It is 0 whenever all b_j are equal (then K·b_j = N), including an epoch's last step with fewer but
full micro-batches; the gradients carry the same weights. With micro-batches 4, 4, 2 (N = 10, K = 3)
TRL weights each pair of the small micro-batch 1/6 and the others 1/12; we weight all 1/10.
`test_uneven_micro_batches_differ_by_the_formula` checks TRL's loss and grad norm against this on
such a step, after an even step on which both agree.

TRL's logged training metrics are means over micro-batches too (`RewardTrainer.log` averages the
lists `compute_loss` appends to, reward_trainer.py:826): accuracy, margin and mean reward are the mean
of micro-batch means, and `min_reward`/`max_reward` the *mean of micro-batch minima/maxima*, not the
step's min/max (ours). With K > 1 those two differ even on even micro-batches, so they are compared
only for K = 1 (and checked against that definition in the uneven test).

Evaluation: `eval_loss` is pair-weighted like ours, even with a smaller last batch: each batch loss is
repeated `eval_batch_size` times (transformers/trainer.py:2947, 2999) and accelerate's
`gather_for_metrics` keeps only the last batch's real rows (accelerate/accelerator.py:3165). But
`eval_accuracy`, `eval_margin` and `eval_mean_reward` are unweighted means of per-batch means, so
they equal ours only when every eval batch is full (`test_eval_metrics_match_trl` checks both).

Also checked: the weight-decay groups (HF's `get_decay_parameter_names`, transformers/trainer.py:1408,
and our `build_optimizer` exclude the same parameters for Llama and GPT-2), warmup
(`ceil(ratio * total)` on both sides), the pre-clip global grad norm, and the lr each update uses.
The AdamW kernel is `optim` on both sides: `adamw_torch_fused` (the transformers default for torch >= 2.8,
and ours) or `adamw_torch`. Mixing them is not parity: they differ by float rounding (measured after
25 steps: loss off by 7e-7, grad norm by 4e-5).
"""

from __future__ import annotations

import copy
import math
import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import RewardTrainer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `benchmarks`

from conftest import build_gpt2_model, build_gpt2_style_tokenizer  # noqa: E402

from benchmarks.trl_parity import (  # noqa: E402
    EVAL_KEYS,
    FP32,
    STEP_KEYS,
    assert_steps_close,
    max_differences,
    max_weight_difference,
    our_config,
    run_ours,
    run_trl,
    step_pair_counts,
    tokenize,
    trl_args,
)
from reward.batching import BatchPlan, optimizer_steps, step_plan  # noqa: E402
from reward.collate import PairBatch, PairwiseCollator  # noqa: E402
from reward.config import pick  # noqa: E402
from reward.evaluate import evaluate  # noqa: E402
from reward.fast.packed_forward import forward_counts  # noqa: E402
from reward.loop import OptimizerOptions, accumulate_gradients, apply_update, build_optimizer, build_scheduler  # noqa: E402
from reward.loss import PairObjective  # noqa: E402
from reward.model import compute_rewards  # noqa: E402
from reward.presets.synthetic import generate_pairs  # noqa: E402
from reward.presets.tiny import build_tiny_tokenizer, tiny_model  # noqa: E402
from reward.run.parts import batch_order  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6  # per-step metrics (atol for values near 0, e.g. the lr at step 1)
WEIGHT_ATOL = 1e-6  # final weights, elementwise


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: these matrices are tiny, so a second thread only adds synchronisation, and
    on a shared 2-core machine its spin-waiting made the runs ~5x slower. Both sides run alike."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()  # TRL sets pad_token on it: its own instance, not the session one


@pytest.fixture(scope="module")
def init_model(tok):
    return tiny_model(tok, seed=0)  # every run trains a deep copy of this


def rows(n: int, seed: int, margin: bool = False) -> Dataset:
    data = generate_pairs(n, seed=seed)
    if margin:
        rng = random.Random(seed)
        for row in data:
            row["margin"] = round(rng.uniform(0.0, 2.0), 3)
    return Dataset.from_list(data)


def report(name: str, diffs: dict) -> None:
    print(f"\n[trl parity] {name}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


# --- optimizer set-up -------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, optim", [("llama", "adamw_torch_fused"), ("gpt2", "adamw_torch")])
def test_weight_decay_groups_and_adamw_agree(arch, optim, tmp_path):
    """HF excludes bias / LayerNorm / RMSNorm weights by name and class; we exclude ndim < 2 and
    "norm" names. Checked to give the same split, so weight_decay > 0 is used in the runs below."""
    if arch == "llama":
        tokenizer = build_tiny_tokenizer()
        model = tiny_model(tokenizer, seed=0)
    else:
        tokenizer = build_gpt2_style_tokenizer()
        model = build_gpt2_model(tokenizer)  # has biases and nn.LayerNorm
    cfg = our_config(weight_decay=0.1, max_steps=1, per_device_train_batch_size=2, optim=optim)
    trainer = RewardTrainer(
        model=model, args=trl_args(cfg, tmp_path), train_dataset=rows(4, 0), processing_class=tokenizer
    )
    trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}

    def decay_of(optimizer) -> dict[str, float]:
        return {names[id(p)]: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}

    theirs, ours_opt = decay_of(trainer.optimizer), build_optimizer(model, pick(OptimizerOptions, cfg))
    ours = decay_of(ours_opt)
    assert ours == theirs
    assert set(trainer.get_decay_parameter_names(model)) == {n for n, wd in ours.items() if wd > 0}
    assert 0 < sum(wd > 0 for wd in ours.values()) < len(ours)  # both groups are non-empty
    trl_opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it once training
    assert type(trl_opt) is type(ours_opt)  # torch.optim.AdamW
    for key in ("lr", "betas", "eps", "amsgrad", "maximize"):
        assert trl_opt.defaults[key] == ours_opt.defaults[key], key
    assert bool(trl_opt.defaults.get("fused")) == bool(ours_opt.defaults.get("fused")) == (optim == "adamw_torch_fused")


# --- requirement 1 and 2: per-step training metrics and final weights -------------------------------
TRAIN_CASES = {
    # name: (pairs, micro-batch, accumulation, steps, extra TrainConfig options, margin column)
    # 84 pairs / 4 per step = 21 steps per epoch; 30 steps cross into epoch 2 (reshuffled with seed + 1)
    "ga1": (84, 4, 1, 30, {"warmup_steps": 5}, False),
    # 84 pairs / 2 = 42 micro-batches = 10 steps of 4 + a last step of 2 full micro-batches (K = 2, even)
    "ga4": (84, 2, 4, 22, {"warmup_ratio": 0.1, "lr_scheduler_type": "cosine"}, False),
    "ga1-margin": (84, 4, 1, 24, {"warmup_steps": 3}, True),
    "ga4-margin": (84, 2, 4, 22, {"warmup_steps": 3}, True),
    "ga1-center": (84, 4, 1, 24, {"warmup_steps": 3, "center_rewards_coefficient": 0.01}, False),
    "ga4-center": (84, 2, 4, 22, {"warmup_steps": 3, "center_rewards_coefficient": 0.01}, False),
    "ga4-margin-center": (84, 2, 4, 22, {"warmup_steps": 3, "center_rewards_coefficient": 0.01}, True),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_training_steps_match_trl(case, tok, init_model, tmp_path):
    n, b, k, steps, extra, margin = TRAIN_CASES[case]
    data = rows(n, seed=3, margin=margin)
    cfg = our_config(
        per_device_train_batch_size=b,
        gradient_accumulation_steps=k,
        max_steps=steps,
        learning_rate=1e-3,  # large enough that 20+ steps move the weights and the metrics visibly
        weight_decay=0.1,
        seed=7,
        **extra,
    )
    assert all(len(set(sizes)) == 1 for sizes in step_pair_counts(data, tok, cfg, steps))  # even micro-batches
    ours = run_ours(init_model, tok, data, cfg, tmp_path / "ours")
    theirs, trainer = run_trl(init_model, tok, data, cfg, tmp_path / "trl")
    assert len(ours.steps) == len(theirs.steps) == steps >= 20

    # with K > 1, TRL's min/max_reward are means of micro-batch minima/maxima (module docstring)
    keys = {key: v for key, v in STEP_KEYS.items() if k == 1 or key not in ("reward_min", "reward_max")}
    diffs = max_differences(ours.steps, theirs.steps, keys)
    diffs["weights"] = max_weight_difference(ours.model, theirs.model)
    report(case, diffs)
    assert_steps_close(ours.steps, theirs.steps, RTOL, ATOL, keys)
    for a, t in zip(ours.steps, theirs.steps):
        assert a["reward_min"] <= t["reward_min"] + ATOL and t["reward_max"] <= a["reward_max"] + ATOL
    assert diffs["weights"] <= WEIGHT_ATOL
    assert max_weight_difference(ours.model, init_model) > 5e-3  # the weights really moved (≤ lr per Adam step)
    if margin:
        assert "margin" in trainer.train_dataset.column_names  # TRL really used the margin column


def test_training_steps_match_trl_with_pad_equal_to_eos(tmp_path):
    """GPT-2 style: no pad token (both set pad := eos), no BOS, biases and LayerNorms under weight decay."""
    tokenizer = build_gpt2_style_tokenizer()
    model = build_gpt2_model(tokenizer, seed=1)
    data = rows(80, seed=4)
    cfg = our_config(per_device_train_batch_size=4, max_steps=20, learning_rate=1e-3, weight_decay=0.1, seed=5)
    ours = run_ours(model, tokenizer, data, cfg, tmp_path / "ours")
    theirs, _ = run_trl(model, tokenizer, data, cfg, tmp_path / "trl")
    diffs = max_differences(ours.steps, theirs.steps)
    diffs["weights"] = max_weight_difference(ours.model, theirs.model)
    report("gpt2 pad=eos", diffs)
    assert_steps_close(ours.steps, theirs.steps, RTOL, ATOL)
    assert diffs["weights"] <= WEIGHT_ATOL


def test_packed_training_on_trls_batches_matches_trl(tok, init_model, tmp_path):
    """The benchmark's same-batches mode: TRL's micro-batches, run padding-free with the shared
    prefix, give TRL's per-step metrics (float rounding apart) — the speed-up changes no math."""
    data = rows(84, seed=3)
    cfg = our_config(
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
        max_steps=22,
        learning_rate=1e-3,
        weight_decay=0.1,
        seed=7,
        warmup_steps=3,
        padding_free=True,
        share_prefix=True,
    )
    ours = run_ours(init_model, tok, data, cfg, tmp_path / "ours")
    theirs, _ = run_trl(init_model, tok, data, cfg, tmp_path / "trl")
    micro_batches = sum(len(sizes) for sizes in step_pair_counts(data, tok, cfg, 22))
    assert forward_counts(ours.model) == {"packed": micro_batches, "padded": 0}  # none fell back to padding
    # K = 4: TRL's min/max_reward are means of micro-batch minima/maxima (module docstring), so bounded
    keys = {key: v for key, v in STEP_KEYS.items() if key not in ("reward_min", "reward_max")}
    diffs = max_differences(ours.steps, theirs.steps, keys)
    diffs["weights"] = max_weight_difference(ours.model, theirs.model)
    report("packed on TRL's batches", diffs)
    # measured (1 thread, after issue #27, largest absolute differences): loss 8.5e-7, margin 1.3e-6,
    # grad_norm 1.3e-5, reward_mean 4.3e-6; the packed rewards differ from the padded ones by float
    # rounding (~5e-8), which 22 Adam steps grow
    assert_steps_close(ours.steps, theirs.steps, 3e-5, 6e-6, keys)
    for a, t in zip(ours.steps, theirs.steps):
        assert a["reward_min"] <= t["reward_min"] + 6e-6 and t["reward_max"] <= a["reward_max"] + 6e-6
    assert diffs["weights"] <= 5e-5  # measured 1.4e-5
    assert max_weight_difference(ours.model, init_model) > 100 * 5e-5  # moved (measured 9.6e-3)


# --- requirement 3: evaluation ---------------------------------------------------------------------
def test_eval_metrics_match_trl(tok, init_model, tmp_path):
    """Full eval batches: all agree. Smaller last batch: TRL's eval_loss is still pair-weighted (= ours),
    its accuracy / margin / mean reward become the unweighted mean of batch means."""
    data = rows(160 + 48 + 40, seed=9, margin=True)
    train_rows, even_rows, uneven_rows = (data.select(range(a, b)) for a, b in [(0, 160), (160, 208), (208, 248)])
    cfg = our_config(
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        max_steps=12,
        learning_rate=1e-3,
        center_rewards_coefficient=0.01,
        seed=2,
    )
    ours = run_ours(init_model, tok, train_rows, cfg, tmp_path / "ours")
    _, trainer = run_trl(init_model, tok, train_rows, cfg, tmp_path / "trl")
    collate = PairwiseCollator(tok.pad_token_id)

    objective = PairObjective(cfg.center_rewards_coefficient, cfg.label_smoothing)
    even = evaluate(ours.model, tokenize(even_rows, tok, cfg), collate, objective, 16, FP32)  # batches 16, 16, 16
    trl_even = trainer.evaluate(eval_dataset=even_rows)
    report("eval (full batches)", {k: abs(even[k] - trl_even[t]) for k, t in EVAL_KEYS.items()})
    assert even["pairs"] == 48
    for k, t in EVAL_KEYS.items():
        assert math.isclose(even[k], trl_even[t], rel_tol=RTOL, abs_tol=ATOL), (k, even[k], trl_even[t])
    assert 0.0 < even["accuracy"] < 1.0 or even["loss"] > 0.1  # a non-degenerate comparison

    # 40 pairs in batches of 16, 16, 8: TRL's eval_loss is pair-weighted (accelerate's gather_for_metrics
    # keeps only the last batch's 8 real rows of the 16 repeated losses), its accuracy/margin/mean reward
    # are the mean of the 3 batch means; ours are all pair-weighted.
    uneven_ds = tokenize(uneven_rows, tok, cfg)
    ours_u = evaluate(ours.model, uneven_ds, collate, objective, 16, FP32)
    per_batch = [
        evaluate(ours.model, uneven_ds.select(range(s, min(s + 16, len(uneven_ds)))), collate, objective, 16, FP32)
        for s in range(0, len(uneven_ds), 16)
    ]
    assert [p["pairs"] for p in per_batch] == [16, 16, 8]
    trl_u = trainer.evaluate(eval_dataset=uneven_rows)
    diffs, gaps = {}, {}
    for k, t in EVAL_KEYS.items():
        mean_of_means = sum(p[k] for p in per_batch) / len(per_batch)
        weighted = sum(p[k] * p["pairs"] for p in per_batch) / sum(p["pairs"] for p in per_batch)
        assert math.isclose(ours_u[k], weighted, rel_tol=RTOL, abs_tol=ATOL), k
        expected = weighted if k == "loss" else mean_of_means
        assert math.isclose(trl_u[t], expected, rel_tol=RTOL, abs_tol=ATOL), (k, trl_u[t], expected)
        diffs[k] = abs(trl_u[t] - expected)
        gaps[k] = abs(mean_of_means - weighted)
    report("eval (uneven last batch, TRL vs its formula)", diffs)
    report("eval (uneven last batch, mean of batch means vs pair-weighted)", gaps)
    assert max(gaps[k] for k in ("accuracy", "margin", "reward_mean")) > 1e-4  # the check discriminates
    assert math.isclose(trl_u["eval_loss"], ours_u["loss"], rel_tol=RTOL, abs_tol=ATOL)


# --- requirement 4: uneven micro-batches -------------------------------------------------------------
def per_pair_losses(model, mb: PairBatch, coef: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ℓ_i in float64, r_chosen, r_rejected) for one micro-batch, without gradients."""
    with torch.no_grad():
        r = compute_rewards(model, mb.input_ids, mb.attention_mask)  # (2B,)
    b = r.shape[0] // 2
    rc, rr = r[:b].double(), r[b:].double()
    loss = -F.logsigmoid(rc - rr - mb.margin.double()) + (coef or 0.0) * (rc + rr) ** 2  # (B,)
    return loss, rc, rr


def assert_trl_reward_extremes(trl_step: dict, parts: list) -> None:
    """TRL's logged min/max_reward: the mean over micro-batches of each micro-batch's min/max."""
    mins = [float(torch.cat([rc, rr]).min()) for _, rc, rr in parts]
    maxs = [float(torch.cat([rc, rr]).max()) for _, rc, rr in parts]
    assert math.isclose(trl_step["reward_min"], sum(mins) / len(parts), rel_tol=RTOL, abs_tol=ATOL)
    assert math.isclose(trl_step["reward_max"], sum(maxs) / len(parts), rel_tol=RTOL, abs_tol=ATOL)


def test_uneven_micro_batches_differ_by_the_formula(tok, init_model, tmp_path):
    """22 pairs, 4 per micro-batch, 3 micro-batches per step: step 1 is 4+4+4 (even: TRL and ours
    agree), step 2 is 4+4+2 (uneven). On step 2, with ℓ_i the per-pair losses at the (identical)
    weights after step 1, K = 3, b = (4, 4, 2), N = 10:

        TRL loss  = (1/K) Σ_j mean_{i∈B_j} ℓ_i,    ours = (1/N) Σ_i ℓ_i,
        TRL − ours = Σ_j Σ_{i∈B_j} ℓ_i (1/(K b_j) − 1/N)

    and TRL's gradient is (1/K) Σ_j ∇ mean_{B_j} ℓ (we rebuild it with our own blocks, one
    micro-batch at a time, and compare its norm with TRL's logged grad_norm). TRL's accuracy/margin
    are the mean of micro-batch means and its min/max_reward the mean of micro-batch minima/maxima.
    """
    data = rows(22, seed=5)
    coef = 0.01
    cfg = our_config(
        per_device_train_batch_size=4,
        gradient_accumulation_steps=3,
        max_steps=2,
        learning_rate=1e-3,
        weight_decay=0.1,
        center_rewards_coefficient=coef,
        seed=11,
    )
    theirs, _ = run_trl(init_model, tok, data, cfg, tmp_path / "trl")
    trl1, trl2 = theirs.steps

    # ours, driven through the same building blocks `reward.loop.train` uses
    model = copy.deepcopy(init_model).train()
    ds = tokenize(data, tok, cfg)
    plan = optimizer_steps(ds, PairwiseCollator(tok.pad_token_id), batch_order(cfg, ds), pick(BatchPlan, cfg))
    options = pick(OptimizerOptions, cfg)
    optimizer = build_optimizer(model, options)
    scheduler = build_scheduler(optimizer, options, step_plan(len(ds), pick(BatchPlan, cfg))[1])
    centred = PairObjective(center_rewards_coefficient=coef)

    _, mbs, _ = next(plan)
    assert [mb.margin.numel() for mb in mbs] == [4, 4, 4]
    parts = [per_pair_losses(model, mb, coef) for mb in mbs]
    step1 = accumulate_gradients(model, mbs, centred, FP32).summary()
    step1["lr"] = scheduler.get_last_lr()[0]
    step1["grad_norm"] = apply_update(model, optimizer, scheduler, FP32, cfg.max_grad_norm)
    even_keys = {key: v for key, v in STEP_KEYS.items() if key not in ("reward_min", "reward_max")}
    assert_steps_close([{"step": 1, **step1}], [trl1], RTOL, ATOL, even_keys)  # even step: same numbers
    assert_trl_reward_extremes(trl1, parts)

    _, mbs, _ = next(plan)
    sizes = [mb.margin.numel() for mb in mbs]
    assert sizes == [4, 4, 2]
    k, n = len(sizes), sum(sizes)
    parts = [per_pair_losses(model, mb, coef) for mb in mbs]
    losses = [p[0] for p in parts]
    ours_pred = sum(float(loss.sum()) for loss in losses) / n
    trl_pred = sum(float(loss.mean()) for loss in losses) / k
    delta_pred = sum(float(loss.sum()) * (1 / (k * len(loss)) - 1 / n) for loss in losses)
    assert math.isclose(trl_pred - ours_pred, delta_pred, rel_tol=1e-9, abs_tol=1e-12)

    # TRL's gradient at these weights: each micro-batch mean, divided by K
    trl_model = copy.deepcopy(model)
    for mb in mbs:
        accumulate_gradients(trl_model, [mb], centred, FP32)  # one micro-batch: normalised by its own b_j
    for p in trl_model.parameters():
        p.grad /= k
    trl_grad_norm_pred = torch.nn.utils.clip_grad_norm_(trl_model.parameters(), float("inf")).item()

    step2 = accumulate_gradients(model, mbs, centred, FP32).summary()
    ours_grad_norm = apply_update(model, optimizer, scheduler, FP32, cfg.max_grad_norm)

    measured_delta = trl2["loss"] - step2["loss"]
    report(
        "uneven step 4+4+2",
        {
            "ours-vs-formula": abs(step2["loss"] - ours_pred),
            "trl-vs-formula": abs(trl2["loss"] - trl_pred),
            "delta-vs-formula": abs(measured_delta - delta_pred),
            "delta": abs(delta_pred),
            "grad_norm-trl-vs-formula": abs(trl2["grad_norm"] - trl_grad_norm_pred),
            "grad_norm-trl-vs-ours": abs(trl2["grad_norm"] - ours_grad_norm),
        },
    )
    assert math.isclose(step2["loss"], ours_pred, rel_tol=RTOL, abs_tol=ATOL)
    assert math.isclose(trl2["loss"], trl_pred, rel_tol=RTOL, abs_tol=ATOL)
    assert math.isclose(measured_delta, delta_pred, rel_tol=RTOL, abs_tol=ATOL)
    assert abs(delta_pred) > 100 * ATOL  # the step really is one where the two definitions differ
    assert math.isclose(trl2["grad_norm"], trl_grad_norm_pred, rel_tol=RTOL, abs_tol=ATOL)
    assert not math.isclose(trl2["grad_norm"], ours_grad_norm, rel_tol=1e-3)

    # logged metrics: TRL averages per-micro-batch values, we weight by pairs
    acc = [float((rc > rr).double().mean()) for _, rc, rr in parts]
    mar = [float((rc - rr).mean()) for _, rc, rr in parts]
    assert math.isclose(trl2["accuracy"], sum(acc) / k, abs_tol=ATOL)
    assert math.isclose(step2["accuracy"], sum(a * b for a, b in zip(acc, sizes)) / n, abs_tol=ATOL)
    assert math.isclose(trl2["margin"], sum(mar) / k, rel_tol=RTOL, abs_tol=ATOL)
    assert math.isclose(step2["margin"], sum(m * b for m, b in zip(mar, sizes)) / n, rel_tol=RTOL, abs_tol=ATOL)
    assert_trl_reward_extremes(trl2, parts)
    assert math.isclose(step2["reward_min"], min(float(torch.cat(p[1:]).min()) for p in parts), rel_tol=RTOL)
    assert math.isclose(step2["reward_max"], max(float(torch.cat(p[1:]).max()) for p in parts), rel_tol=RTOL)
