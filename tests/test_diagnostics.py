"""reward.metrics (ECE + reliability, length correlation, subset accuracy) against hand-worked
numbers; the training evaluation that reports them; and the optional plots."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from datasets import Dataset

from reward.batching import pair_lengths
from reward.collate import PairwiseCollator
from reward.config import TrainConfig
from reward.data import subset_column
from reward.errors import UserError
from reward.formatting import tokenize_pairs
from reward.loop import evaluate, train
from reward.metrics import (
    MetricsWriter,
    calibration,
    diagnose,
    pearson,
    preference_probability,
    subset_accuracy,
)
from reward.model import compute_rewards, load_model, resolve_precision
from reward.presets.synthetic import generate_pairs


# --- calibration ------------------------------------------------------------------------------------
def test_perfectly_calibrated_set_has_zero_ece():
    # 5 pairs at confidence 0.8, 4 right (p = 0.8) and 1 wrong (p = 0.2): accuracy 0.8 = confidence
    # 5 pairs at confidence 0.6, 3 right and 2 wrong: accuracy 0.6 = confidence
    p = torch.tensor([0.8, 0.8, 0.8, 0.8, 0.2, 0.6, 0.6, 0.6, 0.4, 0.4], dtype=torch.float64)
    c = calibration(p, num_bins=4)  # edges 0.5, 0.625, 0.75, 0.875, 1: exact in binary, far from 0.6 and 0.8
    assert c.ece == pytest.approx(0.0, abs=1e-12)
    assert [b.count for b in c.bins] == [5, 0, 5, 0]
    assert [b.accuracy for b in c.bins] == [pytest.approx(0.6), None, pytest.approx(0.8), None]


def test_constructed_set_with_known_ece_and_reliability_table():
    # confidence 0.88: p = 0.88 ×3 (right), 0.12 (wrong) -> accuracy 0.75, gap 0.13, weight 4/6
    # confidence 0.58: p = 0.58 (right), 0.42 (wrong)    -> accuracy 0.5,  gap 0.08, weight 2/6
    # ECE = 4/6 · 0.13 + 2/6 · 0.08 = 0.113333
    p = torch.tensor([0.88, 0.88, 0.88, 0.12, 0.58, 0.42], dtype=torch.float64)
    c = calibration(p, num_bins=10)

    assert c.ece == pytest.approx(0.34 / 3, abs=1e-12)
    full = [b for b in c.bins if b.count]
    assert [(b.lower, b.upper, b.count) for b in full] == [(0.55, 0.6, 2), (0.85, 0.9, 4)]
    assert [b.mean_confidence for b in full] == pytest.approx([0.58, 0.88])
    assert [b.accuracy for b in full] == [0.5, 0.75]
    empty = [b for b in c.bins if not b.count]
    assert len(empty) == 8 and all(b.mean_confidence is None and b.accuracy is None for b in empty)
    assert json.loads(json.dumps(c.to_dict()))["bins"][1]["count"] == 2  # JSON-ready, empty bins too


def test_edges_ties_and_one_bin():
    # p = 0.5 (a tie: confidence 0.5, counted wrong) joins the first bin; p = 1 and p = 0 the last one
    c = calibration(torch.tensor([0.5, 1.0, 0.0]), num_bins=4)
    assert [b.count for b in c.bins] == [1, 0, 0, 2]
    assert c.bins[0].accuracy == 0.0 and c.bins[3].accuracy == 0.5
    # one bin: ECE = |accuracy − mean confidence| = |1/3 − (0.5 + 1 + 1)/3| = 0.5
    assert calibration(torch.tensor([0.5, 1.0, 0.0]), num_bins=1).ece == pytest.approx(0.5)
    assert calibration(torch.tensor([]), num_bins=3).ece is None


def test_bins_add_up_to_the_accuracy():
    g = torch.Generator().manual_seed(1)
    r_c, r_r = 2 * torch.randn(500, generator=g), torch.randn(500, generator=g)  # (500,), (500,)
    c = calibration(preference_probability(r_c, r_r), num_bins=7)
    assert sum(b.count for b in c.bins) == 500
    accuracy = sum(b.count * b.accuracy for b in c.bins if b.count) / 500
    assert accuracy == pytest.approx((r_c > r_r).double().mean().item())
    assert 0.0 < c.ece < 1.0


def test_probability_is_sigmoid_of_the_gap():
    p = preference_probability(torch.tensor([math.log(4), 0.0]), torch.tensor([0.0, math.log(4)]))
    assert p.tolist() == pytest.approx([0.8, 0.2])


# --- length bias ------------------------------------------------------------------------------------
def test_pearson_by_hand():
    # dx = (−1.5, −0.5, 0.5, 1.5), dy = (−3, −1, 0, 4): Σdxdy = 11, Σdx² = 5, Σdy² = 26 -> 11/√130
    assert pearson(torch.tensor([1.0, 2, 3, 4]), torch.tensor([2.0, 4, 5, 9])) == pytest.approx(11 / math.sqrt(130))
    assert pearson(torch.tensor([1.0, 2, 3]), torch.tensor([10, 8, 6])) == pytest.approx(-1.0)


def test_pearson_is_none_when_undefined():
    assert pearson(torch.tensor([0.3, 0.1, 0.7]), torch.tensor([5, 5, 5])) is None  # all lengths equal
    assert pearson(torch.tensor([0.3, 0.3]), torch.tensor([4, 9])) is None  # all rewards equal
    assert pearson(torch.tensor([0.3]), torch.tensor([4])) is None  # one sequence


def test_length_correlation_pairs_each_reward_with_its_own_length():
    # rewards [r_c; r_r] = [1, 2, 3, 4] with lengths [2, 4, 5, 9]: the hand-worked 11/√130 above
    d = diagnose(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([2, 4]), torch.tensor([5, 9]))
    assert d.length_corr == pytest.approx(11 / math.sqrt(130))
    flat = diagnose(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([6, 6]), torch.tensor([6, 6]))
    assert flat.length_corr is None and flat.metrics()["length_corr"] is None
    assert "undefined" in flat.format()


# --- subsets ----------------------------------------------------------------------------------------
def test_subset_accuracy_by_hand():
    r_c = torch.tensor([1.0, 0.0, 3.0, 2.0, 5.0])
    r_r = torch.tensor([0.0, 1.0, 2.0, 2.0, 1.0])  # right, wrong, right, tie (wrong), right
    got = subset_accuracy(r_c, r_r, ["math", "chat", "math", "chat", "chat"])
    assert got == {"chat": (3, pytest.approx(1 / 3)), "math": (2, 1.0)}
    assert list(got) == ["chat", "math"]
    d = diagnose(r_c, r_r, torch.ones(5), torch.ones(5), ["math", "chat", "math", "chat", "chat"])
    assert d.metrics()["accuracy/math"] == 1.0 and d.metrics()["accuracy/chat"] == pytest.approx(1 / 3)
    assert "accuracy by subset" in d.format()
    with pytest.raises(ValueError):
        subset_accuracy(r_c, r_r, ["math"])


def test_subset_column_prefers_subset_over_category():
    assert subset_column(["prompt", "chosen", "category", "subset"]) == "subset"
    assert subset_column(["chosen", "category"]) == "category"
    assert subset_column(["chosen", "rejected"]) is None


# --- training evaluation ----------------------------------------------------------------------------
def eval_rows(n: int) -> list[dict]:
    return [{**row, "subset": ["easy", "hard"][i % 2]} for i, row in enumerate(generate_pairs(n, seed=5))]


def test_tokenize_keeps_the_subset_column(tiny_tokenizer):
    rows = [{**row, "category": "x", "note": "dropped"} for row in generate_pairs(4, seed=2)]
    out, _ = tokenize_pairs(Dataset.from_list(rows), tiny_tokenizer, "explicit prompt", max_length=None)
    assert set(out.column_names) == {"chosen_ids", "rejected_ids", "margin", "category"}
    assert out["category"] == ["x"] * 4


def test_evaluate_reports_the_diagnostics_of_direct_rewards(tiny_tokenizer):
    ds, _ = tokenize_pairs(Dataset.from_list(eval_rows(11)), tiny_tokenizer, "explicit prompt", max_length=None)
    model = load_model("tiny", tiny_tokenizer, seed=0).eval()
    cfg = TrainConfig(per_device_eval_batch_size=4)  # 3 batches, the last one short
    precision = resolve_precision(False, False, torch.device("cpu"))

    got = evaluate(model, ds, PairwiseCollator(tiny_tokenizer.pad_token_id), cfg, precision)

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

    model = load_model("tiny", tiny_tokenizer, seed=0).eval()
    precision = resolve_precision(False, False, torch.device("cpu"))
    got = evaluate(model, ds, collate, TrainConfig(per_device_eval_batch_size=4), precision)
    assert [len(b) for b in seen] == [4, 4, 1]
    assert sum(seen, []) == sorted(lengths)  # each batch holds neighbours in length order
    one_by_one = evaluate(model, ds, plain, TrainConfig(per_device_eval_batch_size=1), precision)
    for key in ("loss", "accuracy", "margin", "ece", "length_corr"):
        assert got[key] == pytest.approx(one_by_one[key], abs=1e-5), key


def test_training_writes_eval_diagnostics_to_metrics_jsonl(tiny_tokenizer, tmp_path):
    data = Dataset.from_list(eval_rows(24))
    train_ds, _ = tokenize_pairs(data.select(range(16)), tiny_tokenizer, "explicit prompt", max_length=None)
    eval_ds, _ = tokenize_pairs(data.select(range(16, 24)), tiny_tokenizer, "explicit prompt", max_length=None)
    cfg = TrainConfig(max_steps=2, per_device_train_batch_size=8, logging_steps=2, disable_tqdm=True)
    model = load_model("tiny", tiny_tokenizer, seed=0)
    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    precision = resolve_precision(False, False, torch.device("cpu"))

    train(
        cfg,
        model,
        train_ds,
        eval_ds,
        collate=PairwiseCollator(tiny_tokenizer.pad_token_id),
        precision=precision,
        writer=writer,
    )

    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"eval_ece", "eval_length_corr", "eval_accuracy/easy", "eval_accuracy/hard"} <= set(last)
    assert 0.0 <= last["eval_ece"] <= 0.5 and -1.0 <= last["eval_length_corr"] <= 1.0
    # 4 pairs per subset: the two subset accuracies average to the overall accuracy
    assert (last["eval_accuracy/easy"] + last["eval_accuracy/hard"]) / 2 == pytest.approx(last["eval_accuracy"])


# --- plots (optional extra) -------------------------------------------------------------------------
def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    from reward.eval import plotting

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(UserError, match=r'pip install -e "\.\[plot\]"'):
        plotting.require_matplotlib()
    with pytest.raises(UserError, match="optional extra"):
        plotting.plot_training_curves("unused.jsonl", "unused.png")


def test_score_plot_panels_hold_the_data(tmp_path):
    pytest.importorskip("matplotlib")
    from reward.eval.plotting import plot_scores

    r_c, r_r = torch.tensor([1.0, 2.0, 0.5, 3.0]), torch.tensor([0.0, 2.5, -1.0, 1.0])
    calib = calibration(preference_probability(r_c, r_r), num_bins=5)
    fig = plot_scores(r_c, r_r, calib, tmp_path / "scores.png")

    assert (tmp_path / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist, rel = fig.axes
    heights = [p.get_height() for p in hist.patches]
    assert sum(heights[: len(heights) // 2]) == 4 and sum(heights[len(heights) // 2 :]) == 4  # chosen, rejected
    assert sorted(p.get_height() for p in rel.patches) == sorted(b.accuracy for b in calib.bins if b.count)


def test_training_curves_from_metrics_jsonl(tmp_path):
    pytest.importorskip("matplotlib")
    from reward.eval.plotting import main, plot_training_curves

    records = [
        {"step": 10, "loss": 0.69, "accuracy": 0.5},
        {"step": 20, "loss": 0.40, "accuracy": 0.8, "eval_loss": 0.45, "eval_accuracy": 0.75},
        {"step": 30, "loss": 0.20, "accuracy": 0.9, "eval_loss": 0.30, "eval_accuracy": 0.85},
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

    fig = plot_training_curves(tmp_path, tmp_path / "curves.png")  # a run folder works too

    loss_ax, acc_ax = fig.axes
    lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in loss_ax.lines}
    assert lines == {"train loss": ([10, 20, 30], [0.69, 0.40, 0.20]), "eval loss": ([20, 30], [0.45, 0.30])}
    assert [line.get_label() for line in acc_ax.lines] == ["train accuracy", "eval accuracy"]
    assert main([str(path), str(tmp_path / "cli.png")]) == 0 and (tmp_path / "cli.png").exists()
    assert main([str(tmp_path / "missing.jsonl"), str(tmp_path / "x.png")]) == 2
