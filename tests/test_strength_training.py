"""Training on pairs with a `strength` column (#31, reward/labels/strength.py): each pair's loss × w(strength)
(`--strength_as weight`, the default) or the strength as the margin to win by (`--strength_as margin`). The
weight travels from the rows through both collators to the loss; an optimizer step's N stays its pairs, so
accumulated micro-batches give the big batch; end to end, weight 1 is the plain run and weight 2 doubles
every step's loss on the same batches."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import read_metrics, train_tiny
from datasets import Dataset

from reward.collate import PAIR_WEIGHT, PairwiseCollator
from reward.config import TrainConfig
from reward.data import EXPLICIT, PreferenceData
from reward.errors import UserError
from reward.eval.model_card import strength_sentence
from reward.eval.score_cli import main as score_main
from reward.eval.score_cli import parse_score_config
from reward.fast.packing import PackingCollator
from reward.formatting import tokenize_pairs
from reward.labels.strength import apply_strength, held_out_strength_metrics, parse_weights
from reward.loss import PairObjective
from reward.presets.synthetic import generate_pairs
from reward.run.resume_rules import rows_fingerprint


def data_with(strengths: list, margin: bool = False) -> PreferenceData:
    rows = [{**row, "strength": s} for row, s in zip(generate_pairs(len(strengths), seed=1), strengths)]
    if margin:
        rows = [{**row, "margin": 9.0} for row in rows]
    return PreferenceData(Dataset.from_list(rows), None, EXPLICIT, margin, "pairs.jsonl", False)


def test_strength_becomes_a_weight_from_the_table_or_the_margin(capsys):
    weighted = apply_strength(data_with([1, 3, 2]), "weight", "1:1,2:2.5,3:4")
    assert weighted.train[PAIR_WEIGHT] == [1.0, 4.0, 2.5] and PAIR_WEIGHT in weighted.carried
    assert "strength 1..3" in capsys.readouterr().out
    margined = apply_strength(data_with([1, 3], margin=True), "margin", "1:1")
    assert margined.train["margin"] == [1.0, 3.0] and margined.has_margin and PAIR_WEIGHT not in margined.carried
    plain = data_with([1, 2])
    assert apply_strength(plain, "ignore", "1:1") is plain


def test_bad_strengths_are_named_by_row():
    with pytest.raises(UserError, match=r"row 2: field 'strength' is -1"):
        apply_strength(data_with([1, -1]), "weight", "1:1")
    with pytest.raises(UserError, match=r"row 1: field 'strength' 4: no weight for it in --strength_weights"):
        apply_strength(data_with([4]), "weight", "1:1,2:2")
    with pytest.raises(UserError, match="is not LEVEL:WEIGHT"):
        parse_weights("1:x")
    with pytest.raises(UserError, match="--strength_as must be 'weight', 'margin' or 'ignore'"):
        TrainConfig(strength_as="both")
    with pytest.raises(UserError, match="--strength_weights must be LEVEL:WEIGHT"):
        TrainConfig(strength_weights="strong")


def pairs_with_weights() -> list[dict]:
    return [
        {"chosen_ids": [5, 6, 7], "rejected_ids": [5, 8], PAIR_WEIGHT: 3.0},
        {"chosen_ids": [9, 4], "rejected_ids": [9, 4, 4, 2], PAIR_WEIGHT: 1.0},
        {"chosen_ids": [3], "rejected_ids": [3, 1], PAIR_WEIGHT: 2.0},
    ]


def test_both_collators_carry_the_weight_and_the_loss_scales_each_pair():
    pairs = pairs_with_weights()
    padded, packed = PairwiseCollator(0)(pairs), PackingCollator(0)(pairs)
    assert padded.weight.tolist() == packed.weight.tolist() == [3.0, 1.0, 2.0]
    assert PairwiseCollator(0)([{"chosen_ids": [1], "rejected_ids": [2]}]).weight is None  # plain pairs: none
    rewards = torch.tensor([1.0, 0.0, 2.0, 0.5, 0.5, 0.0])  # [chosen; rejected]
    out = PairObjective()(rewards, padded)
    terms = -torch.nn.functional.logsigmoid(rewards[:3] - rewards[3:])  # (3,) each pair's plain term
    assert out.loss.item() == pytest.approx((3 * terms[0] + terms[1] + 2 * terms[2]).item() / 3, abs=1e-6)


def test_accumulated_micro_batches_with_weights_give_the_big_batch():
    """N is the step's pairs whatever the weights: 2 + 1 pairs over N = 3 equal the batch of 3."""
    pairs, objective = pairs_with_weights(), PairObjective()
    rewards = torch.tensor([1.0, 0.0, 2.0, 0.5, 0.5, 0.0], requires_grad=True)
    whole = objective(torch.cat([rewards[:3], rewards[3:]]), PairwiseCollator(0)(pairs)).loss
    (grad_whole,) = torch.autograd.grad(whole, rewards)
    first = objective(torch.stack([rewards[0], rewards[1], rewards[3], rewards[4]]), PairwiseCollator(0)(pairs[:2]), 3)
    second = objective(torch.stack([rewards[2], rewards[5]]), PairwiseCollator(0)(pairs[2:]), 3)
    (grad_parts,) = torch.autograd.grad(first.loss + second.loss, rewards)
    assert (first.loss + second.loss).item() == pytest.approx(whole.item(), abs=1e-7)
    assert torch.allclose(grad_parts, grad_whole, atol=1e-7)


