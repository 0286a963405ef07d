"""score.py refuses an --output it cannot write before it scores anything (not a traceback after)."""

from __future__ import annotations

import json

import pytest

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
