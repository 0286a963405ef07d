"""benchmarks/gpu_check.sh and benchmarks/kernel_count.py, checked without a GPU.

The script's CUDA stages cannot run here; what can: it parses, it stops with one line and exit 2 when
there is no CUDA device, every test it names exists, and the attention-call counts kernel_count.py
reports (the numbers docs/gpu.md builds its cost model on) are the formula's.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(ROOT))

from benchmarks.kernel_count import build_model, expected_sdpa_forward, measure  # noqa: E402


def test_the_script_parses():
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA exit")
def test_without_cuda_it_stops_with_one_line_and_runs_nothing(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == ["gpu_check: no CUDA device (torch.cuda.is_available() is False); nothing run"]
    assert not out.exists()  # stopped before making the results folder


def test_without_torch_it_says_so_in_one_line(tmp_path):
    python = tmp_path / "no-such-python"
    env = {**os.environ, "PYTHON": str(python)}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [f"gpu_check: cannot import torch with {python}; nothing run"]


def test_every_test_the_script_names_exists():
    named = re.findall(r'"(tests/[\w/]+\.py)(?:::(\w+)(?:\[([\w-]+)\])?)?"', SCRIPT.read_text())
    assert len(named) >= 7  # fp16, bf16, trainer snippet, DDP, FSDP ...
    for path, function, case in named:
        source = (ROOT / path).read_text()
        functions = {n.name for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)}
        assert not function or function in functions, f"{path}::{function}"
        assert not case or f'"{case}"' in source, f"{path}::{function}[{case}]"  # a parametrize id


def test_the_formula_counts_one_causal_call_per_segment_and_one_per_rejected_suffix():
    segments = [(0, 0, 3, 2, 2), (0, 7, 5, 1, 0), (0, 13, 4, 0, 0)]  # R' of 2 tokens, R' empty, unshared
    assert expected_sdpa_forward(segments, layers=3) == 3 * (2 + 1 + 1)
    ranking = [(0, 0, 2, 1, 1, 3, 0)]  # K = 4 responses, the last one all prefix
    assert expected_sdpa_forward(ranking, layers=2) == 2 * 3


@pytest.fixture(scope="module")
def tiny_model():
    model, _ = build_model("tiny", layers=3)
    return model.train()


def pairs_for(model, rejected_suffix: list[bool]) -> list[dict]:
    """Pairs with a 6-token shared prompt; a False entry's rejected side is the prompt alone (R' empty)."""
    pad = model.config.pad_token_id
    ids = [i for i in range(4, 60) if i != pad]
    prompt = ids[:6]
    return [
        {"chosen_ids": prompt + ids[6 + i : 9 + i], "rejected_ids": prompt + (ids[20 + i : 22 + i] if extra else [])}
        for i, extra in enumerate(rejected_suffix)
    ]


def test_measured_calls_are_the_formulas(tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = measure(tiny_model, pairs_for(tiny_model, [True] * 4), torch.device("cpu"), time_repeats=0)
    layers, segments = 3, counts["segments"]
    assert segments == 4
    assert counts["packed"]["sdpa_forward"] == counts["expected_packed_sdpa_forward"] == 2 * segments * layers
    assert counts["padded"]["sdpa_forward"] == counts["expected_padded_sdpa_forward"] == layers
    for path in ("packed", "padded"):  # every call has its own backward kernel on the CPU (flash path)
        assert counts[path]["sdpa_backward"] == counts[path]["sdpa_forward"]
        assert counts[path]["cuda_kernels"] == counts[path]["cuda_launches"] == 0
    assert counts["packed"]["aten_compute_ops"] > counts["padded"]["aten_compute_ops"]  # the loop's cats and masks
    assert counts["packed"]["aten_ops"] > counts["packed"]["aten_compute_ops"]  # its slices are views
    assert counts["max_abs_reward_difference"] < 1e-5  # the two paths computed the same rewards


def test_an_empty_rejected_suffix_costs_one_call(tiny_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counts = measure(tiny_model, pairs_for(tiny_model, [True, False, True]), torch.device("cpu"), time_repeats=0)
    assert counts["segments_with_rejected_suffix"] == 2
    assert counts["packed"]["sdpa_forward"] == counts["expected_packed_sdpa_forward"] == 3 * (2 + 1 + 2)


@pytest.mark.slow
def test_the_command_writes_its_json(tmp_path):
    out = tmp_path / "k.json"
    cmd = [sys.executable, "benchmarks/kernel_count.py", "--model", "tiny", "--batch_size", "2"]
    proc = subprocess.run([*cmd, "--time_repeats", "1", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["layers"] == 2 and result["pairs"] == 2
    assert result["packed"]["sdpa_forward"] == result["expected_packed_sdpa_forward"]
    assert result["padded"]["sdpa_forward_per_layer"] == 1.0
    assert result["packed"]["ms_per_micro_batch"] > 0
    assert result["command"].startswith("python benchmarks/kernel_count.py --model tiny")
