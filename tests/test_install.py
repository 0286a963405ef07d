"""`pip install -e .` is all that training and scoring need (README's Quick start, #29): a run and its
scoring in a Python that sees only the distributions the core requirements pull in, no extra."""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import small_run
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("trl", "peft", "matplotlib", "tensorboard", "trackio", "wandb", "accelerate", "pytest")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def core_distributions(root: str = "reward") -> set[str]:
    """`root` and everything its requirements pull in, no extra of any of them (what pip would install)."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:  # an optional requirement that is not installed here
            continue
        todo += [r.name for r in map(Requirement, requires) if r.marker is None or r.marker.evaluate({"extra": ""})]
    return seen


def core_site(folder: Path) -> Path:
    """A site-packages of links to the core distributions' files only: a venv after `pip install -e .`."""
    core = core_distributions()
    folder.mkdir()
    site = Path(md.distribution("torch").locate_file(""))
    tops = {f.parts[0] for d in md.distributions() if canonical(d.metadata["Name"]) in core for f in d.files or []}
    for top in tops:
        if (site / top).exists() and not (folder / top).exists():
            (folder / top).symlink_to(site / top)
    return folder


# what a Python that sees only `site` can import of the extras (and of the packages only they pull in)
PROBE = "import importlib.util; print([n for n in {names!r} if importlib.util.find_spec(n)])"


def run_core(site: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python ARGV` from the repository root, as the README runs it, seeing `site` and no other package
    (`-S`: the venv's site-packages is not added; PYTHONPATH still is)."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-S", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert not check or proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_training_and_scoring_need_no_extra(tmp_path):
    """A small run trains, saves and scores its held-out pairs with the extras out of reach."""
    assert not {canonical(name) for name in EXTRAS} & core_distributions()  # none is a core requirement
    site = core_site(tmp_path / "site-packages")  # the name matters: datasets hashes by reference only there
    probe = run_core(site, "-c", PROBE.format(names=EXTRAS))
    assert probe.stdout.strip() == "[]", probe.stdout  # out of reach: the run below shows none is needed
    out = tmp_path / "run"
    trained = run_core(site, "train.py", *small_run(out))
    assert "saved reward model" in trained.stdout
    scored = run_core(site, "score.py", "--model", str(out), "--input", str(out / "heldout_pairs.jsonl"))
    assert re.search(r"accuracy [0-9.]+", scored.stdout), scored.stdout[-2000:]
