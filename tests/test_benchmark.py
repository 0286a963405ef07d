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
        "4",
        "--max_steps",
        "3",
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
    assert "### mode: fast" in proc.stdout and "| pairs/s |" in proc.stdout
    (report,) = (tmp_path / "results").glob("*.json")
    saved = json.loads(report.read_text())
    assert "pretrained 2 steps on synthetic (held-out: accuracy" in saved["header"]
    assert saved["before_training"]["pairs"] == 6  # 10 % of 60 held out, evaluated before any training

    results = saved["results"]
    assert list(results) == ["parity", "same-batches", "fast"]
    trl = results["parity"]["trl"]
    assert all(results[mode]["trl"] == trl for mode in results)  # one TRL baseline for every mode
    assert len(trl["losses"]) == 3 and trl["padded_share"] > 0
    for mode in ("parity", "same-batches"):  # TRL's micro-batches: same losses, same pairs, same tokens
        ours = results[mode]["ours"]
        assert max(abs(a - b) for a, b in zip(ours["losses"], trl["losses"])) <= 1e-5, mode
        assert ours["pairs"] == trl["pairs"] == 12 and ours["real_tokens_per_pair"] == trl["real_tokens_per_pair"]
        assert ours["eval_loss"] == pytest.approx(trl["eval_loss"], abs=1e-4), mode
    assert results["parity"]["ours"]["padded_share"] == trl["padded_share"]
    for mode in ("same-batches", "fast"):  # one packed row, the prompt computed once per pair
        ours = results[mode]["ours"]
        assert ours["padded_share"] == 0.0
        assert ours["tokens_computed_per_pair"] < ours["real_tokens_per_pair"]
        assert ours["slots_per_pair"] == ours["tokens_computed_per_pair"]


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
    assert ours["eval_comparisons"] == trl["eval_comparisons"] == 6 * 6  # one held-out set for both
    assert ours["comparisons_per_s_range"][0] <= ours["comparisons_per_s"] <= ours["comparisons_per_s_range"][1]


def test_the_busy_machine_warning():
    from benchmarks.vs_trl_ranked import busy_warning

    quiet = {"trl": [{"comparisons_per_s": 10.0}, {"comparisons_per_s": 9.5}]}
    assert busy_warning(300e9, 290e9, quiet) is None
    assert "matmul 300 -> 200 GFLOP/s" in busy_warning(300e9, 200e9, quiet)
    noisy = {"ours": [{"comparisons_per_s": 26.0}, {"comparisons_per_s": 19.0}]}
    assert "ours repeats 19.0–26.0" in busy_warning(300e9, 300e9, noisy)
