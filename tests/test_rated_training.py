"""Rated completions train a regression reward model (issue #31): the rows are recognised and grouped by
prompt, packed one segment per prompt with the rewards of separate padded forwards, accumulated exactly,
evaluated as score.py scores them, resumed exactly, and the saved folder's pipeline gives score.py's rewards."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import train_tiny
from datasets import Dataset
from safetensors.torch import load_file

import score
from reward.config import TrainConfig
from reward.data import load_preferences
from reward.errors import UserError
from reward.eval.score_cli import parse_score_config
from reward.eval.scoring import RewardScorer
from reward.formatting import SequenceFormat, format_text
from reward.labels.loss import RegressionObjective
from reward.labels.rated import RATED_ROWS, group_ratings, rating_scale, tokenize_ratings
from reward.loop import accumulate_gradients
from reward.model import resolve_precision
from reward.presets.graded import generate_ratings
from reward.presets.tiny import tiny_model
from reward.ranked.collate import RankedCollator
from reward.run.parts import training_objective

FP32 = resolve_precision(False, False, torch.device("cpu"))


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_a_ratings_file_is_read_as_rated_rows_grouped_by_prompt_and_held_out_whole(tmp_path):
    rows = generate_ratings(20, completions=3, seed=1)
    data = load_preferences(write(tmp_path / "r.jsonl", rows), eval_split_size=0.25, formats=(RATED_ROWS,))
    assert data.format == "rated" and data.held_out
    assert (len(data.train), len(data.test)) == (15, 5)  # 20 prompts of 3 completions, held out by prompt
    assert {len(g["scores"]) for g in [*data.train, *data.test]} <= {3, 6}  # a repeated adjacent prompt: 6
    assert sum(len(g["scores"]) for g in [*data.train, *data.test]) == 60
    trained = [c for group in data.train for c in group["completions"]]
    assert all(set(group["completions"]).isdisjoint(trained) for group in data.test)  # a group is on one side


@pytest.mark.parametrize(
    "row, said",
    [
        ({"prompt": "Q", "completion": " a", "score": "high"}, "row 2: field 'score' must be a finite number"),
        ({"prompt": "Q", "completion": 3, "score": 1}, "row 2: field 'completion' must be a string"),
        ({"prompt": "Q", "completion": " a", "score": None}, "row 2: field 'score' must be a finite number"),
    ],
)
def test_a_bad_rated_row_is_named_by_row_and_field(tmp_path, row, said):
    good = {"prompt": "Q", "completion": " b", "score": 1}
    with pytest.raises(UserError, match=said):
        load_preferences(write(tmp_path / "bad.jsonl", [good, row]), eval_split_size=0, formats=(RATED_ROWS,))


def test_an_empty_chat_completion_and_an_empty_answer_to_a_blank_prompt_are_refused(tmp_path):
    user = [{"role": "user", "content": "Name a fruit."}]
    rows = [{"prompt": user, "completion": [{"role": "assistant", "content": "Pear."}], "score": 1},
            {"prompt": user, "completion": [], "score": 0}]  # fmt: skip
    with pytest.raises(UserError, match="row 2: field 'completion' must be a non-empty list of messages"):
        load_preferences(write(tmp_path / "chat.jsonl", rows), eval_split_size=0, formats=(RATED_ROWS,))
    blank = [{"prompt": "Q", "completion": " a", "score": 1}, {"prompt": "  ", "completion": "", "score": 0}]
    with pytest.raises(UserError, match="row 2: field 'completion' is empty"):
        load_preferences(write(tmp_path / "blank.jsonl", blank), eval_split_size=0, formats=(RATED_ROWS,))


def test_a_file_with_pair_and_rated_columns_is_read_as_pairs_and_says_so(capsys):
    from reward.run.rows import read_rows

    rows = [{"prompt": "Q", "chosen": " a", "rejected": " b", "completion": " a", "score": 1}] * 4
    data, _ = read_rows(TrainConfig(eval_split_size=0), Dataset.from_list(rows), None)
    assert data.format == "explicit prompt"
    assert "read as pairs (as score.py reads it); 'completion', 'score' not used" in capsys.readouterr().out


def test_over_long_completions_are_dropped_and_counted_and_the_scale_is_the_kept_ratings(tiny_tokenizer):
    rows = Dataset.from_list(
        [
            {"prompt": "Name three fruits.", "completion": " apple, pear and plum.", "score": 3},
            {"prompt": "Name three fruits.", "completion": " apple" * 60, "score": 0},  # too long
            {"prompt": "Name three fruits.", "completion": " violin, pear and red.", "score": 1},
            {"prompt": "Name a tool.", "completion": " harp" * 60, "score": 2},  # too long: its prompt goes too
        ]
    )
    tokens, kept = tokenize_ratings(group_ratings(rows), tiny_tokenizer, SequenceFormat(), max_length=40)
    assert (kept.prompts, kept.completions, kept.dropped_too_long) == (1, 2, 2)
    row = tokens[0]
    assert row["scores"] == [3.0, 1.0] and (row["better"], row["worse"]) == ([0], [1])  # the pair 3 > 1
    scale = rating_scale(tokens, standardize=True)
    assert (scale.mean, scale.std) == (2.0, 1.0)
    assert rating_scale(tokens, standardize=False).standardized is False


def rated_rows(tokenizer, n: int, seed: int) -> list[dict]:
    rows = Dataset.from_list(generate_ratings(n, completions=3, seed=seed))
    tokens, _ = tokenize_ratings(group_ratings(rows), tokenizer, SequenceFormat(), max_length=None)
    return list(tokens)


def test_one_segment_per_prompt_gives_the_padded_rewards_and_gradients(tiny_tokenizer):
    rows = rated_rows(tiny_tokenizer, 5, seed=3)
    objective = RegressionObjective(mean=1.5, std=1.1, pair_weight=0.5)
    grads = []
    for packed in (True, False):
        model = tiny_model(tiny_tokenizer, seed=0)
        batch = RankedCollator(tiny_tokenizer.pad_token_id, packed=packed)(rows)
        out = objective(batch.rewards(model), batch)
        out.loss.backward()
        grads.append((out.rewards, [p.grad.clone() for p in model.parameters()]))
        if packed:
            assert batch.num_tokens < batch.sequence_tokens  # each prompt computed once
    (r_packed, g_packed), (r_padded, g_padded) = grads
    torch.testing.assert_close(r_packed, r_padded, atol=1e-5, rtol=0)
    for a, b in zip(g_packed, g_padded):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_uneven_micro_batches_of_rated_prompts_give_the_big_batch_gradient(tiny_tokenizer):
    rows = rated_rows(tiny_tokenizer, 7, seed=4)
    rows[2] = {**rows[2], **{k: rows[2][k][:1] for k in ("completion_ids", "scores")}, "better": [], "worse": []}
    rows[2]["tied"] = []  # a prompt with one rating: regression only, no pair
    objective = RegressionObjective(mean=1.4, std=1.2, pair_weight=1.0)
    assert objective.row_units(Dataset.from_list(rows)) == [len(r["scores"]) for r in rows]
    collate = RankedCollator(tiny_tokenizer.pad_token_id)
    model = tiny_model(tiny_tokenizer, seed=0)
    big = accumulate_gradients(model, [collate(rows)], objective, FP32)
    g_big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    small = accumulate_gradients(model, [collate(rows[:3]), collate(rows[3:6]), collate(rows[6:])], objective, FP32)
    assert big.summary()["loss"] == pytest.approx(small.summary()["loss"], abs=1e-6)
    for a, p in zip(g_big, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


def test_the_options_choose_the_objective():
    from reward.labels.rated import RatingScale

    objective = training_objective(TrainConfig(rating_pair_weight=0.25), scale=RatingScale(2.0, 0.5, True))
    assert objective == RegressionObjective(2.0, 0.5, 0.25)
    with pytest.raises(UserError, match="--rating_pair_weight must be >= 0"):
        TrainConfig(rating_pair_weight=-1.0)


def test_a_ratings_file_trains_a_regression_model_that_the_pipeline_and_score_py_read_alike(tmp_path, capsys):
    """The issue's "done when": `train.py --dataset_name ratings.jsonl`; the pipeline's scores are score.py's
    rewards, and score.py's metrics on the held-out file are the ones training's evaluation reported."""
    from transformers import pipeline

    path = write(tmp_path / "ratings.jsonl", generate_ratings(60, completions=4, seed=5))
    out = train_tiny(tmp_path / "rm", dataset_name=path, max_steps=8, per_device_train_batch_size=8)
    config = json.loads((out / "config.json").read_text())
    ratings = config["reward_ratings"]
    assert ratings["standardized"] and ratings["std"] > 0 and ratings["pair_weight"] == 0.0
    final = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    held_out = out / "heldout_ratings.jsonl"
    scored_path = tmp_path / "scored.jsonl"
    summary = score.main(parse_score_config(["--model", str(out), "--input", str(held_out),
                                                   "--output", str(scored_path)]))  # fmt: skip
    for key in ("rmse", "pearson", "spearman"):
        assert summary[key] == pytest.approx(final[f"eval_{key}"], abs=1e-5)
    assert summary["implied_pair_accuracy"] == pytest.approx(final["eval_accuracy"], abs=1e-9)
    assert summary["implied_pairs"] == final["eval_implied_pairs"] and summary["rated"] == final["eval_completions"]
    scored = [json.loads(line) for line in scored_path.read_text().splitlines()]
    for row in scored:
        assert row["rating_estimate"] == pytest.approx(row["reward"] * ratings["std"] + ratings["mean"], abs=1e-6)
    targets = [(row["score"] - ratings["mean"]) / ratings["std"] for row in scored]  # what the regression aims at
    squared = [(row["reward"] - t) ** 2 for row, t in zip(scored, targets)]
    assert final["eval_loss"] == pytest.approx(sum(squared) / len(squared), abs=1e-5)  # each reward with its rating

    scorer = RewardScorer(str(out), show_progress=False)
    texts = [format_text(r["prompt"] + r["completion"], scorer.tokenizer, scorer.format) for r in scored]
    rm = pipeline("text-classification", model=str(out), device="cpu")
    piped = [rm(t)[0]["score"] for t in texts]
    assert piped == pytest.approx([r["reward"] for r in scored], abs=1e-5)
    assert len({round(r, 4) for r in piped}) > len(piped) // 2  # distinct rewards: the comparison is not trivial
    card = (out / "README.md").read_text()
    assert "A regression reward model" in card and "estimates the rating" in card and "| eval_rmse |" in card
    printed = capsys.readouterr().out
    assert "format: rated completions -> regression" in printed and "held-out: rmse" in printed
    # the printed --check_consumers line takes the held-out ratings: each completion is a consumer's response
    score.main(parse_score_config(["--model", str(out), "--input", str(held_out), "--check_consumers",
                                   "--check_rows", "6"]))  # fmt: skip
    checked = capsys.readouterr().out
    assert "consumer check: first 6 of 24 rows" in checked
    assert any(line.startswith('pipeline("text-classification")') and "same as training" in line
               for line in checked.splitlines())  # fmt: skip


def test_a_rated_run_resumes_exactly(tmp_path):
    import train as train_script

    rows = Dataset.from_list(generate_ratings(24, completions=3, seed=6))

    def options(out, **more):
        base = dict(max_steps=6, save_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                    learning_rate=1e-3, rating_pair_weight=0.5, logging_steps=1, output_dir=str(out),
                    disable_tqdm=True, use_cpu=True)  # fmt: skip
        return TrainConfig(**{**base, **more})

    train_script.main(options(tmp_path / "full"), dataset=rows)
    stopped = train_script.main(options(tmp_path / "cut"), dataset=rows, should_stop=lambda step: step == 3)
    assert stopped.stopped and stopped.steps == 3
    train_script.main(options(tmp_path / "cut", resume_from_checkpoint="latest"), dataset=rows)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    checkpoint = json.loads((tmp_path / "cut" / "checkpoint-2" / "config.json").read_text())
    assert checkpoint["reward_ratings"] == json.loads((tmp_path / "full" / "config.json").read_text())["reward_ratings"]


def test_reward_trainer_trains_rated_rows_and_evaluate_reads_them_as_training_did(tmp_path):
    from reward import RewardConfig, RewardTrainer

    rows = Dataset.from_list(generate_ratings(40, completions=3, seed=7))
    held = Dataset.from_list(generate_ratings(8, completions=3, seed=8))
    args = RewardConfig(output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=8,
                        learning_rate=1e-3, disable_tqdm=True, eval_strategy="steps", eval_steps=4)  # fmt: skip
    trainer = RewardTrainer(model="tiny", args=args, train_dataset=rows, eval_dataset=held)
    trainer.train()
    after = trainer.evaluate()
    final = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert after["eval_completions"] == 24 and "eval_pairs" not in after
    for key in ("loss", "rmse", "pearson", "spearman", "accuracy"):
        assert after[f"eval_{key}"] == pytest.approx(final[f"eval_{key}"], abs=1e-6)


def test_pair_loss_options_are_refused_on_rated_rows_and_rating_options_said_unused_on_pairs(capsys):
    from reward.run.rows import read_rows

    rows = Dataset.from_list(generate_ratings(6, completions=2, seed=1))
    with pytest.raises(UserError, match="--label_smoothing: an option of the pair and ranking losses"):
        read_rows(TrainConfig(label_smoothing=0.1), rows, None)
    data, _ = read_rows(TrainConfig(rating_pair_weight=0.5, synthetic_num_pairs=40), None, None)
    assert data.format == "explicit prompt"
    assert (
        "--rating_pair_weight: not used, the rows are explicit prompt, not rated completions" in capsys.readouterr().out
    )


@pytest.mark.parametrize("kind", ["pairs", "ratings"])
def test_a_named_evaluation_set_emptied_by_the_length_rules_is_said_and_skipped(tmp_path, capsys, kind):
    import train as train_script
    from reward.presets.synthetic import generate_pairs

    if kind == "pairs":
        rows, long = generate_pairs(40, seed=1), [{"prompt": "Q", "chosen": " yes" * 80, "rejected": " no" * 80}]
    else:
        rows, long = generate_ratings(12, completions=3, seed=1), [{"prompt": "Q", "completion": " a" * 80, "score": 1}]
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=2, max_length=64, eval_strategy="steps",
                      eval_steps=2, disable_tqdm=True, per_device_train_batch_size=8)  # fmt: skip
    out = train_script.main(cfg, dataset=Dataset.from_list(rows), eval_sets={"ok": Dataset.from_list(rows[:8]),
                            "long": Dataset.from_list(long)})  # fmt: skip
    assert "eval[long]: nothing left after the length rules: not evaluated" in capsys.readouterr().out
    assert out.eval is not None and out.steps == 2  # the other set was evaluated
