"""reward/metrics.py against hand-worked numbers: the exact averages of a step or an evaluation (`MetricTotals`,
read from the device once), the logging window, and the diagnostics (ECE + reliability, length
correlation, subset accuracy)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from reward.collate import PairwiseCollator
from reward.loss import PairObjective, bradley_terry_loss
from reward.metrics import (
    MetricTotals,
    Window,
    calibration,
    diagnose,
    eval_record,
    loss_metrics,
    pearson,
    preference_probability,
    subset_accuracy,
)


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


# --- exact averages, read from the device once -----------------------------------------------------------
def test_one_loss_calls_metrics_by_hand():
    out = bradley_terry_loss(torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]))  # Δ = 2, −1
    m = loss_metrics(out)
    assert (m["accuracy"], m["margin"], m["pairs"]) == (0.5, 0.5, 2)
    assert (m["reward_mean"], m["reward_min"], m["reward_max"]) == pytest.approx((0.75, 0.0, 2.0))
    assert m["loss"] == pytest.approx((0.126928 + 1.313262) / 2, abs=1e-6)
    ties = loss_metrics(bradley_terry_loss(torch.tensor([1.0, 1.0, 3.0]), torch.tensor([1.0, 0.0, 3.0])))
    assert ties["accuracy"] == pytest.approx(1 / 3)  # a tie of rewards counts as wrong


def test_totals_over_micro_batches_are_pair_weighted_never_a_mean_of_means():
    """2 pairs (both right, Δ 1 and 3) then 1 pair (wrong, Δ −2): accuracy 2/3 and margin 2/3, where the mean of
    the two micro-batches' means would say 1/2 and 0."""
    totals = MetricTotals()
    totals.add(bradley_terry_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])))
    totals.add(bradley_terry_loss(torch.tensor([0.0]), torch.tensor([2.0])))
    m = totals.summary()
    assert m["pairs"] == 3 and m["accuracy"] == pytest.approx(2 / 3) and m["margin"] == pytest.approx(2 / 3)
    assert (m["reward_min"], m["reward_max"]) == (0.0, 3.0) and m["reward_mean"] == pytest.approx(6 / 6)
    merged = MetricTotals()
    merged.merge(totals)
    merged.merge(MetricTotals())  # an empty window adds nothing
    assert merged.summary() == m
    assert MetricTotals().summary()["pairs"] == 0  # no pairs: zeros, and min/max that any pair replaces


def test_ties_trained_toward_a_half_count_in_the_loss_not_in_accuracy():
    """A ranking's comparisons: 2 decided (one right) and 1 tie trained toward ½ (reward/ranked/loss.py)."""
    from reward.ranked.loss import all_comparisons, all_pairs_loss

    out = all_pairs_loss(torch.tensor([1.0, 0.0, 0.25]), all_comparisons([[1.0, 1.0, 0.0]], ties="half"))
    m = loss_metrics(out)
    assert m["pairs"] == 3  # every comparison trained, the tie (0, 1) included
    assert m["accuracy"] == 0.5 and m["margin"] == pytest.approx((0.75 - 0.25) / 2)  # (0 ≻ 2): Δ 0.75, (1 ≻ 2): −0.25


class NoSync:
    """Reading a tensor's value into Python (what waits for a GPU) raises while this is active."""

    def __enter__(self):
        self.patch = pytest.MonkeyPatch()
        for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
            self.patch.setattr(torch.Tensor, name, self.refuse)
        return self

    @staticmethod
    def refuse(*args, **kwargs):
        raise AssertionError("a value was read from the device")

    def __exit__(self, *exc):
        self.patch.undo()


def test_the_loss_and_its_totals_never_read_a_value_per_micro_batch(tiny_tokenizer):
    """The objective's loss and the running totals stay on the device: the step reads them once, in
    `summary()` (each read is a host sync on a GPU). Pairs and grouped rankings alike."""
    from reward.ranked.collate import ranked_batch
    from reward.ranked.loss import RankingObjective

    pairs = PairwiseCollator(0)([{"chosen_ids": [5, 6], "rejected_ids": [5, 7, 8], "margin": 0.5}] * 3)
    prompts = ranked_batch(
        [{"completion_ids": [[5, 6], [5, 7], [5]], "scores": [2.0, 1.0, 0.0], "better": [0, 0, 1], "worse": [1, 2, 2],
          "tied": [False, False, False]}], pad_token_id=0)  # fmt: skip
    cases = [
        (PairObjective(0.01, 0.1), pairs, torch.randn(6), 6),
        (RankingObjective(center_rewards_coefficient=0.01), prompts, torch.randn(3), 3),
        (RankingObjective("plackett_luce", "prompt"), prompts, torch.randn(3), 1),
    ]
    for objective, batch, rewards, units in cases:
        totals = MetricTotals()
        with NoSync():
            for _ in range(2):
                totals.add(objective(rewards.requires_grad_(), batch, units))
        assert totals.summary()["pairs"] > 0  # read here, once


def test_a_logging_window_reports_its_steps_and_their_rates():
    window = Window()
    assert window.close() == ({}, {})  # every step skipped: nothing to report
    totals = MetricTotals()
    totals.add(bradley_terry_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0])))
    window.add(totals, grad_norm=2.0, tokens=30)
    window.add(totals, grad_norm=4.0, tokens=10)
    window.seconds = 2.0
    summary, record = window.close()
    assert summary["pairs"] == 4 and record == {**summary, "grad_norm": 3.0, "pairs_per_s": 2.0, "tokens_per_s": 20.0}


def test_evaluation_results_are_named_as_trl_names_them():
    assert eval_record({"": {"loss": 0.5}}) == {"eval_loss": 0.5}
    assert eval_record({"a": {"loss": 0.5, "pairs": 3}, "b": {"loss": 0.25}}) == {
        "eval_a_loss": 0.5, "eval_a_pairs": 3, "eval_b_loss": 0.25
    }  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: a host read only waits on a GPU")
def test_no_loss_or_total_waits_on_the_gpu_per_micro_batch():
    """On a GPU, torch itself reports every host-device sync (`set_sync_debug_mode("error")`): none in a
    micro-batch's loss and totals, pairs and grouped rankings (ties and all), until `summary()`."""
    from reward.ranked.collate import ranked_batch
    from reward.ranked.loss import RankingObjective

    pairs = PairwiseCollator(0)([{"chosen_ids": [5, 6], "rejected_ids": [5, 7, 8], "margin": 0.5}] * 3)
    prompts = ranked_batch(
        [{"completion_ids": [[5, 6], [5, 7], [5]], "scores": [1.0, 1.0, 0.0], "better": [0, 0, 1], "worse": [1, 2, 2],
          "tied": [True, False, False]}], pad_token_id=0)  # fmt: skip
    cases = [
        (PairObjective(0.01, 0.1), pairs, 6, 6),
        (RankingObjective(center_rewards_coefficient=0.01), prompts, 3, 3),
        (RankingObjective("plackett_luce", "prompt"), prompts, 3, 1),
    ]
    for objective, batch, n, units in cases:
        rewards = torch.randn(n, device="cuda", requires_grad=True)
        totals = MetricTotals()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(2):
                totals.add(objective(rewards, batch, units))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert totals.summary()["pairs"] > 0
