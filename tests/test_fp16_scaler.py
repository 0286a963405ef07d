"""fp16 autocast + GradScaler through the real `reward.loop.train`, on the CPU.

torch (2.13) runs `torch.autocast("cpu", dtype=torch.float16)` and `torch.amp.GradScaler("cpu")`, so
the scaler's three duties are checked here without a GPU: the gradients are unscaled before they are
clipped (the logged norm is the true one), an overflowing step is skipped, counted and lowers the scale
without touching the weights, and the scaler's state survives a checkpoint bit for bit. The command
line still refuses `--fp16` on a CPU (tests/test_train_e2e.py): fp16 matmuls are no faster there; the
tests build the `Precision` that `resolve_precision` builds on CUDA, with a CPU scaler.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from reward.collate import PairwiseCollator
from reward.config import TrainConfig
from reward.formatting import tokenize_pairs
from reward.metrics import MetricsWriter
from reward.model import Precision
from reward.parallel.plan import SINGLE
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import tiny_model
from reward.run.checkpoints import load_training_state, save_training_checkpoint
from reward.run.parts import train_with
from reward.run.state import restore_training_state, training_state

CPU = torch.device("cpu")


def fp16(init_scale: float = 2.0**10, growth_interval: int = 2000) -> Precision:
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=growth_interval)
    return Precision(CPU, torch.float16, scaler)


def config(**options) -> TrainConfig:
    settings = dict(
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-3,
        disable_tqdm=True,
        eval_strategy="no",
        logging_steps=1,
        group_by_length=False,
    )
    return TrainConfig(**{**settings, **options})


@pytest.fixture(scope="module")
def pairs(tiny_tokenizer) -> Dataset:
    ds, _ = tokenize_pairs(Dataset.from_list(generate_pairs(24, seed=2)), tiny_tokenizer, "explicit prompt", 1024)
    return ds


def run(tokenizer, ds, cfg, precision, out: Path, **kwargs) -> tuple[list[dict], torch.nn.Module]:
    model = kwargs.pop("model", None) or tiny_model(tokenizer, seed=0)
    collate = PairwiseCollator(tokenizer.pad_token_id)
    train_with(cfg, model, ds, collate=collate, precision=precision, writer=MetricsWriter(out), **kwargs)
    return [json.loads(line) for line in out.read_text().splitlines()], model


def test_gradients_are_unscaled_before_clipping(tiny_tokenizer, pairs, tmp_path):
    """The logged norm (what `clip_grad_norm_` saw and clipped to 1.0) is fp32's norm, not scale times it."""
    cfg = config(max_grad_norm=1.0)
    plain, _ = run(tiny_tokenizer, pairs, cfg, Precision(CPU, None, None), tmp_path / "fp32.jsonl")
    precision = fp16()
    half, _ = run(tiny_tokenizer, pairs, cfg, precision, tmp_path / "fp16.jsonl")
    assert precision.scaler.get_scale() == 2.0**10  # no overflow: every step was applied
    assert [r["nonfinite_steps"] for r in half] == [0, 0, 0]
    assert any(r["grad_norm"] > cfg.max_grad_norm for r in plain)  # the clip really cuts
    # fp16 autocast rounds the forward: measured 4.8e-4 (norm) and 1.9e-4 (loss) relative on these
    # steps; a norm taken before unscaling is 1024x (the scale)
    assert [r["grad_norm"] for r in half] == pytest.approx([r["grad_norm"] for r in plain], rel=2e-3)
    assert [r["loss"] for r in half] == pytest.approx([r["loss"] for r in plain], rel=1e-3)


def test_an_overflowing_step_is_skipped_counted_and_lowers_the_scale(tiny_tokenizer, pairs, tmp_path):
    """An inf gradient at step 2 (a hook on one weight, as an fp16 overflow gives): the update is skipped,
    the weights keep their step-1 values bit for bit, the scale halves, the step is counted; step 3 trains."""
    model = tiny_model(tiny_tokenizer, seed=0)
    precision, bad, snapshots, scales, states = fp16(), {"now": False}, {}, {}, []
    weight = model.get_input_embeddings().weight
    weight.register_hook(lambda g: torch.full_like(g, math.inf) if bad["now"] else g)

    def after(step: int) -> bool:
        snapshots[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        scales[step] = precision.scaler.get_scale()
        bad["now"] = step + 1 == 2
        return False

    records, _ = run(
        tiny_tokenizer,
        pairs,
        config(),
        precision,
        tmp_path / "m.jsonl",
        model=model,
        should_stop=after,
        save=lambda progress: states.append(training_state(progress, model, SINGLE)),
    )
    assert scales == {1: 2.0**10, 2: 2.0**9, 3: 2.0**9}
    assert all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1])  # step 2 changed nothing
    assert any(not torch.equal(snapshots[2][k], snapshots[3][k]) for k in snapshots[2])  # step 3 did
    assert [r["nonfinite_steps"] for r in records] == [0, 1, 1]
    assert "grad_norm" not in records[1] and all(math.isfinite(r["grad_norm"]) for r in (records[0], records[2]))
    adam = states[-1]["optimizer"]["state"]
    assert {int(s["step"]) for s in adam.values()} == {2}  # AdamW took 2 of the 3 steps


def test_the_scalers_state_survives_a_checkpoint_bit_for_bit(tiny_tokenizer, pairs, tmp_path):
    """growth_interval 3: the uninterrupted run doubles its scale after step 3, which a run resumed from a
    checkpoint of step 2 does only if the growth tracker (2 then) came back with the scale."""
    cfg = config(max_steps=4, save_steps=2)
    whole, whole_model = tmp_path / "whole", None
    whole.mkdir()

    def save(progress) -> None:  # the loop's Progress, saved as a run's checkpoint is (reward/run/state.py)
        write = lambda path: (path.mkdir(), torch.save(whole_model.state_dict(), path / "weights.pt"))  # noqa: E731
        save_training_checkpoint(whole, progress.step, write, training_state(progress, whole_model, SINGLE))

    whole_model = tiny_model(tiny_tokenizer, seed=0)
    full = fp16(growth_interval=3)
    records, _ = run(tiny_tokenizer, pairs, cfg, full, whole / "m.jsonl", model=whole_model, save=save)

    state = load_training_state(whole / "checkpoint-2")  # torch.load(weights_only=True), as a resume reads it
    assert state["scaler"]["scale"] == 2.0**10 and state["scaler"]["_growth_tracker"] == 2
    model = tiny_model(tiny_tokenizer, seed=0)
    model.load_state_dict(torch.load(whole / "checkpoint-2" / "weights.pt", weights_only=True))
    resumed = fp16(growth_interval=3)  # a fresh scaler: init scale, tracker 0, until the state is restored
    restore = partial(restore_training_state, state, model=model, plan=SINGLE)
    again, model = run(tiny_tokenizer, pairs, cfg, resumed, tmp_path / "r.jsonl", model=model, restore=restore)

    assert full.scaler.state_dict() == resumed.scaler.state_dict()
    assert full.scaler.get_scale() == 2.0**11  # it did grow once, after step 3
    timing = {"pairs_per_s", "tokens_per_s"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in again] == [
        {k: v for k, v in r.items() if k not in timing} for r in records[2:]
    ]
    a, b = whole_model.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
