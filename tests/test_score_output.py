"""score.py's paths: it refuses an --output it cannot write before it scores anything (not a traceback after),
reads `--input -` from standard input, and calls a missing path a missing file, not a Hub dataset id."""

from __future__ import annotations

import io
import json
import sys

import pytest
from test_bad_input import assert_clean_error, invoke

import score
from reward.presets.synthetic import generate_pairs


@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
def test_an_unwritable_output_is_an_error_before_scoring(tiny_model_dir, tmp_path, where, capsys, quiet_datasets):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in generate_pairs(4, seed=3)))
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    output = tmp_path / ("file/out.jsonl" if where == "under-a-file" else "dir")
    code = score.cli(["--model", str(tiny_model_dir), "--input", str(path), "--output", str(output)])
    captured = capsys.readouterr()
    assert code == 2 and "scoring" not in captured.out  # refused before the model was even loaded
    expected = f"{tmp_path / 'file'} is a file, not a folder" if where == "under-a-file" else "is a directory"
    assert captured.err.strip() == f"error: --output {output}: {expected}"
    assert not list(tmp_path.rglob("*.tmp*"))  # nothing half-written either


@pytest.mark.parametrize("layout", ["jsonl", "json"])
def test_input_dash_reads_rows_from_stdin(tiny_model_dir, tmp_path, capsys, monkeypatch, layout):
    rows = [{"text": "Q: 2+2? A: 4"}, {"text": "Q: 2+2? A: 5"}]
    text = "".join(json.dumps(r) + "\n" for r in rows) if layout == "jsonl" else json.dumps(rows)
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    out = tmp_path / "out.jsonl"
    code, stdout, err = invoke(
        score.cli, ["--model", str(tiny_model_dir), "--input", "-", "--output", str(out)], capsys
    )
    assert code == 0, err
    assert "scoring 2 texts from -" in stdout
    assert [r["text"] for r in [json.loads(line) for line in out.read_text().splitlines()]] == [r["text"] for r in rows]


def test_bad_stdin_is_one_line_naming_stdin(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"text": "fine"}\n{"text": oops}\n'))
    code, _, err = invoke(score.cli, ["--model", str(tiny_model_dir), "--input", "-"], capsys)
    assert_clean_error(code, err, ["<stdin>: line 2: malformed JSON"])
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = invoke(score.cli, ["--model", str(tiny_model_dir), "--input", "-"], capsys)
    assert_clean_error(code, err, ["<stdin>: the file is empty"])


def test_a_missing_path_is_no_such_file_not_a_hub_id(tiny_model_dir, capsys):
    for missing in ("data/sub/pairs", "data/pairs.jsonl"):
        code, _, err = invoke(score.cli, ["--model", str(tiny_model_dir), "--input", missing], capsys)
        assert_clean_error(code, err, [f"{missing}: no such file or folder"])
