"""The core is a layer: its modules import no optional part, and only the recipe wires the parts in
(pyproject.toml's import-linter contracts, `lint-imports` in CI). The loop, evaluation and batching ask a
micro-batch for what they need instead of testing its type."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = "config options errors sources data tokenizer formatting collate batching model loss loop evaluate metrics"
CORE = [*CORE.split(), "export"]  # the core path's modules: reward/*.py but the recipe


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the `reward` package under `tree`, with the project's contracts."""
    command = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tree)}  # this tree's reward/, not the installed one
    return subprocess.run([command, "--config", str(ROOT / "pyproject.toml")], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_project_keeps_its_import_contracts():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    "module, line, broken",
    [
        ("loss", "import reward.fast.packing", "reward.loss is not allowed to import reward.fast"),
        ("data", "from reward.presets import synthetic", "reward.data is not allowed to import reward.presets"),
        ("fast/grouping", "import reward.recipe", "reward.fast is not allowed to import reward.recipe"),
    ],
)
def test_an_import_the_wrong_way_breaks_a_contract(tmp_path, module, line, broken):
    shutil.copytree(ROOT / "reward", tmp_path / "reward", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "reward" / f"{module}.py", "a") as f:
        f.write(f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and broken in result.stdout, result.stdout[-3000:]


def test_the_core_asks_a_micro_batch_and_never_tests_its_type():
    """`isinstance` appears nowhere in the loop, evaluation, batching, collation, loss or metrics: a padded,
    packed or ranked micro-batch answers the same questions (reward/collate.py `MicroBatch`, reward/loss.py
    `Objective`)."""
    for name in ("loop", "evaluate", "batching", "collate", "loss", "metrics"):
        tree = ast.parse((ROOT / "reward" / f"{name}.py").read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "isinstance"]
        assert not calls, f"reward/{name}.py line {calls[0].lineno}"


def test_the_core_modules_are_the_ones_the_contract_names():
    flat = sorted(p.stem for p in (ROOT / "reward").glob("*.py") if p.stem not in ("__init__", "recipe"))
    assert flat == sorted(CORE)
    contract = (ROOT / "pyproject.toml").read_text()
    assert all(f'"reward.{name}"' in contract for name in CORE)
