"""Every option outside its range, from the command line and from a config file: exit 2, one `error:` line
naming the option, before any data or model is loaded (reward/options.py)."""

from __future__ import annotations

import json
import re
from dataclasses import fields

import pytest
from test_bad_input import assert_clean_error, check_score_error, invoke

import train
from reward.config import TrainConfig
from reward.errors import UserError
from reward.options import CHOICES

pytestmark = pytest.mark.usefixtures("quiet_datasets")

# (flag, a value outside its range): every range-checked option of train.py
TRAIN_OUT_OF_RANGE = [
    ("--per_device_train_batch_size", "0"),
    ("--per_device_eval_batch_size", "-1"),
    ("--gradient_accumulation_steps", "0"),
    ("--learning_rate", "-0.0001"),
    ("--learning_rate", "1e6"),
    ("--learning_rate", "1e38"),
    ("--learning_rate", "nan"),
    ("--weight_decay", "-0.1"),
    ("--adam_beta1", "1.0"),
    ("--adam_beta2", "-0.5"),
    ("--adam_epsilon", "0"),
    ("--max_grad_norm", "inf"),
    ("--max_steps", "0"),
    ("--num_train_epochs", "0"),
    ("--lr_scheduler_type", "bogus"),
    ("--lr_scheduler_type", "reduce_lr_on_plateau"),
    ("--warmup_ratio", "1.5"),
    ("--warmup_steps", "-3"),
    ("--seed", "-1"),
    ("--logging_steps", "0"),
    ("--eval_steps", "0"),
    ("--save_steps", "-1"),
    ("--save_total_limit", "-2"),
    ("--save_total_limit", "0"),
    ("--max_nonfinite_steps", "0"),
    ("--dataset_num_proc", "0"),
    ("--synthetic_num_pairs", "0"),
    ("--pad_to_multiple_of", "0"),
    ("--max_length", "1"),
    ("--label_smoothing", "0.5"),
    ("--center_rewards_coefficient", "-0.01"),
    ("--eval_split_size", "1.0"),
    ("--eval_strategy", "sometimes"),
    ("--model_name_or_path", " "),
    ("--dataset_name", ""),
    ("--lora_r", "0"),
    ("--lora_alpha", "0"),
    ("--lora_dropout", "1.0"),
    ("--lora_target_modules", ","),
]
NAMED = {"--per_device_train_batch_size": "batch sizes", "--per_device_eval_batch_size": "batch sizes"}


@pytest.mark.parametrize("flag, value", TRAIN_OUT_OF_RANGE, ids=[f"{f[2:]}={v}" for f, v in TRAIN_OUT_OF_RANGE])
def test_an_option_out_of_range_is_one_line_before_loading(flag, value, tmp_path, capsys):
    code, out, err = invoke(train.cli, [flag, value, "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, [NAMED.get(flag, flag)])
    assert out == "" and not (tmp_path / "o").exists()  # nothing loaded, nothing written


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--batch_size", "0", "--batch_size must be >= 1"),
        ("--explain_rows", "-1", "--explain_rows must be >= 0"),
        ("--calibration_bins", "0", "--calibration_bins must be >= 1"),
        ("--label_smoothing", "0.7", "--label_smoothing must be in [0, 0.5)"),
        ("--center_rewards_coefficient", "nan", "--center_rewards_coefficient must be a finite number >= 0"),
    ],
)
def test_a_score_option_out_of_range_is_one_line(flag, value, message, tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"chosen": "a", "rejected": "b"}) + "\n")
    check_score_error(["--model", str(tiny_model_dir), "--input", str(data), flag, value], [message], capsys)


@pytest.mark.parametrize(
    "text, message",
    [
        ("max_steps: 2.5\n", "--max_steps must be an integer, got 2.5"),
        ("max_steps: [1, 2]\n", "--max_steps must be an integer, got [1, 2]"),
        ("learning_rate: [0.1]\n", "--learning_rate must be a number"),
        ("bf16: yes please\n", "--bf16"),
        ("logging_steps: 0\n", "--logging_steps must be >= 1"),
        ("lr_scheduler_type: bogus\n", "--lr_scheduler_type must be one of linear"),
        ("seed: null\n", "--seed must be set"),
        ("lora_target_modules: [1, 2]\n", "--lora_target_modules must be a list of strings"),
    ],
)
def test_config_file_values_are_checked_like_flags(text, message, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code, out, err = invoke(train.cli, ["--config", str(config), "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, [message])
    assert out == ""


def test_the_python_api_checks_types_too():
    with pytest.raises(UserError, match="--max_steps must be an integer, got 2.5"):
        TrainConfig(max_steps=2.5)
    with pytest.raises(UserError, match="--eval_steps must be >= 1"):
        TrainConfig(eval_steps=0)
    assert TrainConfig(max_length=None, num_train_epochs=0, max_steps=5).max_steps == 5  # max_steps wins


# --- options with a fixed list of values: --help offers exactly what the checks accept ----------------------
HELP = {f.name: f.metadata["help"] for f in fields(TrainConfig)}  # what `train.py --help` prints for each


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_an_options_help_offers_exactly_the_values_it_accepts(name):
    accepted = CHOICES[name]
    assert set(re.findall(r"'([\w|-]+)'", HELP[name])) == set(accepted), HELP[name]  # offered: the quoted values
    for value in accepted:
        TrainConfig(**{name: [value] if name == "report_to" else value})  # each one is accepted
    with pytest.raises(UserError) as refused:
        TrainConfig(**{name: ["bogus"] if name == "report_to" else "bogus"})
    assert f"--{name}" in str(refused.value) and all(value in str(refused.value) for value in accepted)


def test_dtype_help_and_refusal_give_the_same_reason_for_float16():
    with pytest.raises(UserError) as refused:
        TrainConfig(dtype="float16")
    assert "float16" not in CHOICES["dtype"]
    for text in (HELP["dtype"], str(refused.value)):
        assert "AdamW's moments underflow" in text and "--fp16" in text