def step_losses(out) -> list[float]:
    return [r["loss"] for r in read_metrics(out) if "loss" in r]


def run(tmp_path, name: str, strengths: int, **options) -> list[float]:
    rows = [{**row, "strength": strengths} for row in generate_pairs(96, seed=2)]
    out = train_tiny(tmp_path / name, dataset=Dataset.from_list(rows), max_steps=3, logging_steps=1, **options)
    return step_losses(out)


@pytest.mark.slow
def test_end_to_end_weight_one_is_the_plain_run_and_weight_two_doubles_each_step(tmp_path):
    plain = run(tmp_path, "plain", 1, strength_as="ignore")
    assert run(tmp_path, "one", 1, strength_weights="1:1") == pytest.approx(plain, abs=1e-6)
    doubled = run(tmp_path, "two", 1, strength_weights="1:2", learning_rate=0.0)
    still = run(tmp_path, "still", 1, strength_as="ignore", learning_rate=0.0)  # the same weights every step
    assert doubled == pytest.approx([2 * loss for loss in still], abs=1e-5)


@pytest.mark.slow
def test_end_to_end_strength_as_margin_is_the_margin_run(tmp_path):
    as_margin = run(tmp_path, "as_margin", 2, strength_as="margin")
    rows = [{**row, "margin": 2.0} for row in generate_pairs(96, seed=2)]
    with_margin = step_losses(
        train_tiny(tmp_path / "margin", dataset=Dataset.from_list(rows), max_steps=3, logging_steps=1)
    )
    assert as_margin == pytest.approx(with_margin, abs=1e-6)


# --- accuracy by strength level in training's held-out evaluation and the model card (#31) ------------------
def test_held_out_strength_metrics_is_the_accuracy_of_each_levels_pairs():
    """Worked by hand: Δ = [1, -1, 0.5, 0, 2, -0.2, 3]. Level 1 (strengths 1, 1.4, 1): Δ 1, -1, 3 -> 2/3;
    level 2 (2.0): Δ 0.5 -> 1; level 3 (3, 3 and 2.6, rounded): Δ 0 (a tie counts as wrong), 2, -0.2 -> 1/3."""
    r_chosen = torch.tensor([1.0, 0.0, 0.5, 1.0, 2.0, 0.0, 3.0])  # (7,)
    r_rejected = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 0.2, 0.0])  # (7,)
    pairs = Dataset.from_dict({"strength": ["1", "1.4", "2.0", "3", "3", "2.6", "1"]})  # CSV cells arrive as text
    out = held_out_strength_metrics(r_chosen, r_rejected, pairs)
    assert out == {
        "accuracy_strength_1": pytest.approx(2 / 3),
        "accuracy_strength_2": 1.0,
        "accuracy_strength_3": 1 / 3,
    }
    assert list(out) == ["accuracy_strength_1", "accuracy_strength_2", "accuracy_strength_3"]  # integer levels
    assert held_out_strength_metrics(r_chosen, r_rejected, Dataset.from_dict({"margin": [1.0] * 7})) == {}


