"""`--report_to`: every metrics.jsonl record reaches TensorBoard, trackio and W&B (offline), read back with each
library's own reader, under the HF Trainer's names (`loss` -> `train/loss`, `eval_loss` -> `eval/loss`) at the
record's step; a missing tracker library or a bad `--report_to` is one `error:` line before anything loads; only
rank 0 reports; and the Hub token never reaches a saved file.

The runs are tiny (`tiny` model, 200 generated pairs, 4 optimizer steps, a record every step, eval every 2) and run
`train.py` in a subprocess: trackio reads TRACKIO_DIR and W&B its WANDB_* variables once, at import.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_metrics
from wandb_records import items, read_wandb_records  # tests/wandb_records.py

import train
from reward.config import TrainConfig, parse_config
from reward.errors import UserError
from reward.integrations.trackers import open_trackers, tracker_keys

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_secret_should_not_be_saved"
TINY_RUN = [
    "--synthetic_num_pairs",
    "200",
    "--max_steps",
    "4",
    "--logging_steps",
    "1",
    "--eval_steps",
    "2",
    "--disable_tqdm",
]


def run_train(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def expected_scalars(records: list[dict]) -> dict[str, dict[int, float]]:
    """What every tracker must hold: {tag: {step: value}} for each numeric key of each metrics.jsonl record,
    written out independently of reward.integrations.trackers."""
    expected: dict[str, dict[int, float]] = {}
    for record in records:
        for key, value in record.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            name = "learning_rate" if key == "lr" else key  # the HF Trainer's name for it
            tag = f"eval/{name[5:]}" if name.startswith("eval_") else f"train/{name}"
            expected.setdefault(tag, {})[record["step"]] = value
    return expected


def check_records(records: list[dict]) -> None:
    """The run under test logged what these tests rely on: a record per step, eval records on steps 2 and 4."""
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["step"] for r in records if "eval_loss" in r] == [2, 4]
    assert all(math.isfinite(r["loss"]) for r in records)


def env_for(tmp: Path) -> dict[str, str]:
    """This process's environment, with trackio and W&B kept inside `tmp` and W&B offline and quiet."""
    env = dict(os.environ)
    env.pop("WANDB_API_KEY", None)
    env.update(
        TRACKIO_DIR=str(tmp / "trackio"),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DIR=str(tmp / "wandb_dir"),
        WANDB_CACHE_DIR=str(tmp / "wandb_cache"),
        WANDB_CONFIG_DIR=str(tmp / "wandb_config"),
        WANDB_DATA_DIR=str(tmp / "wandb_data"),
        HF_HUB_OFFLINE="1",
    )
    return env


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """All three trackers, every tracker option left at its default (and a Hub token given, never to be saved)."""
    tmp = tmp_path_factory.mktemp("default_run")
    out = tmp / "rm-defaults"
    env = env_for(tmp)
    proc = run_train(
        ["--output_dir", str(out), *TINY_RUN, "--report_to", "tensorboard,trackio,wandb", "--hub_token", TOKEN], env
    )
    assert "reporting to: tensorboard, trackio, wandb" in proc.stdout
    check_records(read_metrics(out))
    return out, env, proc


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    """TensorBoard and trackio (the space-separated form) with an explicit folder, run name and project."""
    tmp = tmp_path_factory.mktemp("named_run")
    out, logging_dir = tmp / "out", tmp / "tb"
    env = env_for(tmp)
    args = ["--output_dir", str(out), *TINY_RUN, "--report_to", "tensorboard", "trackio", "--logging_dir"]
    args += [str(logging_dir), "--run_name", "named-rm", "--project", "reward-tests", "--hub_token", TOKEN]
    proc = run_train(args, env)
    assert "reporting to: tensorboard, trackio" in proc.stdout
    check_records(read_metrics(out))
    return out, logging_dir, env, proc


