"""reward/evaluate.py: held-out evaluation reads every pair's rewards through training's forward and loss, in
eval mode and length-sorted batches; the training loop reports it; the statistics the saved folder carries."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

from reward.batching import pair_lengths
from reward.collate import PairwiseCollator
from reward.config import TrainConfig
from reward.evaluate import STATS_SAMPLE, Evaluation, HeldOut, collapse_problem, evaluate, reward_statistics
from reward.formatting import tokenize_pairs
from reward.loss import PairObjective
from reward.metrics import (
    MetricsWriter,
    diagnose,
)
from reward.model import compute_rewards, resolve_precision
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import tiny_model
from reward.run.parts import train_with


def eval_rows(n: int) -> list[dict]:
    return [{**row, "subset": ["easy", "hard"][i % 2]} for i, row in enumerate(generate_pairs(n, seed=5))]


def test_evaluate_reports_the_diagnostics_of_direct_rewards(tiny_tokenizer):
    ds, _ = tokenize_pairs(Dataset.from_list(eval_rows(11)), tiny_tokenizer, "explicit prompt", max_length=None)
    model = tiny_model(tiny_tokenizer, seed=0).eval()
    precision = resolve_precision(False, False, torch.device("cpu"))

    got = evaluate(model, ds, PairwiseCollator(tiny_tokenizer.pad_token_id), PairObjective(), 4, precision)  # 4, 4, 3

    with torch.no_grad():  # one sequence per forward pass, no batching or padding
        reward = [
            [
                compute_rewards(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).item()
                for ids in col
            ]
            for col in (ds["chosen_ids"], ds["rejected_ids"])
        ]
    r_c, r_r = torch.tensor(reward[0]), torch.tensor(reward[1])  # (11,), (11,)
    lengths = [torch.tensor([len(ids) for ids in ds[col]]) for col in ("chosen_ids", "rejected_ids")]
    expected = diagnose(r_c, r_r, *lengths, ds["subset"]).metrics()
    assert set(expected) == {"ece", "length_corr", "accuracy/easy", "accuracy/hard"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert got["pairs"] == 11 and got["accuracy"] == pytest.approx((r_c > r_r).double().mean().item())
    assert got["loss"] == pytest.approx(-torch.nn.functional.logsigmoid(r_c - r_r).mean().item(), abs=1e-5)


def test_evaluate_batches_pairs_of_similar_length(tiny_tokenizer):
    """Evaluation batches pairs by length (less padding); the batch a pair lands in does not matter."""
    rows = generate_pairs(9, seed=3)
    ds, _ = tokenize_pairs(Dataset.from_list(rows), tiny_tokenizer, "explicit prompt", max_length=None)
    ds = ds.select([8, 0, 5, 2, 7, 1, 3, 6, 4])  # an index mapping, as after a shuffle or split
    lengths = [len(c) + len(r) for c, r in zip(ds["chosen_ids"], ds["rejected_ids"])]
    assert pair_lengths(ds) == lengths  # read through the mapping, not from the underlying table
    seen = []
    plain = PairwiseCollator(tiny_tokenizer.pad_token_id)

    def collate(batch_rows):
        seen.append([len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in batch_rows])
        return plain(batch_rows)

    model = tiny_model(tiny_tokenizer, seed=0).eval()
    precision = resolve_precision(False, False, torch.device("cpu"))
    got = evaluate(model, ds, collate, PairObjective(), 4, precision)
    assert [len(b) for b in seen] == [4, 4, 1]
    assert sum(seen, []) == sorted(lengths)  # each batch holds neighbours in length order
    one_by_one = evaluate(model, ds, plain, PairObjective(), 1, precision)
    for key in ("loss", "accuracy", "margin", "ece", "length_corr"):
        assert got[key] == pytest.approx(one_by_one[key], abs=1e-5), key


def test_training_writes_eval_diagnostics_to_metrics_jsonl(tiny_tokenizer, tmp_path):
    data = Dataset.from_list(eval_rows(24))
    train_ds, _ = tokenize_pairs(data.select(range(16)), tiny_tokenizer, "explicit prompt", max_length=None)
    eval_ds, _ = tokenize_pairs(data.select(range(16, 24)), tiny_tokenizer, "explicit prompt", max_length=None)
    cfg = TrainConfig(max_steps=2, per_device_train_batch_size=8, logging_steps=2, disable_tqdm=True)
    model = tiny_model(tiny_tokenizer, seed=0)
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    precision = resolve_precision(False, False, torch.device("cpu"))

    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    train_with(cfg, model, train_ds, collate=collate, precision=precision, writer=writer, eval_sets={"": eval_ds})

    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"eval_ece", "eval_length_corr", "eval_accuracy/easy", "eval_accuracy/hard"} <= set(last)
    assert 0.0 <= last["eval_ece"] <= 0.5 and -1.0 <= last["eval_length_corr"] <= 1.0
    # 4 pairs per subset: the two subset accuracies average to the overall accuracy
    assert (last["eval_accuracy/easy"] + last["eval_accuracy/hard"]) / 2 == pytest.approx(last["eval_accuracy"])


def test_evaluation_runs_in_eval_mode_and_gives_the_training_state_back(tiny_tokenizer):
    """A model with dropout (0.5), handed over in train mode: evaluation turns dropout off (the same metrics
    twice, equal to the eval-mode rewards computed by hand) and leaves the model in train mode again."""
    from test_loop import dropout_gpt2

    ds, _ = tokenize_pairs(Dataset.from_list(eval_rows(8)), tiny_tokenizer, "explicit prompt", max_length=None)
    model = dropout_gpt2(tiny_tokenizer).train()
    precision = resolve_precision(False, False, torch.device("cpu"))
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    first = evaluate(model, ds, collate, PairObjective(), 4, precision)
    assert model.training
    second = evaluate(model, ds, collate, PairObjective(), 4, precision)
    assert first == second
    model.eval()
    with torch.no_grad():
        batch = collate(list(ds))
        r_c, r_r = batch.rewards(model).chunk(2)  # (8,), (8,)
    assert first["loss"] == pytest.approx(-torch.nn.functional.logsigmoid(r_c - r_r).mean().item(), abs=1e-6)
    assert first["reward_mean"] == pytest.approx(torch.cat([r_c, r_r]).mean().item(), abs=1e-6)
    evaluate(model, ds, collate, PairObjective(), 4, precision)
    assert not model.training  # eval mode is kept too


def test_the_evaluation_loss_is_the_objectives(tiny_tokenizer):
    """The loss reported is the run's objective (centring, label smoothing, margins), not a plain BT loss."""
    rows = [{**r, "margin": 1.0} for r in eval_rows(6)]
    ds, _ = tokenize_pairs(Dataset.from_list(rows), tiny_tokenizer, "explicit prompt", max_length=None)
    model = tiny_model(tiny_tokenizer, seed=0).eval()
    precision = resolve_precision(False, False, torch.device("cpu"))
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    objective = PairObjective(center_rewards_coefficient=0.5, label_smoothing=0.2)
    got = evaluate(model, ds, collate, objective, 4, precision)
    with torch.no_grad():
        batch = collate(list(ds))
        want = objective(batch.rewards(model), batch).loss.item()
    assert got["loss"] == pytest.approx(want, abs=1e-6)
    assert got["loss"] != pytest.approx(evaluate(model, ds, collate, PairObjective(), 4, precision)["loss"], abs=1e-3)


