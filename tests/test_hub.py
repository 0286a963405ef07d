"""`--push_to_hub`, offline: a push that cannot work (no token, a Hub that does not answer, HF_HUB_OFFLINE) stops
in preflight with one `error:` line and exit 2, before any data or model loads; the files a push uploads are
exactly what `pipeline("text-classification")` and the model card need (no checkpoints, resume state, held-out
rows, lock, tracker logs), and a folder made of only those files scores as the original does.

The Hub is never reached: the failing runs point HF_ENDPOINT at a closed local port, and huggingface_hub reads its
environment once, at import, so those runs are `train.py` subprocesses with their own environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import train_tiny

from reward.config import TrainConfig, parse_config
from reward.errors import UserError
from reward.integrations.hub import check_hub, files_to_upload

ROOT = Path(__file__).resolve().parents[1]
CLOSED_PORT = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def hub_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An environment with no Hub token anywhere (no HF_TOKEN, an empty HF_HOME and token path), online
    unless `extra` says otherwise, and the Hub endpoint a closed local port."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE")}
    home = tmp_path / "hf_home"
    home.mkdir(exist_ok=True)
    env.update(HF_HOME=str(home), HF_TOKEN_PATH=str(home / "token"), HF_ENDPOINT=CLOSED_PORT, **extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize(
    "token, extra_env, message",
    [
        ([], {}, "error: --push_to_hub: no Hub token ("),
        (["--hub_token", "hf_dummy"], {}, "error: --push_to_hub: the Hub cannot be reached ("),
        (["--hub_token", "hf_dummy"], {"HF_HUB_OFFLINE": "1"}, "error: --push_to_hub: HF_HUB_OFFLINE is set"),
    ],
    ids=["no-token", "hub-unreachable", "offline"],
)
def test_a_push_that_cannot_work_stops_before_training(tmp_path, token, extra_env, message):
    out = tmp_path / "out"
    args = ["train.py", "--push_to_hub", *token, "--output_dir", str(out), "--max_steps", "2", "--disable_tqdm"]
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=hub_env(tmp_path, **extra_env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(message), proc.stderr[-3000:]
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]] and "Traceback" not in proc.stderr
    assert not any(line.startswith("data:") for line in proc.stdout.splitlines()), proc.stdout  # nothing loaded
    assert not (out / "metrics.jsonl").exists() and not list(out.glob("*"))  # nothing trained, no lock left


def test_check_hub_without_push_to_hub_does_nothing(tmp_path):
    assert check_hub(TrainConfig(output_dir=str(tmp_path / "out"), hub_token="hf_dummy")) is None


def test_check_hub_in_offline_mode_is_a_user_error(tmp_path):
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:  # conftest sets HF_HUB_OFFLINE=1 unless the environment already says otherwise
        pytest.skip("this test process is not in huggingface_hub's offline mode")
    cfg = TrainConfig(output_dir=str(tmp_path / "out"), push_to_hub=True, hub_token="hf_dummy")
    with pytest.raises(UserError, match=r"^--push_to_hub: HF_HUB_OFFLINE is set"):
        check_hub(cfg)


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints", "End"])
def test_unknown_hub_strategy_is_one_line(strategy):
    with pytest.raises(UserError) as caught:
        parse_config(["--hub_strategy", strategy])
    assert str(caught.value) == "--hub_strategy must be 'every_save' or 'end'"
    assert parse_config(["--hub_strategy", "end"]).hub_strategy == "end"
    assert TrainConfig().hub_strategy == "every_save"


# --- what a push uploads --------------------------------------------------------------------------------------
PIPELINE_CORE = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
RUN_RECORDS = {"README.md", "training_config.json", "metrics.jsonl"}  # the model card, the options, the curves


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run with two checkpoints, plus the files other tools leave in an output dir."""
    out = train_tiny(
        tmp_path_factory.mktemp("hub") / "run",
        synthetic_num_pairs=200,
        max_steps=4,
        save_steps=2,
        logging_steps=1,
        eval_steps=2,
    )
    for name in ("checkpoint-2/training_state.pt", "checkpoint-4/training_state.pt", "latest", "heldout_pairs.jsonl"):
        assert (out / name).is_file(), name  # what must stay out is there to be left out
    (out / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    (out / ".tmp-save").mkdir()
    (out / ".tmp-save" / "model.safetensors").write_bytes(b"partial")
    (out / "runs" / "Dec01_10-00-00_host").mkdir(parents=True)
    (out / "runs" / "Dec01_10-00-00_host" / "events.out.tfevents.1.host").write_bytes(b"tb")
    (out / "wandb" / "offline-run-1").mkdir(parents=True)
    (out / "wandb" / "offline-run-1" / "run-1.wandb").write_bytes(b"wb")
    return out


def top_level_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()}


def test_files_to_upload_are_the_pipeline_files_and_the_run_records(finished_run):
    files = files_to_upload(finished_run)
    assert files == sorted(files) and len(files) == len(set(files))
    assert PIPELINE_CORE | RUN_RECORDS <= set(files)
    # every file at the top of the folder except the resume pointer, the user's held-out rows, the lock and the
    # export's own file list (reward/run/publish.py)
    left_out = {"latest", "heldout_pairs.jsonl", ".lock", ".export-files.json"}
    assert set(files) == top_level_files(finished_run) - left_out
    assert not [f for f in files if "/" in f]  # no checkpoint-*/, runs/, wandb/ or dot folder inside
    assert "training_state.pt" not in files


def test_files_to_upload_from_a_checkpoint_leave_out_its_training_state(finished_run):
    checkpoint = finished_run / "checkpoint-2"
    files = files_to_upload(checkpoint)
    assert (checkpoint / "training_state.pt").is_file() and "training_state.pt" not in files
    assert PIPELINE_CORE <= set(files)
    assert set(files) == top_level_files(checkpoint) - {"training_state.pt"}


def test_the_uploaded_files_alone_make_a_pipeline_that_scores_as_the_original(finished_run, tmp_path):
    from transformers import pipeline

    copy = tmp_path / "uploaded"
    for name in files_to_upload(finished_run):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(finished_run / name, copy / name)
    text = "Question: which category is a sparrow?\nAnswer: a bird."
    scores = []
    for folder in (finished_run, copy):
        rm = pipeline("text-classification", model=str(folder), device="cpu")
        scores.append(rm(text, function_to_apply="none")[0]["score"])
    assert scores[1] == pytest.approx(scores[0], abs=1e-6)
    assert scores[0] != 0.0  # a real reward came out