# --- TensorBoard ---------------------------------------------------------------------------------------
def tensorboard_scalars(logging_dir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of the one event file in `logging_dir`, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = list(logging_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    events = EventAccumulator(str(logging_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def assert_same_scalars(logged: dict[str, dict[int, float]], records: list[dict], rel: float) -> None:
    expected = expected_scalars(records)
    assert {"train/loss", "train/learning_rate", "train/accuracy", "eval/loss", "eval/accuracy"} <= expected.keys()
    assert logged.keys() == expected.keys()
    for tag, by_step in expected.items():
        assert logged[tag].keys() == by_step.keys(), tag  # each record once, at its step, nothing else
        for step, value in by_step.items():
            assert logged[tag][step] == pytest.approx(value, rel=rel, abs=1e-12), (tag, step)


@pytest.mark.slow
def test_tensorboard_gets_every_record_in_the_default_logging_dir(default_run):
    out, _, _ = default_run
    runs = [p for p in (out / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # OUTPUT_DIR/runs/<date>_<host>, as the HF Trainer
    assert_same_scalars(tensorboard_scalars(runs[0]), read_metrics(out), rel=1e-6)  # stored as float32


@pytest.mark.slow
def test_tensorboard_writes_to_the_given_logging_dir(named_run):
    out, logging_dir, _, _ = named_run
    assert not (out / "runs").exists()
    assert_same_scalars(tensorboard_scalars(logging_dir), read_metrics(out), rel=1e-6)


# --- trackio ---------------------------------------------------------------------------------------------
READ_TRACKIO = """
import json, sys
from trackio.sqlite_storage import SQLiteStorage
project, run = sys.argv[1:]
print(json.dumps({"runs": SQLiteStorage.get_runs(project), "logs": SQLiteStorage.get_logs(project, run)}, default=str))
"""


def trackio_logs(env: dict[str, str], project: str, run: str) -> tuple[list[str], dict[str, dict[int, float]]]:
    """The project's runs and the run's logs as {tag: {step: value}}, read by trackio's own storage in a fresh
    process (TRACKIO_DIR is read at import)."""
    proc = subprocess.run(
        [sys.executable, "-c", READ_TRACKIO, project, run], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    logged: dict[str, dict[int, float]] = {}
    for log in found["logs"]:
        for tag, value in log.items():
            if tag not in ("step", "timestamp"):
                assert log["step"] not in logged.get(tag, {}), (tag, log["step"])
                logged.setdefault(tag, {})[log["step"]] = value
    return found["runs"], logged


@pytest.mark.slow
def test_trackio_gets_every_record_under_the_default_project_and_run_name(default_run):
    out, env, proc = default_run
    assert (Path(env["TRACKIO_DIR"]) / "huggingface.db").exists()  # the local store, not a Space
    runs, logged = trackio_logs(env, "huggingface", out.name)
    assert runs == [out.name]
    assert_same_scalars(logged, read_metrics(out), rel=1e-12)  # JSON: exact
    assert "Running on" not in proc.stdout + proc.stderr  # no dashboard was launched


@pytest.mark.slow
def test_trackio_uses_the_given_project_and_run_name(named_run):
    out, _, env, _ = named_run
    runs, logged = trackio_logs(env, "reward-tests", "named-rm")
    assert runs == ["named-rm"]
    assert_same_scalars(logged, read_metrics(out), rel=1e-12)
    assert not (Path(env["TRACKIO_DIR"]) / "huggingface.db").exists()


# --- Weights & Biases (offline) ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def wandb_run(default_run):
    out, env, _ = default_run
    folders = list((out / "wandb").glob("offline-run-*"))
    assert len(folders) == 1, folders  # dir=output_dir: the run lives with the model
    assert not list(Path(env["WANDB_DIR"]).rglob("offline-run-*"))
    files = list(folders[0].glob("run-*.wandb"))
    assert len(files) == 1, files
    return files[0], read_wandb_records(files[0])


@pytest.mark.slow
def test_wandb_offline_run_holds_every_record(default_run, wandb_run):
    out, _, _ = default_run
    _, records = wandb_run
    kinds = [r.WhichOneof("record_type") for r in records]
    assert kinds.count("run") == 1 and kinds.count("exit") == 1  # wandb.finish() was called
    assert next(r for r in records if r.WhichOneof("record_type") == "exit").exit.exit_code == 0
    logged: dict[str, dict[int, float]] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            values = items(record.history.item)
            step = values.pop("_step")
            assert step == record.history.step.num
            for tag, value in values.items():
                if not tag.startswith("_"):  # _runtime, _timestamp: wandb's own
                    logged.setdefault(tag, {})[step] = value
    assert_same_scalars(logged, read_metrics(out), rel=1e-12)  # JSON: exact


@pytest.mark.slow
def test_wandb_run_has_the_default_name_project_and_the_options(default_run, wandb_run):
    out, _, _ = default_run
    _, records = wandb_run
    run = next(r for r in records if r.WhichOneof("record_type") == "run").run
    assert (run.display_name, run.project) == (out.name, "huggingface")
    config = items(run.config.update)
    saved = json.loads((out / "training_config.json").read_text())
    assert {k: config[k] for k in saved} == saved  # the options, as training_config.json has them
    assert config["hub_token"] is None


@pytest.mark.slow
def test_wandb_run_files_do_not_hold_the_hub_token(default_run):
    """W&B records sys.argv with the run; reward/integrations/trackers.py masks the token while it starts."""
    out, _, _ = default_run
    leaks = [p for p in (out / "wandb").rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert leaks == []


# --- the Hub token is never saved --------------------------------------------------------------------------
@pytest.mark.slow
def test_hub_token_is_in_no_saved_file(named_run):
    out, logging_dir, env, _ = named_run
    assert json.loads((out / "training_config.json").read_text())["hub_token"] is None
    searched = [p for folder in (out, logging_dir, Path(env["TRACKIO_DIR"])) for p in folder.rglob("*") if p.is_file()]
    assert {"training_config.json", "metrics.jsonl", "model.safetensors"} <= {p.name for p in searched}
    assert any(p.name.startswith("events.out.tfevents.") for p in searched)  # its "options" text is searched too
    assert [p for p in searched if TOKEN.encode() in p.read_bytes()] == []


# --- errors before anything loads ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_missing_tracker_is_one_line_before_anything_loads(tmp_path):
    out = tmp_path / "out"
    code = (
        "import sys; sys.modules['wandb'] = None; import train; "
        f"sys.exit(train.cli(['--output_dir', {str(out)!r}, '--report_to', 'wandb', '--disable_tqdm']))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --report_to wandb: not installed"), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not any(line.startswith("data:") for line in proc.stdout.splitlines()), proc.stdout
    assert not (out / "metrics.jsonl").exists()


@pytest.mark.slow
def test_wandb_without_a_login_is_one_line_before_anything_loads(tmp_path):
    """Online W&B with no API key (and no network): wandb.init fails in preflight, as one line, and the
    trackers opened before it (TensorBoard here) are closed."""
    env = env_for(tmp_path)
    env.pop("WANDB_MODE")
    env.update(WANDB_BASE_URL="http://127.0.0.1:9", NETRC=str(tmp_path / "no-netrc"))
    out = tmp_path / "out"
    args = ["--output_dir", str(out), "--report_to", "tensorboard", "wandb", "--disable_tqdm"]
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: --report_to: wandb could not start (")
    assert "Traceback" not in proc.stderr
    assert not any(line.startswith("data:") for line in proc.stdout.splitlines()), proc.stdout


@pytest.mark.parametrize(
    "value, message",
    [
        (["bogus"], "--report_to: unknown tracker(s) bogus"),
        (["tensorboard,tensorbored"], "--report_to: unknown tracker(s) tensorbored"),
        (["none,tensorboard"], "--report_to: 'none' and 'all' stand alone"),
        (["none", "wandb"], "--report_to: 'none' and 'all' stand alone"),
        (["all", "wandb"], "--report_to: 'none' and 'all' stand alone"),
    ],
)
def test_bad_report_to_is_one_line(value, message):
    with pytest.raises(UserError) as caught:
        parse_config(["--report_to", *value])
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_bad_report_to_from_the_cli_exits_2_with_one_line(tmp_path, capsys):
    assert train.cli(["--output_dir", str(tmp_path / "x"), "--report_to", "tensorbord"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --report_to: unknown tracker(s) tensorbord") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("argv", [["tensorboard,trackio"], ["tensorboard", "trackio"], [" tensorboard, trackio,"]])
def test_report_to_comma_and_space_forms(argv):
    assert parse_config(["--report_to", *argv]).report_to == ["tensorboard", "trackio"]


def test_report_to_python_forms():
    assert TrainConfig(report_to="tensorboard").report_to == ["tensorboard"]
    assert TrainConfig(report_to="wandb,trackio").report_to == ["wandb", "trackio"]
    assert TrainConfig(report_to=["trackio"]).report_to == ["trackio"]
    assert TrainConfig().report_to == ["none"] and parse_config([]).report_to == ["none"]
    with pytest.raises(UserError, match="unknown tracker"):
        TrainConfig(report_to="mlflow")


# --- rank 0 only, and the record -> scalars mapping ---------------------------------------------------------
def test_only_rank_0_opens_trackers(tmp_path):
    logging_dir = tmp_path / "tb"
    cfg = TrainConfig(output_dir=str(tmp_path / "out"), report_to="tensorboard", logging_dir=str(logging_dir))
    assert open_trackers(cfg, {}, is_main=False) is None
    assert not logging_dir.exists()  # nothing opened, nothing written
    assert open_trackers(TrainConfig(output_dir=str(tmp_path / "out")), {}, is_main=True) is None  # report_to none

    trackers = open_trackers(cfg, {}, is_main=True)  # the same options on rank 0 do open it
    assert trackers is not None and trackers.names == ["tensorboard"]
    trackers.log({"step": 3, "loss": 0.25, "eval_loss": 0.5})
    trackers.close()
    assert tensorboard_scalars(logging_dir) == {"train/loss": {3: 0.25}, "eval/loss": {3: 0.5}}


def test_tracker_keys_sends_numbers_only():
    record = {"step": 7, "loss": 0.5, "pairs": 32, "eval_loss": 0.25, "eval_length_corr": None}
    record |= {"eval_accuracy/math": 1.0, "flag": True, "note": "text"}
    assert tracker_keys(record) == {
        "train/loss": 0.5,
        "train/pairs": 32,
        "eval/loss": 0.25,
        "eval/accuracy/math": 1.0,
    }
