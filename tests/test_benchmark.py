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
