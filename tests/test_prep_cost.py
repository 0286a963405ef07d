"""benchmarks/prep_cost.py: the super-linear rule (a pure function, fast) and the script end to end on
tiny sizes (slow: one subprocess per size and system). Timings are not checked, only what the
README's table relies on: every row and field is there, and both systems keep the same pairs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.prep_cost import flags, super_linear
from tests.conftest import ROOT


def test_super_linear_compares_time_per_pair_at_the_ends():
    linear = {10_000: 1.0, 100_000: 10.0, 1_000_000: 100.0}
    assert super_linear(linear) is None
    assert super_linear({10_000: 1.0, 1_000_000: 150.0}) is None  # exactly 1.5x is not above it
    assert super_linear({10_000: 1.0, 1_000_000: 151.0}) == 1.51
    assert super_linear({1_000_000: 300.0, 10_000: 1.0, 100_000: 1.0}) == 3.0  # order of the dict does not matter
    assert super_linear({10_000: 1.0, 1_000_000: 200.0}, factor=2.5) is None
    assert super_linear({10_000: 5.0, 1_000_000: 10.0}) is None  # fixed costs dominate: per pair falls
    assert super_linear({10_000: 1.0}) is None and super_linear({}) is None  # nothing to compare


def test_flags_name_the_system_and_phase():
    def row(pairs, ours_prep, trl_prep):
        return {
            "pairs": pairs,
            "ours": {"prep_s": ours_prep, "first_step_s": 1.0},
            "trl": {"prep_s": trl_prep, "first_step_s": 1.0},
        }

    assert flags([row(10, 1.0, 1.0), row(100, 10.0, 10.0)]) == []
    (line,) = flags([row(10, 1.0, 1.0), row(100, 10.0, 20.0)])
    assert line.startswith("!!! SUPER-LINEAR: trl prep:") and "2.00x" in line and "at 100 pairs" in line


@pytest.mark.slow
def test_prep_cost_script_on_tiny_sizes(tmp_path):
    pytest.importorskip("trl")
    cmd = [sys.executable, "benchmarks/prep_cost.py", "--sizes", "200", "--data", "synthetic-long"]
    cmd += ["--max_length", "128", "--threads", "2", "--results_dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| pairs | ours prep s | TRL prep s |" in proc.stdout and "| 200 |" in proc.stdout
    (path,) = tmp_path.glob("*-prep-cost-synthetic-long.json")
    report = json.loads(path.read_text())
    assert set(report) == {"header", "load_before", "load_after", "rows", "flags"}
    assert len(report["load_before"]) == 3 and "load average" in report["header"]
    assert [r["pairs"] for r in report["rows"]] == [200]
    fields = {"prep_s", "prep_peak_mb", "prep_start_mb", "first_step_s", "first_step_peak_mb", "kept", "reset"}
    for r in report["rows"]:
        for system in ("ours", "trl"):
            got = r[system]
            assert fields <= set(got) and got["system"] == system and got["pairs"] == r["pairs"]
            assert got["prep_s"] > 0 and got["first_step_s"] > 0
            assert got["prep_peak_mb"] >= got["prep_start_mb"] > 0  # a phase's peak includes its start
        assert "init_s" in r["trl"]
        # max_length 128 drops the long-history pairs; the generated data has no identical pair (its
        # responses differ in length), so TRL, which drops only over-long pairs, keeps exactly ours
        assert 0 < r["ours"]["kept"] == r["trl"]["kept"] < r["pairs"]
    assert report["flags"] == flags(report["rows"])
