"""reward/errors.py: the one command-line shell. A UserError (or a failure the command maps) is one `error:`
line and its exit code, no traceback unless --debug; anything else is a bug and keeps its traceback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from reward.errors import UserError, first_line, run_cli


class Stop(RuntimeError):
    """A failure a command maps to its own exit code (train.py: non-finite training, 3)."""


def parse(argv: list[str]) -> SimpleNamespace:
    if "--bad-option" in argv:
        raise UserError("--bad-option is not an option")
    return SimpleNamespace(debug="--debug" in argv, argv=argv)


def run(cfg: SimpleNamespace) -> int:
    if "--bad-row" in cfg.argv:
        raise UserError("data.jsonl: line 3: field 'chosen' is empty")
    if "--stop" in cfg.argv:
        raise Stop("3 optimizer steps in a row had a non-finite loss")
    if "--bug" in cfg.argv:
        raise KeyError("a bug")
    return 0


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["--bad-option"], 2, "error: --bad-option is not an option"),  # while parsing
        (["--bad-row"], 2, "error: data.jsonl: line 3: field 'chosen' is empty"),  # while running
        (["--stop"], 7, "error: 3 optimizer steps in a row had a non-finite loss"),  # a mapped failure
    ],
)
def test_an_expected_failure_is_one_line_and_its_exit_code(argv, code, message, capsys):
    assert run_cli(argv, parse, run, failures={Stop: 7}) == code
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [message]


def test_debug_shows_the_traceback_too(capsys):
    assert run_cli(["--bad-row", "--debug"], parse, run) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == "error: data.jsonl: line 3: field 'chosen' is empty"


def test_a_bug_keeps_its_traceback():
    with pytest.raises(KeyError):
        run_cli(["--bug"], parse, run)
    assert run_cli([], parse, run) == 0


def test_first_line_of_a_library_error():
    assert first_line(ValueError("bad header\n  in file x\n  at row 3")) == "bad header"
    assert first_line(ValueError("")) == "ValueError"
