"""Issue #29: what a new user's first runs record and print — the dataset a RewardTrainer was handed and its
last evaluation in the card, a card without data rows or absolute local paths, a default output folder per
model and dataset, empty responses trained and counted, pairs/s that is never "0"."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from datasets import Dataset

from reward.config import TrainConfig, parse_config
from reward.data import EXPLICIT, PreferenceData, load_preferences
from reward.errors import UserError
from reward.fast.layout import PackingFallbackWarning, warn_once
from reward.formatting import SequenceFormat, describe_format
from reward.loop import TrainResult
from reward.metrics import format_step_line
from reward.presets.synthetic import generate_pairs
from reward.run.report import report
from tests.conftest import train_tiny


def test_default_output_dir_is_named_after_the_model_and_the_dataset(tmp_path):
    assert TrainConfig().output_dir == "runs/tiny-synthetic"  # the README's first run keeps its folder
    mine = parse_config(["--dataset_name", str(tmp_path / "my data.jsonl")]).output_dir
    theirs = parse_config(["--dataset_name", "Anthropic/hh-rlhf", "--model_name_or_path", "org/rm-base"]).output_dir
    assert (mine, theirs) == ("runs/tiny-my-data", "runs/rm-base-hh-rlhf")
    assert parse_config(["--output_dir", "elsewhere"]).output_dir == "elsewhere"


def test_pairs_per_second_keeps_three_significant_digits():
    assert format_step_line({"step": 1, "pairs_per_s": 0.4234}).endswith("| 0.423 pairs/s")
    assert format_step_line({"step": 1, "pairs_per_s": 1.5}).endswith("| 1.50 pairs/s")
    assert format_step_line({"step": 1, "pairs_per_s": 1234.6}).endswith("| 1235 pairs/s")


def test_an_empty_response_is_kept_and_counted_but_a_missing_field_is_not():
    rows = [{"prompt": "Name a fruit.", "chosen": " mango", "rejected": " violin"} for _ in range(4)]
    rows[1]["chosen"] = ""
    data = load_preferences(Dataset.from_list(rows), eval_split_size=0)
    assert len(data.train) == 4 and "train 4 pairs (1 with an empty response)" in data.describe()
    ranked = Dataset.from_list([{"prompt": "Q", "completions": [" a", "", " c"], "scores": [2, 1, 0]}])
    assert load_preferences(ranked, eval_split_size=0).train[0]["completions"][1] == ""  # a ranking's answer, too
    missing = Dataset.from_list([*rows, {"prompt": "Q", "chosen": "a", "rejected": None}])
    with pytest.raises(UserError, match="'rejected' must be a string"):
        load_preferences(missing, eval_split_size=0)


@pytest.mark.slow
def test_a_pair_with_an_empty_response_trains(tmp_path, capsys):
    rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in generate_pairs(64, 0)]
    rows[3]["chosen"] = rows[7]["rejected"] = ""
    train_tiny(tmp_path / "out", dataset=Dataset.from_list(rows), max_steps=2, eval_split_size=0.0)
    assert "(2 with an empty response)" in capsys.readouterr().out
    assert (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.slow
def test_the_card_after_reward_trainer_names_the_dataset_shows_the_evaluation_and_quotes_no_data(tmp_path):
    from reward import RewardConfig, RewardTrainer

    rows = generate_pairs(48, seed=0)
    train, heldout = Dataset.from_list(rows[:40]), Dataset.from_list(rows[40:])
    out = tmp_path / "rm"
    args = RewardConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=8, gradient_checkpointing=False)
    trainer = RewardTrainer(model="tiny", args=args, train_dataset=train)
    trainer.train()
    metrics = trainer.evaluate(heldout)
    trainer.save_model()
    card = (out / "README.md").read_text()
    recorded = json.loads((out / "training_config.json").read_text())["dataset_name"]
    assert recorded.startswith("<Dataset: 40 rows, columns ") and train._fingerprint in recorded
    assert f"on `{recorded}`" in card and "synthetic" not in recorded
    assert f"| eval_loss | {metrics['eval_loss']:.4f} |" in card and "(none)" not in card
    for row in rows:  # no row of the data is quoted, and no absolute local path is published
        assert row["chosen"] not in card and row["rejected"] not in card
    assert str(tmp_path) not in card and str(Path.cwd()) not in card


def test_the_scoring_hint_points_at_the_datas_own_test_split_not_its_train_rows(tmp_path, capsys):
    folder = tmp_path / "data"  # a folder with train.jsonl and test.jsonl: nothing split off here
    folder.mkdir()
    test = Dataset.from_list([{"prompt": "Q", "chosen": " held", "rejected": " out"}])
    data = PreferenceData(test, test, EXPLICIT, False, str(folder), held_out=False)
    report(str(folder), tmp_path / "run", data, TrainResult(2, {}, None), tmp_path / "run")
    hint = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("score with:"))
    assert hint.endswith(f"--input {tmp_path / 'run' / 'heldout_pairs.jsonl'}")
    assert json.loads((tmp_path / "run" / "heldout_pairs.jsonl").read_text())["chosen"] == " held"


def test_the_format_line_says_only_what_happened():
    plain = SequenceFormat(append_eos=False, add_special_tokens=True, text_as_chat=False)
    record = {"eos_token": None, "special_tokens": {"before": [], "after": ["[SEP]"]}, "chat_template_sha256": None}
    said = describe_format(plain, {**record, "reward_token": "the last token"})
    assert said.startswith("no EOS appended") and "chat template" not in said  # an encoder: no EOS, no template
    templated = describe_format(plain, {**record, "chat_template_sha256": "abc", "reward_token": "x"})
    assert "conversations through the chat template" in templated


def test_a_packing_fallback_is_said_once_without_a_line_of_our_source():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_once("first-hour test reason")
        warn_once("first-hour test reason")
    assert len(caught) == 1 and issubclass(caught[0].category, PackingFallbackWarning)
    shown = warnings.formatwarning(caught[0].message, caught[0].category, caught[0].filename, caught[0].lineno)
    assert shown.strip().splitlines() == ["reward:0: PackingFallbackWarning: first-hour test reason"]
