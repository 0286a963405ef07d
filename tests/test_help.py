"""`train.py --help` / `score.py --help` (#29): answered before torch is imported, the options under
headings, each default said once, each `--no_X` a short "Turn off --X." (reward/options.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from reward.config import TrainConfig, parse_config
from reward.eval.score_cli import SCORE_GROUPS, ScoreConfig, parse_score_config
from reward.options import TRAIN_GROUPS

ROOT = Path(__file__).resolve().parents[1]
# the headings #29 asks `train.py --help` for
ASKED = [
    "model and loading",
    "data and formatting",
    "optimisation",
    "speed",
    "evaluation",
    "checkpoints and resume",
    "logging and trackers",
    "Hub",
    "distributed",
]
COMMANDS = {
    "train.py": (parse_config, TrainConfig, TRAIN_GROUPS),
    "score.py": (parse_score_config, ScoreConfig, SCORE_GROUPS),
}

# runs a script's --help as `python SCRIPT --help` does, then reports what it imported
PROBE = """
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as exc:
    code = exc.code
print("EXIT", code, "TORCH", "torch" in sys.modules, "RECIPE", "reward.recipe" in sys.modules)
"""


def help_text(script: str, capsys) -> str:
    parse = COMMANDS[script][0]
    with pytest.raises(SystemExit) as done:
        parse(["--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def entries(text: str) -> dict[str, str]:
    """Each option's entry in a help text: its first flag -> the flags and help text, lines joined."""
    found: dict[str, str] = {}
    for block in re.split(r"\n(?=  -)", text):
        if flag := re.match(r"\s*(--?\w+)", block):
            found[flag.group(1)] = " ".join(block.split("\n\n")[0].split())  # not the next heading
    return found


def sections(text: str) -> dict[str, str]:
    """A help text's headings -> the text under each."""
    return dict(re.findall(r"^(\S[^\n]*):\n(.*?)(?=\n\S|\Z)", text, flags=re.S | re.M))


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_help_answers_without_importing_torch(script):
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(script=script)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert f"usage: {script}" in proc.stdout
    assert "EXIT 0 TORCH False RECIPE False" in proc.stdout, proc.stdout[-500:]


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_each_option_says_its_default_once(script, capsys):
    text = help_text(script, capsys)
    found = entries(text)
    assert {f"--{f.name}" for f in fields(COMMANDS[script][1])} <= set(found)
    for entry in found.values():
        assert entry.count("default:") <= 1, entry  # ours ("default: cuda if available") or argparse's
        assert "(default: None)" not in entry, entry  # an option left unset is not used: nothing to say


def test_an_option_without_its_own_default_wording_gets_argparses(capsys):
    found = entries(help_text("train.py", capsys))
    assert found["--learning_rate"].endswith("(default: 0.0001)")
    assert "(default: its main branch)" in found["--model_revision"]


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_each_no_flag_is_a_short_turn_off(script, capsys):
    config = COMMANDS[script][1]
    found = entries(help_text(script, capsys))
    on_by_default = {f.name for f in fields(config) if config.__dataclass_fields__[f.name].default is True}
    negations = {flag.removeprefix("--no_"): entry for flag, entry in found.items() if flag.startswith("--no_")}
    assert set(negations) == on_by_default and on_by_default
    for name, entry in negations.items():
        assert entry.endswith(f"Turn off --{name}."), entry
        assert len(entry) < 80, entry  # not a copy of --NAME's help


def test_a_no_flag_still_turns_its_option_off():
    assert TrainConfig().append_eos and not parse_config(["--no_append_eos"]).append_eos
    assert not parse_config(["--group_by_length", "false"]).group_by_length


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_every_field_sits_under_exactly_one_heading(script):
    _, config, groups = COMMANDS[script]
    named = Counter(name for names in groups.values() for name in names.split())
    assert [name for name, n in named.items() if n > 1] == []
    assert sorted(named) == sorted(f.name for f in fields(config))


@pytest.mark.parametrize("script", sorted(COMMANDS))
def test_help_shows_each_option_under_its_heading(script, capsys):
    text = help_text(script, capsys)
    under = sections(text)
    for heading, names in COMMANDS[script][2].items():
        listed = set(entries(under[heading]))
        assert {f"--{name}" for name in names.split()} <= listed, heading
    assert set(entries(under["options"])) <= {"-h", "--config"}  # nothing left under argparse's own heading
    assert re.match(r"usage: \S+ [^\n]*\n\n", text), text[:300]  # one usage line, not every flag


def test_train_help_has_the_headings_29_asks_for(capsys):
    headings = list(sections(help_text("train.py", capsys)))
    for asked in ASKED:
        assert any(asked in heading for heading in headings), asked


def test_score_truncation_help_lists_the_policies_scoring_accepts():
    from reward.eval.lengths import POLICIES  # torch-side; the help text spells them out to stay torch-free

    assert f"({'/'.join(POLICIES)})" in ScoreConfig.__dataclass_fields__["truncation"].metadata["help"]


def test_train_main_is_still_importable_from_the_script():
    import train
    from reward.recipe import main

    assert train.main is main
    with pytest.raises(AttributeError):
        train.not_there  # noqa: B018