def test_the_strength_is_carried_by_every_reading_but_ignore_and_changes_nothing_for_plain_pairs(tiny_tokenizer):
    assert "strength" in apply_strength(data_with([1, 2]), "weight", "1:1,2:2").carried
    assert "strength" in apply_strength(data_with([1, 2]), "margin", "1:1").carried
    assert "strength" not in apply_strength(data_with([1, 2]), "ignore", "1:1").carried
    weighted = apply_strength(data_with([1, 3, 2]), "weight", "1:1,2:2,3:3")
    tokens, _ = tokenize_pairs(weighted.train, tiny_tokenizer, weighted.format, None, keep=weighted.carried)
    assert tokens["strength"] == [1, 3, 2] and tokens[PAIR_WEIGHT] == [1.0, 3.0, 2.0]
    # plain pairs: apply_strength leaves them alone, and carried names a column they lack: same rows, same hash
    plain = PreferenceData(Dataset.from_list(generate_pairs(6, seed=1)), None, EXPLICIT, False, "pairs.jsonl", False)
    assert apply_strength(plain, "weight", "1:1") is plain
    bare, _ = tokenize_pairs(plain.train, tiny_tokenizer, plain.format, None)
    keeping, _ = tokenize_pairs(plain.train, tiny_tokenizer, plain.format, None, keep=weighted.carried)
    assert keeping.column_names == bare.column_names and rows_fingerprint(keeping) == rows_fingerprint(bare)
    # the collators read their own columns: a carried strength changes no batch
    with_strength = [{**pair, "strength": 2} for pair in pairs_with_weights()]
    for collate in (PairwiseCollator(0), PackingCollator(0)):
        a, b = vars(collate(with_strength)), vars(collate(pairs_with_weights()))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_the_card_says_how_the_strength_was_read():
    weights = {"strength_as": "weight", "strength_weights": "1:1,2:2.5,3:4"}
    assert strength_sentence(True, weights) == (
        "Each pair's strength was read as a loss weight (scaled Bradley–Terry, |strength| 1: 1, 2: 2.5, 3: 4; "
        "docs/loss.md §10)."
    )
    assert "the margin the pair must be won by (TRL's margin" in strength_sentence(True, {"strength_as": "margin"})
    assert "not used (`--strength_as ignore`)" in strength_sentence(True, {"strength_as": "ignore"})
    assert strength_sentence(False, weights) == ""  # plain pairs: no sentence


def test_a_strength_run_reports_the_accuracy_of_each_level_in_its_metrics_and_card(tmp_path):
    """The generated strength task end to end: the final evaluation logs eval_accuracy_strength_1..3, each the
    accuracy over that level's held-out pairs as score.py's rewards of the saved model give it."""
    import train as train_script

    out = tmp_path / "run"
    cfg = TrainConfig(
        dataset_name="synthetic-strength",
        synthetic_num_pairs=200,
        max_steps=8,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        use_cpu=True,
        disable_tqdm=True,
        output_dir=str(out),
    )
    train_script.main(cfg)
    final = [r for r in read_metrics(out) if "eval_loss" in r][-1]
    logged = {k: v for k, v in final.items() if k.startswith("eval_accuracy_strength_")}
    per_pair = tmp_path / "scored.jsonl"
    score_main(parse_score_config(["--model", str(out), "--input", str(out / "heldout_pairs.jsonl"),
                                   "--output", str(per_pair)]))  # fmt: skip
    hits: dict[int, list[bool]] = {}
    for row in map(json.loads, per_pair.read_text().splitlines()):
        hits.setdefault(row["strength"], []).append(row["r_chosen"] > row["r_rejected"])
    assert sorted(hits) == [1, 2, 3] and sum(map(len, hits.values())) == final["eval_pairs"] == 20
    assert logged == {f"eval_accuracy_strength_{k}": pytest.approx(sum(h) / len(h), abs=1e-12) for k, h in hits.items()}
    assert len(set(logged.values())) > 1  # the levels differ here: a single overall accuracy would not pass
    card = (out / "README.md").read_text()
    assert "Each pair's strength was read as a loss weight (scaled Bradley–Terry, |strength| 1: 1, 2: 2, 3: 3;" in card
    for name, value in logged.items():
        assert f"| {name} | {value:.4f} |" in card


def test_a_weighted_strength_run_resumes_exactly_and_refuses_new_weights(tmp_path):
    from safetensors.torch import load_file

    import train as train_script
    from reward.presets.graded import generate_strength_pairs

    rows = Dataset.from_list(generate_strength_pairs(48, seed=3))

    def options(out, **more):
        base = dict(max_steps=6, save_steps=2, per_device_train_batch_size=8, gradient_accumulation_steps=2,
                    learning_rate=1e-3, logging_steps=1, output_dir=str(out), disable_tqdm=True)  # fmt: skip
        return TrainConfig(**{**base, **more})

    train_script.main(options(tmp_path / "full"), dataset=rows)
    stopped = train_script.main(options(tmp_path / "cut"), dataset=rows, should_stop=lambda step: step == 3)
    assert stopped.stopped and stopped.steps == 3
    with pytest.raises(UserError, match="--strength_weights"):  # the weights are in the checkpoint's rows
        train_script.main(options(tmp_path / "cut", resume_from_checkpoint="latest", strength_weights="1:1,2:3,3:5"),
                          dataset=rows)  # fmt: skip
    train_script.main(options(tmp_path / "cut", resume_from_checkpoint="latest"), dataset=rows)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
