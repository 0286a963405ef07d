"""reward/config.py: the flat options (flags, YAML/JSON files, Python), and the small groups each part below
the recipe reads (`pick`). Range and type checks: tests/test_options.py."""

from __future__ import annotations

import dataclasses
import json

import pytest

from reward.batching import BatchPlan
from reward.config import TrainConfig, parse_config, pick
from reward.errors import UserError
from reward.finetune.lora import LoraOptions
from reward.loop import Cadence, OptimizerOptions
from reward.tokenizer import TokenizerOptions

GROUPS = [BatchPlan, OptimizerOptions, Cadence, TokenizerOptions, LoraOptions]  # every option group below the recipe


@pytest.mark.parametrize("group", GROUPS, ids=[g.__name__ for g in GROUPS])
def test_every_option_group_is_made_of_trainconfig_fields_with_their_values(group):
    names = [f.name for f in dataclasses.fields(group)]
    assert set(names) <= set(TrainConfig.__dataclass_fields__), group.__name__  # TRL's names, never new ones
    cfg = parse_config(["--learning_rate", "3e-05", "--gradient_accumulation_steps", "3", "--eval_steps", "7"])
    picked = pick(group, cfg)
    assert all(getattr(picked, name) == getattr(cfg, name) for name in names)


def test_a_group_can_only_name_options_that_exist():
    @dataclasses.dataclass
    class Misspelt:
        learning_rate: float
        learnig_rate: float

    with pytest.raises(AttributeError, match="learnig_rate"):
        pick(Misspelt, TrainConfig())


def test_flags_win_over_the_options_file_and_the_file_over_the_defaults(tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"learning_rate": 0.5, "max_steps": 50, "logging_steps": 5}))
    cfg = parse_config(["--config", str(config), "--learning_rate", "1e-3"])
    assert (cfg.learning_rate, cfg.max_steps, cfg.logging_steps) == (1e-3, 50, 5)
    assert cfg.eval_steps == TrainConfig.default("eval_steps")


def test_an_unknown_key_in_the_options_file_is_named(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1.0e-4\nlearnig_rate: 3\n")
    with pytest.raises(UserError, match="unknown option.*learnig_rate"):
        parse_config(["--config", str(config)])


def test_the_saved_options_never_hold_the_hub_token():
    cfg = TrainConfig(hub_token="hf_secret")
    assert cfg.to_dict()["hub_token"] is None and "hf_secret" not in repr(cfg)
    assert cfg.hub_token == "hf_secret"  # still there for the push


def test_yaml_numbers_written_as_text_still_work(tmp_path):
    """PyYAML reads `1e-4` as a string (YAML 1.1 wants a dot): argparse types it, as for a flag."""
    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1e-4\nmax_steps: 7\nwarmup_ratio: 0\n")
    cfg = parse_config(["--config", str(config)])
    assert (cfg.learning_rate, cfg.max_steps, cfg.warmup_ratio) == (1e-4, 7, 0.0)