def test_extra_metrics_see_each_pair_with_its_own_rewards(tiny_tokenizer):
    """`extras` get the rewards in the order of the pairs they are handed (pairs made of rankings put their
    prompts back together from them: reward/ranked/rows.py)."""
    ds, _ = tokenize_pairs(Dataset.from_list(eval_rows(9)), tiny_tokenizer, "explicit prompt", max_length=None)
    ds = ds.select([8, 0, 5, 2, 7, 1, 3, 6, 4])
    model = tiny_model(tiny_tokenizer, seed=0).eval()
    precision = resolve_precision(False, False, torch.device("cpu"))
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)

    def alone(ids: list[int]) -> float:
        with torch.no_grad():
            return compute_rewards(model, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).item()

    def mismatch(r_chosen, r_rejected, pairs) -> dict:
        gaps = [abs(r_chosen[i].item() - alone(p["chosen_ids"])) for i, p in enumerate(pairs)]
        gaps += [abs(r_rejected[i].item() - alone(p["rejected_ids"])) for i, p in enumerate(pairs)]
        return {"pairs_seen": len(pairs), "largest_gap": max(gaps)}

    got = evaluate(model, ds, collate, PairObjective(), 4, precision, extras=(mismatch,))
    assert got["pairs_seen"] == 9 and got["largest_gap"] < 1e-5


