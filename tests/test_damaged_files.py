"""Every file the project reads — data, options file, model folder, checkpoint pieces, score input — missing,
empty, truncated and garbage: exit 2 and one `error:` line naming the file (or its folder), no traceback;
a damaged checkpoint names the previous one to resume from, and `latest` gone bad falls back to the newest
complete checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from test_bad_input import assert_clean_error, invoke
from transformers import pipeline

import score
import train
from reward.config import parse_config
from reward.presets.synthetic import generate_pairs

pytestmark = pytest.mark.usefixtures("quiet_datasets")
DAMAGE = ["missing", "empty", "truncated", "garbage"]
SMALL = ["--synthetic_num_pairs", "64", "--per_device_train_batch_size", "8", "--disable_tqdm"]


def damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # bytes no text codec, JSON, YAML, Parquet or safetensors reader accepts
        path.write_bytes(bytes(range(128, 256)) * 8)


def cases(*names: str) -> list[tuple[str, str]]:
    return [(name, how) for name in names for how in DAMAGE]


def ids(cs: list[tuple[str, str]]) -> list[str]:
    return [f"{name}-{how}" for name, how in cs]


# --- training data ----------------------------------------------------------------------------------
def write_data(path: Path) -> Path:
    rows = generate_pairs(40, seed=2)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=1))
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


DATA = cases("pairs.jsonl", "pairs.json", "pairs.csv", "pairs.parquet")


@pytest.mark.parametrize("name, how", DATA, ids=ids(DATA))
def test_a_damaged_data_file(name, how, tmp_path, capsys):
    path = write_data(tmp_path / name)
    damage(path, how)
    argv = ["--dataset_name", str(path), "--max_steps", "1", "--output_dir", str(tmp_path / "o"), "--disable_tqdm"]
    code, out, err = invoke(train.cli, argv, capsys)
    assert_clean_error(code, err, [str(path)])
    assert "model:" not in out  # stopped before the model loaded


SCORE_INPUT = cases("pairs.jsonl")


@pytest.mark.parametrize("name, how", SCORE_INPUT, ids=ids(SCORE_INPUT))
def test_a_damaged_score_input(name, how, tiny_model_dir, tmp_path, capsys):
    path = write_data(tmp_path / name)
    damage(path, how)
    code, out, err = invoke(score.cli, ["--model", str(tiny_model_dir), "--input", str(path)], capsys)
    assert_clean_error(code, err, [str(path)])
    assert "scoring" not in out


# --- the options file -------------------------------------------------------------------------------
OPTIONS = cases("run.yaml", "run.json")


@pytest.mark.parametrize("name, how", OPTIONS, ids=ids(OPTIONS))
def test_a_damaged_options_file(name, how, tmp_path, capsys):
    path = tmp_path / name
    values = {"max_steps": 5, "learning_rate": 0.001, "lora_target_modules": ["q_proj", "v_proj"]}
    if name.endswith(".yaml"):
        path.write_text("max_steps: 5\nlearning_rate: 0.001\nlora_target_modules: [q_proj, v_proj]\n")
    else:
        path.write_text(json.dumps(values))
    damage(path, how)
    if how == "empty" and name.endswith(".yaml"):  # an empty YAML document sets no option: the defaults
        assert parse_config(["--config", str(path)]).max_steps == -1
        return
    code, out, err = invoke(train.cli, ["--config", str(path), "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, [str(path)])
    assert out == ""


# --- a model folder for score.py ------------------------------------------------------------------------
MODEL_FILES = cases("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


@pytest.mark.parametrize("name, how", MODEL_FILES, ids=ids(MODEL_FILES))
def test_a_damaged_model_folder_for_scoring(name, how, tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "rm"
    shutil.copytree(tiny_model_dir, folder)
    damage(folder / name, how)
    data = write_data(tmp_path / "pairs.jsonl")
    code, _, err = invoke(score.cli, ["--model", str(folder), "--input", str(data)], capsys)
    line = assert_clean_error(code, err, [str(folder)])
    if how != "missing":
        assert name in line, line  # the damaged file itself, not just its folder


# --- checkpoint pieces, resumed -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert train.cli([*SMALL, "--max_steps", "4", "--save_steps", "2", "--output_dir", str(out)]) == 0
    return out


CHECKPOINT_FILES = cases(
    "training_state.pt", "model.safetensors", "config.json", "tokenizer.json", "training_config.json"
)


@pytest.mark.parametrize("name, how", CHECKPOINT_FILES, ids=ids(CHECKPOINT_FILES))
def test_a_damaged_checkpoint_names_the_one_to_resume_instead(name, how, checkpointed, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(checkpointed, out)
    damage(out / "checkpoint-4" / name, how)
    argv = [*SMALL, "--max_steps", "6", "--output_dir", str(out), "--resume_from_checkpoint", "latest"]
    code, printed, err = invoke(train.cli, argv, capsys)
    if (name, how) in {("training_state.pt", "missing"), ("training_config.json", "missing")}:
        # no state: not a complete checkpoint, `latest` falls back to checkpoint-2; no options record: not needed
        assert code == 0, err[-2000:]
        resumed = "checkpoint-2" if name == "training_state.pt" else "checkpoint-4"
        assert f"resuming from {out / resumed} at optimizer step" in printed
        return
    line = assert_clean_error(code, err, [str(out / "checkpoint-4")])
    assert f"resume from the previous checkpoint instead: --resume_from_checkpoint {out / 'checkpoint-2'}" in line
    if how != "missing":
        assert name in line, line


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_latest_pointer_falls_back_to_the_newest_complete_checkpoint(how, checkpointed, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(checkpointed, out)
    damage(out / "latest", how)
    argv = [*SMALL, "--max_steps", "6", "--output_dir", str(out), "--resume_from_checkpoint", "latest"]
    code, printed, err = invoke(train.cli, argv, capsys)
    assert code == 0, err[-2000:]
    assert f"resuming from {out / 'checkpoint-4'} at optimizer step 4" in printed
    assert (out / "latest").read_text().strip() == "checkpoint-6"  # rewritten by the next save


def test_the_checkpoint_named_instead_loads_in_the_pipeline(checkpointed):
    text = "Name a fruit. Sure: mango.</s>"
    assert isinstance(
        pipeline("text-classification", model=str(checkpointed / "checkpoint-2"))(text)[0]["score"], float
    )
