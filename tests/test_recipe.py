"""reward/recipe.py: one run as named stages, each returning what it makes, and the choices it wires in from
the options (reward/run/parts.py). End-to-end runs of train.py: tests/test_train_e2e.py."""

from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import pytest
from datasets import Dataset

import train
from reward.batching import Shuffled
from reward.collate import PairwiseCollator
from reward.config import TrainConfig, parse_config
from reward.data import EXPLICIT
from reward.errors import UserError
from reward.export import STATS_KEY
from reward.fast.grouping import LengthGrouped
from reward.fast.packing import PackingCollator
from reward.formatting import SequenceFormat
from reward.labels.strength import held_out_strength_metrics
from reward.loss import PairObjective
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import build_tiny_tokenizer
from reward.ranked.collate import RankedCollator
from reward.ranked.loss import RankingObjective
from reward.ranked.rows import RANKING_COLUMNS, held_out_ranking_metrics
from reward.recipe import read_rows, tokenize
from reward.run.parts import batch_order, evaluation, training_collator, training_objective

pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")


def printed(fn, *args, **kwargs):
    """(fn's result, what it printed)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args, **kwargs)
    return result, out.getvalue()


# --- the stages --------------------------------------------------------------------------------------------
def test_a_generated_task_is_read_by_name_and_named_as_its_source():
    cfg = TrainConfig(dataset_name="synthetic", synthetic_num_pairs=20, eval_split_size=0.25)
    (data, named), out = printed(read_rows, cfg, None, None)
    assert (data.source, data.format, len(data.train), len(data.test), named) == ("synthetic", EXPLICIT, 15, 5, {})
    assert out.strip() == "data: synthetic | format: explicit prompt | train 15 pairs | held-out 5"


def test_rankings_are_read_as_the_pairs_they_hold_with_their_bookkeeping():
    cfg = TrainConfig(dataset_name="synthetic-ranked", synthetic_num_pairs=8, eval_split_size=0.25)
    (data, _), out = printed(read_rows, cfg, None, None)
    assert data.format == EXPLICIT and data.rankings["train"]["prompts"] == 6 and len(data.train) == 6 * 6
    assert set(RANKING_COLUMNS) <= set(data.train.column_names) and "tied" in data.carried
    assert "rankings: 6 prompts (K=4: 6) -> 36 comparisons, 0 ties skipped | held-out 2 prompts" in out


def test_named_evaluation_sets_must_be_in_the_training_format():
    cfg = TrainConfig(dataset_name="synthetic", synthetic_num_pairs=10)
    implicit = Dataset.from_list([{"chosen": "Q? yes", "rejected": "Q? no"}] * 2)
    with pytest.raises(UserError, match="an evaluation set is in the implicit prompt format, the training data"):
        printed(read_rows, cfg, None, {"other": implicit})
    (_, named), _ = printed(read_rows, cfg, None, {"again": Dataset.from_list(generate_pairs(3, seed=4))})
    assert list(named) == ["again"] and len(named["again"].train) == 3 and named["again"].format == EXPLICIT


def test_tokenize_drops_what_the_model_cannot_take_and_counts_it():
    cfg = TrainConfig(dataset_name="synthetic", synthetic_num_pairs=20, eval_split_size=0.25)
    (data, _), _ = printed(read_rows, cfg, None, None)
    tokenizer = build_tiny_tokenizer()
    texts = [r["prompt"] + r[side] + "</s>" for r in data.train for side in ("chosen", "rejected")]
    lengths = [len(tokenizer(text)["input_ids"]) for text in texts]
    limit = sorted(lengths)[len(lengths) // 2]  # about half the pairs have a side past it
    tokens, out = printed(tokenize, cfg, data, {}, tokenizer, SequenceFormat(), limit)
    dropped = 15 - len(tokens.train)
    assert 0 < dropped < 15 and f"train: dropped {dropped} more pairs longer than the {limit} positions" in out
    assert all(len(r["chosen_ids"]) <= limit >= len(r["rejected_ids"]) for r in tokens.train)
    assert tokens.pairs is tokens.train and not tokens.grouped and tokens.held_out is tokens.eval_sets[""]
    with pytest.raises(UserError, match="no training pair fits the 3 positions the model has"):
        printed(tokenize, cfg, data, {}, tokenizer, SequenceFormat(), 3)


def test_named_evaluation_sets_replace_the_held_out_split_which_is_not_tokenized():
    cfg = TrainConfig(dataset_name="synthetic", synthetic_num_pairs=20, eval_split_size=0.25)
    (data, named), _ = printed(read_rows, cfg, None, {"b": Dataset.from_list(generate_pairs(3, seed=4))})
    tokens, out = printed(tokenize, cfg, data, named, build_tiny_tokenizer(), SequenceFormat(), None)
    assert list(tokens.eval_sets) == ["b"] and tokens.held_out is tokens.eval_sets["b"] and len(tokens.held_out) == 3
    assert "train 15" in out and "eval[b] 3" in out and "| eval " not in out  # the 5 held-out pairs: never read


def test_tokenize_groups_rankings_by_prompt_when_asked():
    for rankings, grouped in (("grouped", True), ("pairs", False)):
        options = dict(dataset_name="synthetic-ranked", synthetic_num_pairs=6, eval_split_size=0.0)
        cfg = TrainConfig(**options, rankings=rankings)
        (data, _), _ = printed(read_rows, cfg, None, None)
        tokens, out = printed(tokenize, cfg, data, {}, build_tiny_tokenizer(), SequenceFormat(), None)
        assert tokens.grouped is grouped and len(tokens.pairs) == 36 and tokens.eval_sets == {}
        assert len(tokens.train) == (6 if grouped else 36)
        assert ("rankings: grouped, 6 prompts (36 comparisons)" in out) is grouped


def test_a_run_returns_what_each_stage_made(tmp_path):
    out = tmp_path / "run"
    args = ["--output_dir", str(out), "--synthetic_num_pairs", "40", "--max_steps", "2", "--disable_tqdm"]
    run, text = printed(train.main, parse_config(args))
    assert run.steps == 2 and not run.stopped and run.folder == out
    assert json.loads((out / "config.json").read_text())[STATS_KEY] == run.stats
    assert run.stats["source"] == "held-out split, 4 pairs" and run.collapsed is None
    assert run.card["train_pairs"] == 36 and run.card["metrics"]["eval_pairs"] == 4
    assert run.model.config.reward_stats == run.stats and run.tokenizer.pad_token == "<pad>"
    lines = text.splitlines()
    stages = ["data:", "formatting:", "pairs kept:", "model:", "optimizer steps:", "forward:", "held-out:", "saved"]
    first = [next(i for i, line in enumerate(lines) if line.startswith(stage)) for stage in stages]
    assert first == sorted(first)  # read the rows, the tokenizer and model, tokenize, train, export, report


def test_a_stopped_run_makes_no_folder_and_says_where_its_checkpoint_is(tmp_path):
    out = tmp_path / "run"
    args = ["--output_dir", str(out), "--synthetic_num_pairs", "40", "--max_steps", "3", "--disable_tqdm"]
    run, text = printed(train.main, parse_config(args), should_stop=lambda step: step == 1)
    assert run.stopped and run.folder is None and run.stats is None and run.card is None
    assert f"stopped after optimizer step 1; checkpoint saved in {out / 'checkpoint-1'}" in text
    assert not (out / "model.safetensors").exists()


# --- the choices wired in from the options (reward/run/parts.py) ------------------------------------------
def test_the_collator_follows_the_speed_options_and_the_model(tmp_path):
    from conftest import save_encoder
    from transformers import AutoModelForSequenceClassification

    assert type(training_collator(TrainConfig(padding_free=False, share_prefix=False), 0)) is PairwiseCollator
    packed = training_collator(TrainConfig(), 0)
    assert isinstance(packed, PackingCollator) and (packed.max_tokens_per_row, packed.share_prefix) == ("all", True)
    rows = training_collator(TrainConfig(padding_free=False), 0)
    assert (rows.max_tokens_per_row, rows.share_prefix) == (None, True)
    ranked = training_collator(TrainConfig(), 0, grouped=True)
    assert isinstance(ranked, RankedCollator) and ranked.packed
    assert not training_collator(TrainConfig(padding_free=False, share_prefix=False), 0, grouped=True).packed
    bert = AutoModelForSequenceClassification.from_pretrained(save_encoder(tmp_path / "bert", "bert"))
    assert type(training_collator(TrainConfig(), 0, bert)) is PairwiseCollator  # an encoder: nothing to pack


def test_the_order_the_objective_and_the_evaluation_follow_the_options():
    rows = Dataset.from_list([{"chosen_ids": [1] * n, "rejected_ids": [2]} for n in (3, 1, 2)])
    assert isinstance(batch_order(TrainConfig(group_by_length=False), rows), Shuffled)
    grouped = batch_order(TrainConfig(seed=4), rows)
    assert isinstance(grouped, LengthGrouped) and grouped.lengths == [4, 2, 3] and grouped.seed == 4
    cfg = TrainConfig(center_rewards_coefficient=0.01, label_smoothing=0.1, ranking_normalization="prompt")
    assert training_objective(cfg) == PairObjective(0.01, 0.1)
    assert training_objective(cfg, grouped=True) == RankingObjective("bradley_terry", "prompt", 0.01, 0.1)
    precision = SimpleNamespace(device="cpu")
    packed = evaluation(TrainConfig(per_device_eval_batch_size=5), precision, None, 0)
    assert packed.batch_size == 5 and isinstance(packed.collate, PackingCollator)
    # pairs made of rankings report per prompt, pairs with a strength per level; each {} without its columns
    assert packed.extras == (held_out_ranking_metrics, held_out_strength_metrics)
    assert type(evaluation(TrainConfig(eval_padding_free=False), precision, None, 0).collate) is PairwiseCollator