def test_evaluation_reads_the_rewards_off_the_device_once_whatever_the_number_of_batches(tiny_tokenizer, monkeypatch):
    """Each read of a GPU tensor into host memory waits for the GPU: the rewards stay where they are until the
    last batch, then come over once (`.cpu()` here is a no-op that is counted all the same)."""
    ds, _ = tokenize_pairs(Dataset.from_list(eval_rows(12)), tiny_tokenizer, "explicit prompt", max_length=None)
    model = tiny_model(tiny_tokenizer, seed=0)
    precision = resolve_precision(False, False, torch.device("cpu"))
    collate = PairwiseCollator(tiny_tokenizer.pad_token_id)
    reads, cpu = [], torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda t, *a, **k: reads.append(t.shape) or cpu(t, *a, **k))
    one = evaluate(model, ds, collate, PairObjective(), 12, precision)
    in_one = len(reads)
    six = evaluate(model, ds, collate, PairObjective(), 2, precision)
    assert in_one > 0 and len(reads) - in_one == in_one  # 6 batches read as often as 1
    assert one == pytest.approx(six, abs=1e-6)


def test_held_out_sets_are_evaluated_by_name(tiny_tokenizer):
    ds, _ = tokenize_pairs(Dataset.from_list(eval_rows(6)), tiny_tokenizer, "explicit prompt", max_length=None)
    model = tiny_model(tiny_tokenizer, seed=0)
    precision = resolve_precision(False, False, torch.device("cpu"))
    evaluation = Evaluation(PairwiseCollator(tiny_tokenizer.pad_token_id), PairObjective(), 4, precision)
    results = HeldOut({"a": ds, "b": ds.select(range(2))}, evaluation)(model)
    assert list(results) == ["a", "b"] and (results["a"]["pairs"], results["b"]["pairs"]) == (6, 2)
    assert results["a"] == evaluation(model, ds)


# --- what the saved folder says about the trained rewards ------------------------------------------------
def test_reward_statistics_come_from_the_final_evaluation_or_a_sample():
    final = {"reward_mean": 0.25, "reward_std": 1.5, "pairs": 40}
    seen = []

    def evaluation(model, ds) -> dict:  # stands in for `Evaluation`: which rows it was given
        seen.append(len(ds))
        return {"reward_mean": -1.0, "reward_std": 2.0, "pairs": len(ds)}

    held, train = Dataset.from_list([{"x": i} for i in range(30)]), Dataset.from_list([{"x": i} for i in range(900)])
    got = reward_statistics(None, final, held, train, evaluation)
    assert got == {"mean": 0.25, "std": 1.5, "count": 80, "source": "held-out split, 40 pairs"} and seen == []
    got = reward_statistics(None, None, held, train, evaluation)
    assert got == {"mean": -1.0, "std": 2.0, "count": 60, "source": "held-out split, 30 pairs"}
    got = reward_statistics(None, None, None, train, evaluation)
    assert got["source"] == f"training split sample, {STATS_SAMPLE} pairs" and seen == [30, STATS_SAMPLE]


def test_a_constant_reward_is_a_collapse_whatever_its_scale():
    assert collapse_problem({"mean": 0.3, "std": 0.2, "count": 10, "source": "s"}, 1e-4) is None
    assert collapse_problem({"mean": 0.3, "std": 1e-6, "count": 10, "source": "s"}, 1e-4).startswith(
        "the model collapsed: every reward is 0.3 (std 1.0e-06 over 10 sequences of the s)"
    )
    # relative to |mean| above 1: 1e-4 around 1000 is a constant, 1e-4 around 0.1 is not
    assert collapse_problem({"mean": 1000.0, "std": 1e-4, "count": 4, "source": "s"}, 0.5) is not None
    assert collapse_problem({"mean": 0.1, "std": 1e-4, "count": 4, "source": "s"}, 0.5) is None
