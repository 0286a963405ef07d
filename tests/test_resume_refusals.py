"""A resume continues one run or is refused (issue #28, items 2 and 3): every option is classified once
(reward/run/resume_rules.py); a change to the rows, their order, their token ids or the model stops with one
`error:` line naming the option with both values, and the output dir is left byte for byte as it was; the
rows themselves are compared by their fingerprint (a data file edited between runs, another Dataset); an
allowed change resumes and is reported.

Refusals of flags happen when train.py parses them (instant); one small run is shared by the module.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch
from conftest import read_metrics, small_run
from datasets import Dataset
from test_bad_input import assert_clean_error, assert_debug_shows_traceback, invoke, write_jsonl

import train
from reward.config import TrainConfig
from reward.errors import UserError
from reward.integrations.trainer import RewardTrainer
from reward.integrations.trl_options import RewardConfig
from reward.presets.synthetic import generate_pairs
from reward.run.checkpoints import STATE_FILE
from reward.run.resume_rules import ALLOWED, PER_RUN, REFUSED, RULES, rows_fingerprint

pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")
NEW_RUN = "resume with the same value or start a new run (--overwrite_output_dir / another --output_dir)"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a folder, by relative path: what a refused resume must leave as it was."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def resume(out: Path, *extra: str) -> list[str]:
    return ["--output_dir", str(out), "--resume_from_checkpoint", "latest", *extra]


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory) -> Path:
    """A synthetic run with checkpoints at steps 2 and 4 (max_length 1024, seed 42, batch 8)."""
    out = tmp_path_factory.mktemp("refusals") / "run"
    assert train.cli(small_run(out, "--max_steps", "4", "--save_steps", "2")) == 0
    return out


# --- the table ---------------------------------------------------------------------------------------
def test_every_option_is_classified_exactly_once():
    """A new option fails here until reward/run/resume_rules.py says what a resume may do with it."""
    names = [name for rule in RULES for name in rule.names]
    options = [f.name for f in fields(TrainConfig)]
    assert sorted(names) == sorted(options), set(names) ^ set(options)  # each once: duplicates make them differ
    assert {f.name for f in fields(RewardConfig)} == set(options)  # the API's options are the same ones
    assert {rule.kind for rule in RULES} == {REFUSED, ALLOWED, PER_RUN}
    refused = {name for rule in RULES if rule.kind == REFUSED for name in rule.names}
    # the cases and the old data-order options stay refused
    assert {"max_length", "model_name_or_path", "per_device_train_batch_size", "seed", "group_by_length"} <= refused
    assert all(rule.why for rule in RULES)


# --- options: refused when parsed, nothing touched ---------------------------------------------------------
def test_a_resume_that_changes_max_length_is_refused_and_leaves_the_run_as_it_was(checkpointed, capsys):
    before = snapshot(checkpointed)
    code, printed, err = invoke(train.cli, resume(checkpointed, "--max_length", "64"), capsys)
    line = assert_clean_error(code, err, ["--max_length: the checkpoint was trained with 1024, this run asks for 64"])
    assert line.endswith(NEW_RUN), line
    assert "data:" not in printed  # refused before the data loaded
    assert snapshot(checkpointed) == before  # checkpoints, latest, metrics.jsonl: byte for byte
    code, _, err = invoke(train.cli, resume(checkpointed, "--max_length", "64", "--debug"), capsys)
    assert_debug_shows_traceback(code, err)


def test_a_resume_with_another_model_is_refused(checkpointed, tiny_model_dir, capsys):
    before = snapshot(checkpointed)
    code, _, err = invoke(train.cli, resume(checkpointed, "--model_name_or_path", str(tiny_model_dir)), capsys)
    expected = f"--model_name_or_path: the checkpoint was trained with 'tiny', this run asks for '{tiny_model_dir}'"
    assert_clean_error(code, err, [expected, "the model the checkpoint's weights"])
    assert snapshot(checkpointed) == before


@pytest.mark.parametrize(
    "changed, needle",
    [
        (["--eval_split_size", "0.2"], "--eval_split_size: the checkpoint was trained with 0.1, this run asks for 0.2"),
        (
            ["--tie_handling", "half"],
            "--tie_handling: the checkpoint was trained with 'skip', this run asks for 'half'",
        ),
        (["--append_eos", "false"], "--append_eos: the checkpoint was trained with True, this run asks for False"),
        (["--seed", "7"], "--seed: the checkpoint was trained with 42, this run asks for 7"),
        (["--dtype", "bfloat16"], "--dtype: the checkpoint was trained with 'float32', this run asks for 'bfloat16'"),
        (["--use_peft"], "--use_peft: the checkpoint was trained with False, this run asks for True"),
        (["--fsdp", "true"], "--fsdp: the checkpoint was trained with False, this run asks for True"),
        (
            ["--learning_rate", "0.001"],
            "--learning_rate: the checkpoint was trained with 0.0001, this run asks for 0.001",
        ),
    ],
    ids=["rows", "rankings", "token-ids", "order", "model", "lora", "sharding", "optimizer-state"],
)
def test_each_group_of_refused_options(checkpointed, changed, needle, capsys):
    before = snapshot(checkpointed)
    code, printed, err = invoke(train.cli, resume(checkpointed, *changed), capsys)
    assert_clean_error(code, err, [needle, NEW_RUN])
    assert "data:" not in printed and snapshot(checkpointed) == before


def test_an_options_file_cannot_change_what_a_flag_may_not(checkpointed, tmp_path, capsys):
    options = tmp_path / "options.yaml"
    options.write_text("max_length: 64\nsynthetic_num_pairs: 80\n")
    code, _, err = invoke(train.cli, resume(checkpointed, "--config", str(options)), capsys)
    line = assert_clean_error(code, err, ["--synthetic_num_pairs: the checkpoint was trained with 50", "--max_length"])
    assert line.endswith(
        "resume with the same values or start a new run (--overwrite_output_dir / another --output_dir)"
    )


# --- allowed changes; checkpoints from before fingerprints -----------------------------------------------
def test_an_allowed_change_resumes_and_is_reported_and_an_older_checkpoint_resumes_unchecked(checkpointed, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(checkpointed, out)
    state = torch.load(out / "checkpoint-4" / STATE_FILE, weights_only=True)
    fingerprint = state.pop("data")  # as a checkpoint saved before the fingerprint was recorded
    assert fingerprint["pairs"] == 45  # 50 generated, 5 held out
    torch.save(state, out / "checkpoint-4" / STATE_FILE)
    assert train.cli(resume(out, "--max_steps", "6", "--eval_steps", "3")) == 0
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4, 5, 6]
    assert torch.load(out / "checkpoint-6" / STATE_FILE, weights_only=True)["data"] == fingerprint
    saved = json.loads((out / "training_config.json").read_text())
    assert (saved["max_steps"], saved["eval_steps"], saved["max_length"]) == (6, 3, 1024)


def test_an_allowed_change_is_reported(checkpointed, capsys):
    from reward.run.train_cli import parse_train

    cfg = parse_train(resume(checkpointed, "--max_steps", "6", "--per_device_eval_batch_size", "4"))
    assert (cfg.max_steps, cfg.per_device_eval_batch_size, cfg.max_length) == (6, 4, 1024)
    printed = capsys.readouterr().out
    assert "--max_steps: 4 in the checkpoint, 6 given: using the given value" in printed
    assert "--per_device_eval_batch_size: 64 in the checkpoint, 4 given: using the given value" in printed


# --- the rows themselves --------------------------------------------------------------------------------
def test_a_data_file_edited_between_runs_is_refused(tmp_path, capsys):
    rows = generate_pairs(40, seed=3)
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = tmp_path / "run"
    argv = small_run(
        out, "--dataset_name", str(data), "--eval_split_size", "0", "--max_steps", "2", "--save_steps", "1"
    )
    assert train.cli(argv) == 0
    before = snapshot(out)

    edited = [dict(r) for r in rows]
    edited[7]["chosen"] += " indeed"  # one row, same count
    write_jsonl(data, edited)
    code, printed, err = invoke(train.cli, resume(out, "--max_steps", "3"), capsys)
    assert_clean_error(
        code, err, ["the training data differs from the checkpoint's", str(data), "as many training pairs (40)"]
    )
    assert "resuming from" not in printed and snapshot(out) == before

    write_jsonl(data, rows[:-4])  # rows removed
    code, _, err = invoke(train.cli, resume(out, "--max_steps", "3"), capsys)
    assert_clean_error(code, err, ["gives 36 training pairs after tokenizing, the checkpoint's had 40"])
    assert snapshot(out) == before

    write_jsonl(data, rows)  # the data the run started with: it resumes
    assert train.cli(resume(out, "--max_steps", "3")) == 0


def test_the_fingerprint_follows_the_order_trained_and_every_token():
    ds = Dataset.from_dict({"chosen_ids": [[1, 2], [3], [4, 5, 6]], "rejected_ids": [[7], [8, 9], [1]]})
    assert rows_fingerprint(ds.filter(lambda _: True)) == rows_fingerprint(ds)  # an indices mapping, same rows
    assert rows_fingerprint(ds.select([0, 2])) == rows_fingerprint(ds.select([0, 2]).flatten_indices())
    assert rows_fingerprint(ds.select([0, 2]))["pairs"] == 2
    assert rows_fingerprint(ds.shuffle(seed=0)) != rows_fingerprint(ds)
    moved = Dataset.from_dict({"chosen_ids": [[1], [2, 3], [4, 5, 6]], "rejected_ids": [[7], [8, 9], [1]]})
    assert rows_fingerprint(moved) != rows_fingerprint(ds)  # the same ids, split between rows differently


# --- the Python API ---------------------------------------------------------------------------------------
def test_the_api_refuses_another_dataset_other_options_and_another_model(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "run"
    args = RewardConfig(output_dir=str(out), max_steps=2, save_steps=1, per_device_train_batch_size=8,
                        gradient_checkpointing=False, disable_tqdm=True)  # fmt: skip
    rows = Dataset.from_list(generate_pairs(32, seed=1))
    RewardTrainer(model="tiny", args=args, train_dataset=rows).train()
    before = snapshot(out)

    other = Dataset.from_list(generate_pairs(32, seed=2))
    # the API records a Dataset by its size, columns and fingerprint (dataset_name): refused on that already
    with pytest.raises(UserError, match=r"--dataset_name: the checkpoint was trained with '<Dataset: 32 rows"):
        RewardTrainer(model="tiny", args=args, train_dataset=other).train(resume_from_checkpoint=True)
    shorter = replace(args, max_length=64)
    with pytest.raises(UserError, match="--max_length: the checkpoint was trained with 1024, this run asks for 64"):
        RewardTrainer(model="tiny", args=shorter, train_dataset=rows).train(resume_from_checkpoint=True)
    loaded = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)  # recorded by its name_or_path
    with pytest.raises(
        UserError,
        match=f"--model_name_or_path: the checkpoint was trained with 'tiny', this run asks for '{tiny_model_dir}'",
    ):
        RewardTrainer(model=loaded, args=args, train_dataset=rows).train(resume_from_checkpoint=True)
    assert snapshot(out) == before


def test_the_fingerprint_does_not_depend_on_batches_chunks_or_integer_width(monkeypatch):
    """Read a batch at a time (memory stays a batch's), yet equal to the whole read: another batch size, other
    Arrow chunks, or ids stored as int32 instead of int64 (another datasets version) give the same fingerprint."""
    from datasets import Features, List, Value, concatenate_datasets

    from reward.run import resume_rules

    rows = {"chosen_ids": [list(range(i, i + 1 + i % 3)) for i in range(50)], "margin": [i / 4 for i in range(50)]}
    wide = Dataset.from_dict(rows)
    int32 = Features({"chosen_ids": List(Value("int32")), "margin": Value("float32")})
    narrow = Dataset.from_dict(rows, features=int32)
    base = rows_fingerprint(wide)
    assert rows_fingerprint(narrow) == base
    assert rows_fingerprint(concatenate_datasets([wide.select(range(20)), wide.select(range(20, 50))])) == base
    monkeypatch.setattr(resume_rules, "FINGERPRINT_BATCH", 7)
    assert rows_fingerprint(wide) == base
    changed = Dataset.from_dict({**rows, "margin": [*rows["margin"][:-1], 99.0]})
    assert rows_fingerprint(changed) != base
