"""Every documentation page keeps its promises: each cited line of code still exists in its file, each
cited test exists, each named file exists, the links between pages resolve, and the tour prints
what its page shows."""

from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").glob("*.md")])
IDS = [str(p.relative_to(ROOT)) for p in PAGES]


def text(page: Path) -> str:
    return page.read_text()


def test_every_page_is_covered():
    names = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert {
        "tour.md",
        "trl.md",
        "loss.md",
        "training.md",
        "speed.md",
        "scaling.md",
        "scoring.md",
        "consumers.md",
        "reliability.md",
    } <= names
    assert len((ROOT / "README.md").read_bytes()) <= 15 * 1024  # the front page stays short


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_cited_code_line_exists(page):
    for path, snippet in re.findall(r"code: `([^`]+)` › `([^`]+)`", text(page)):
        assert snippet in (ROOT / path).read_text(), f"{page.name}: {path} no longer contains: {snippet}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_cited_test_exists(page):
    for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)", text(page)):
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{page.name}: {path}::{name} not found"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_named_project_file_exists(page):
    for path in re.findall(r"\b((?:reward|tests|benchmarks|docs)/[\w/]+\.(?:py|md))\b", text(page)):
        assert (ROOT / path).is_file(), f"{page.name} names {path}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_link_to_another_page_resolves(page):
    for target in re.findall(r"\]\(([\w./-]+\.md)(?:#[\w-]+)?\)", text(page)):
        assert (page.parent / target).is_file(), f"{page.name} links to {target}, which does not exist"


def test_citations_are_there_to_check():
    cited = sum(len(re.findall(r"code: `([^`]+)` › `([^`]+)`", text(p))) for p in PAGES)
    assert cited >= 14  # loss.md's and the tour's


def test_hand_worked_number_in_the_loss_page_is_right():
    value = (math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2
    assert f"L = {value:.6f}" in text(ROOT / "docs" / "loss.md")


def test_the_tour_prints_what_the_tour_page_shows():
    from reward.presets import tour

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        tour.main()
    page = text(ROOT / "docs" / "tour.md")
    shown = page.split("```text\n", 1)[1].split("```", 1)[0]
    assert shown.strip() == printed.getvalue().strip()
