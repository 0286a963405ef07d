"""benchmarks/vs_trl.py end to end on the tiny model: every mode, the warm start, the report files.

Speed is not checked here (timings belong to benchmark runs); what is checked is what the README's
table relies on: the per-step losses of the same-batch modes match TRL's, the token accounting
(padding, shared prefix) is right, and the held-out numbers come from one shared evaluation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # subprocesses (torchrun / train.py)


def test_benchmark_all_modes_with_warm_start(tmp_path):
    pytest.importorskip("trl")
    cmd = [
        sys.executable,
        "benchmarks/vs_trl.py",
        "--model",
        "tiny",
        "--data",
        "synthetic-long",
        "--mode",
        "all",
        "--num_pairs",
        "60",
        "--batch_size",
        "16",
        "--max_steps",
        "2",
        "--repeats",
        "1",
        "--threads",
        "2",
        "--pretrain_steps",
        "2",
        "--workdir",
        str(tmp_path / "work"),
        "--results_dir",
        str(tmp_path / "results"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "### mode: fast" in proc.stdout
        and "| pairs/s (median) |" in proc.stdout
        and "| true utilisation" in proc.stdout
    )
    (report,) = (tmp_path / "results").glob("*.json")
    saved = json.loads(report.read_text())
    assert "pretrained 2 steps on synthetic (held-out: accuracy" in saved["header"]
    assert saved["before_training"]["pairs"] == 6  # 10 % of 60 held out, evaluated before any training

    results = saved["results"]
    assert list(results) == ["parity", "same-batches", "fast"]
    trl = results["parity"]["trl"]
    assert all(results[mode]["trl"] == trl for mode in results)  # one TRL baseline for every mode
    assert len(trl["losses"]) == 2 and trl["padded_share"] > 0
    for mode in ("parity", "same-batches"):  # TRL's micro-batches: same losses, same pairs, same tokens
        ours = results[mode]["ours"]
        assert max(abs(a - b) for a, b in zip(ours["losses"], trl["losses"], strict=True)) <= 1e-5, mode
        assert ours["pairs"] == trl["pairs"] == 32 and ours["real_tokens_per_pair"] == trl["real_tokens_per_pair"]
        assert ours["eval_loss"] == pytest.approx(trl["eval_loss"], abs=1e-4), mode
    assert results["parity"]["ours"]["padded_share"] == trl["padded_share"]
    assert results["parity"]["ours"]["packed_forwards"] == trl["packed_forwards"] == 0  # counted in the forward
    for mode in ("same-batches", "fast"):  # one packed row, the prompt computed once per pair
        ours = results[mode]["ours"]
        assert ours["packed_forwards"] == ours["micro_batches"] == 2 and ours["padded_fallbacks"] == 0
        assert ours["padded_share"] == 0.0
        assert ours["tokens_computed_per_pair"] < ours["real_tokens_per_pair"]
        assert ours["slots_per_pair"] == ours["tokens_computed_per_pair"]

    # The memory row measures training: 16 long-prompt pairs a step hold 2B x T positions of activations
    # padded, about B x (P + C' + R') packed, and the peak is reset right before the training call, so
    # the shared evaluation (or the imports) cannot set it. TRL (padded) must look like parity.
    padded, packed = results["parity"]["ours"], results["fast"]["ours"]
    assert padded["memory_peak_reset"] and packed["memory_peak_reset"]
    assert padded["memory_rise_mb"] > 2 * packed["memory_rise_mb"], (padded["memory_rise_mb"], packed["memory_rise_mb"])
    assert trl["memory_rise_mb"] > 2 * packed["memory_rise_mb"]
    assert padded["peak_memory_mb"] > packed["peak_memory_mb"]
    for run in (trl, padded, packed):  # the utilisation rows: model FLOPs of what ran / of whole sequences
        linear = run["linear_flops_per_token"] * run["slots_per_pair"] * run["pairs"] / run["seconds"]
        attention = run["attention_flops_per_score"] * run["attention_scores"] / run["seconds"]
        assert run["true_linear_flops_per_s"] == pytest.approx(linear)
        assert run["true_flops_per_s"] == pytest.approx(linear + attention)
        real = (
            run["linear_flops_per_token"] * run["real_tokens"]
            + run["attention_flops_per_score"] * run["real_attention_scores"]
        )
        assert run["effective_flops_per_s"] == pytest.approx(real / run["seconds"])
    assert packed["true_flops_per_s"] < packed["effective_flops_per_s"]  # the prompt once, no padding
    assert packed["attention_scores"] < packed["real_attention_scores"]  # R' does not attend to P twice
    assert padded["true_flops_per_s"] > padded["effective_flops_per_s"]  # padding is computed too
    assert padded["attention_scores"] > padded["real_attention_scores"]


def test_ranked_benchmark_counts_the_comparisons_and_tokens_each_system_ran(tmp_path):
    """`--mode ranked`: TRL on the all-pairs expansion vs our grouped rankings. The same comparisons per
    step, TRL's tokens from its padded pairs, ours from the packed segments (each prompt once), and the
    peak memory read after training, before the shared evaluation, so it differs between the two."""
    pytest.importorskip("trl")
    cmd = [
        sys.executable,
        "benchmarks/vs_trl.py",
        "--mode",
        "ranked",
        "--model",
        "tiny",
        "--num_prompts",
        "60",
        "--prompts_per_step",
        "2",
        "--trl_batch_size",
        "6",
        "--max_steps",
        "3",
        "--repeats",
        "1",
        "--threads",
        "2",
        "--workdir",
        str(tmp_path / "work"),
        "--results_dir",
        str(tmp_path / "results"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| comparisons/s (median) |" in proc.stdout
    (report,) = (tmp_path / "results").glob("*.json")
    saved = json.loads(report.read_text())
    trl, ours = saved["trl"], saved["ours"]
    assert trl["comparisons"] == ours["comparisons"] == 3 * 2 * 6  # steps x prompts x C(4, 2)
    assert "TRL 6 pairs x 2 accumulation" in saved["header"]
    # TRL computes the prompt in both sequences of every pair; ours once per prompt, no padding
    assert ours["tokens_computed_per_comparison"] < trl["tokens_computed_per_comparison"] / 3
    assert ours["positions_per_comparison"] == ours["tokens_computed_per_comparison"]
    assert trl["positions_per_comparison"] > trl["tokens_computed_per_comparison"]  # TRL pads
    assert ours["peak_memory_mb"] < trl["peak_memory_mb"]
    assert ours["packed_forwards"] == 3 and ours["padded_fallbacks"] == 0 and trl["packed_forwards"] == 0
    assert ours["eval_comparisons"] == trl["eval_comparisons"] == 6 * 6  # one held-out set for both
    assert ours["comparisons_per_s_range"][0] <= ours["comparisons_per_s"] <= ours["comparisons_per_s_range"][1]


def test_attention_scores_by_hand():
    """Two pairs with pad 0: ([5,6,7,8], [5,6,9]) shares P = [5,6], C' = 2, R' = 1; ([3,4], [7]) shares nothing."""
    from types import SimpleNamespace

    from benchmarks.measure import attention_flops_per_score, attention_scores, real_attention_scores
    from reward.collate import PairwiseCollator
    from reward.fast.packing import pack_pairs

    pairs = [{"chosen_ids": [5, 6, 7, 8], "rejected_ids": [5, 6, 9]}, {"chosen_ids": [3, 4], "rejected_ids": [7]}]
    packed, padded = pack_pairs(pairs, 0), PairwiseCollator(0)(pairs)
    # whole sequences, causal: 4 + 3 + 2 + 1 tokens -> 10 + 6 + 3 + 1 scores, however they are laid out
    assert real_attention_scores(packed) == real_attention_scores(padded) == 20
    # packed: [P|C'] causal (10) + R' sees P and itself (2 + 1); [C'|R'] with no P: 3 + 1
    assert attention_scores(packed) == 13 + 4
    # padded: 4 rows of width 4, each causal over the whole width, padding included
    assert attention_scores(padded) == 4 * 10
    config = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, hidden_size=64)  # head_dim 16
    assert attention_flops_per_score(SimpleNamespace(config=config)) == 12 * 2 * 4 * 16


def test_the_busy_machine_warning():
    from benchmarks.measure import busy_warning

    key = "comparisons_per_s"
    quiet = {"trl": [{key: 10.0}, {key: 9.5}]}
    assert busy_warning(300e9, 290e9, quiet, key) is None
    assert "matmul 300 -> 200 GFLOP/s" in busy_warning(300e9, 200e9, quiet, key)
    assert busy_warning(300e9, 250e9, quiet, key) is None  # 17 %: within the 20 % allowed
    noisy = {"ours": [{key: 26.0}, {key: 19.0}]}
    assert "ours repeats 19.0–26.0 comparisons/s" in busy_warning(300e9, 300e9, noisy, key)
    assert busy_warning(300e9, 300e9, {"ours": [{"pairs_per_s": 10.0}, {"pairs_per_s": 8.4}]}, "pairs_per_s")
