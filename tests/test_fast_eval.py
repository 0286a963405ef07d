"""Evaluation and scoring packed (the prompt of a pair or ranked row computed once, no padding) give the
padded forward's numbers: every metric of `evaluate`, `score.py`'s pairs and rankings, and a GRPO
batch of grouped completions, on Llama, Qwen2 and GPT-2 (pad == eos). The padded reference always
runs on a second copy of the model, built from the same seed and never switched to the segment
attention, and `forward_counts` shows which path each copy really took."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import build_arch_model
from datasets import Dataset

import train
from reward.collate import PairwiseCollator
from reward.config import TrainConfig
from reward.eval.scoring import RewardScorer
from reward.evaluate import evaluate
from reward.fast.packed_forward import forward_counts
from reward.fast.packing import PackingCollator, evaluation_collator
from reward.integrations.trainer import evaluate_rows
from reward.loss import PairObjective
from reward.model import resolve_precision
from reward.presets.synthetic import generate_long_prompt_pairs, generate_long_rankings
from reward.presets.tiny import build_tiny_tokenizer, tiny_model

VOCAB = 97
TOL = dict(rtol=1e-5, atol=1e-5)  # what "the padded rewards to 1e-5" means here


def build(arch: str, seed: int = 3) -> tuple[torch.nn.Module, int, int]:
    """(model, pad, eos): Llama / Qwen2 with their own pad id, GPT-2 with pad == eos."""
    return build_arch_model(arch, VOCAB, seed=seed, positions=512)


def pair_rows(n: int, eos: int, pad: int, seed: int = 0) -> Dataset:
    """Tokenized pairs behind long shared prompts, with margins and a subset column; the edge cases:
    a response that is only EOS (its reward token in the prompt when pad == eos), identical sides."""
    rng = random.Random(seed)
    words = [t for t in range(3, VOCAB - 1) if t not in (pad, eos)]
    rows = []
    for i in range(n):
        prompt = [rng.choice(words) for _ in range(rng.randint(20, 120))]
        chosen = [rng.choice(words) for _ in range(rng.randint(0 if i == 1 else 1, 15))]
        rejected = list(chosen) if i == 2 else [rng.choice(words) for _ in range(rng.randint(1, 15))]
        rows.append(
            {
                "chosen_ids": prompt + chosen + [eos],
                "rejected_ids": prompt + rejected + [eos],
                "margin": 0.5 * (i % 3),
                "subset": "ab"[i % 2],
            }
        )
    return Dataset.from_list(rows)


def assert_same_metrics(packed: dict, padded: dict) -> None:
    assert packed.keys() == padded.keys()
    for key, want in padded.items():
        if isinstance(want, float):
            torch.testing.assert_close(packed[key], want, **TOL, msg=key)
        else:
            assert packed[key] == want, key


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_evaluate_packed_gives_the_padded_metrics(arch):
    model, pad, eos = build(arch)
    reference, _, _ = build(arch)  # same seed, never switched to the segment attention
    ds = pair_rows(40, eos, pad)
    objective = PairObjective(center_rewards_coefficient=0.01, label_smoothing=0.1)
    precision = resolve_precision(False, False, torch.device("cpu"))
    collate = evaluation_collator(pad, True, model)
    assert isinstance(collate, PackingCollator) and collate.share_prefix and collate.max_tokens_per_row == "all"
    packed = evaluate(model, ds, collate, objective, 16, precision)
    padded = evaluate(reference, ds, PairwiseCollator(pad), objective, 16, precision)
    assert forward_counts(model) == {"packed": 3, "padded": 0}  # 40 pairs in batches of 16: all packed
    assert forward_counts(reference)["packed"] == 0
    assert reference.config._attn_implementation == "sdpa"
    assert padded["pairs"] == 40 and "accuracy/a" in padded and padded["ece"] is not None
    assert_same_metrics(packed, padded)


def test_the_padded_evaluation_is_a_switch_and_encoders_always_get_it(tmp_path):
    assert type(evaluation_collator(0, packed=False)) is PairwiseCollator  # --eval_padding_free false
    from transformers import BertConfig, BertForSequenceClassification

    bert = BertForSequenceClassification(
        BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    assert type(evaluation_collator(0, True, bert)) is PairwiseCollator


def test_an_eager_model_is_evaluated_and_scored_padded_and_stays_eager():
    """Packing switches a model to the segment attention, whose calls without segments run sdpa: for a
    model on eager attention (trained padded, say) that would change its other forwards, so its
    evaluation and scoring stay padded and its attention untouched."""
    model, pad, eos = build("llama")
    model.set_attn_implementation("eager")
    assert type(evaluation_collator(pad, True, model)) is PairwiseCollator
    tokenizer = build_tiny_tokenizer()
    tokenizer.pad_token_id, tokenizer.eos_token_id = pad, eos
    scorer = RewardScorer(model, tokenizer, device="cpu", show_progress=False)
    scorer.score_groups([[row["chosen_ids"], row["rejected_ids"]] for row in pair_rows(3, eos, pad)])
    assert model.config._attn_implementation == "eager" and forward_counts(model)["packed"] == 0


def test_ranked_held_out_metrics_packed_equal_padded():
    """Held-out rankings (expanded to their comparisons): accuracy, best-of-4 and Kendall's τ agree."""
    tokenizer = build_tiny_tokenizer()
    model, reference = (tiny_model(tokenizer, seed=5) for _ in range(2))
    rows = Dataset.from_list(generate_long_rankings(12, seed=1))
    packed = evaluate_rows(model, tokenizer, rows, TrainConfig())
    padded = evaluate_rows(reference, tokenizer, rows, TrainConfig(eval_padding_free=False))
    assert packed["ranked_prompts"] == 12 and packed["pairs"] == 12 * 6
    assert forward_counts(model)["packed"] > 0 and forward_counts(reference)["packed"] == 0
    assert_same_metrics(packed, padded)


@pytest.mark.slow  # two train.py runs
def test_training_evaluates_packed_with_the_padded_numbers(tmp_path):
    """train.py's held-out evaluation, both ways: the same run (training is untouched by the switch),
    eval metrics to 1e-5 at every evaluation."""
    runs = {}
    for packed in ("true", "false"):
        out = tmp_path / packed
        args = ["--dataset_name", "synthetic-long", "--synthetic_num_pairs", "120", "--max_steps", "2"]
        args += ["--eval_steps", "1", "--output_dir", str(out), "--disable_tqdm", "--eval_padding_free", packed]
        assert train.cli(args) == 0
        runs[packed] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = {k: [r for r in v if "eval_loss" in r] for k, v in runs.items()}
    assert len(evals["true"]) == len(evals["false"]) == 2
    for fast, ref in zip(evals["true"], evals["false"], strict=True):
        assert fast.get("loss") == ref.get("loss")  # the training steps are the same steps
        for key in [k for k in ref if k.startswith("eval_") and isinstance(ref[k], float)]:
            torch.testing.assert_close(fast[key], ref[key], **TOL, msg=key)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_scoring_packed_equals_padded_for_pairs_rankings_and_grpo_groups(arch):
    """RewardScorer: pairs (one group each), ranked rows (K completions, one group) and `rewards()` with
    repeated prompts (GRPO's generations: grouped by prompt, a group larger than a batch split) give
    the padded scorer's rewards, in input order."""
    model, pad, eos = build(arch)
    reference, _, _ = build(arch)
    tokenizer = build_tiny_tokenizer()  # only its pad/eos ids matter: the rows below are token ids
    tokenizer.pad_token_id, tokenizer.eos_token_id = pad, eos
    fast = RewardScorer(model, tokenizer, batch_size=5, device="cpu", show_progress=False)
    slow = RewardScorer(reference, tokenizer, batch_size=5, device="cpu", show_progress=False, padding_free=False)
    ds = pair_rows(13, eos, pad, seed=4)
    groups = [[row["chosen_ids"], row["rejected_ids"]] for row in ds]
    groups += [[ds[i]["chosen_ids"], ds[i]["rejected_ids"], ds[i + 1]["chosen_ids"]] for i in range(4)]
    groups += [[ds[0]["chosen_ids"][: 10 + k] for k in range(12)]]  # 12 > batch_size 5: split in pieces
    got, want = fast.score_groups(groups), slow.score_groups(groups)
    assert [len(g) for g in got] == [len(g) for g in groups]
    torch.testing.assert_close(torch.tensor(sum(got, [])), torch.tensor(sum(want, [])), **TOL)
    one_by_one = [reference.forward(torch.tensor([seq])).logits[0, 0].item() for g in groups for seq in g]
    torch.testing.assert_close(torch.tensor(sum(got, [])), torch.tensor(one_by_one), **TOL)
    assert forward_counts(model)["packed"] > 0 and forward_counts(reference)["packed"] == 0


def test_reward_function_groups_generations_by_prompt(tiny_model_dir):
    """GRPO hands the reward function num_generations completions per prompt, interleaved: grouped by
    prompt they share one prefix; the rewards come back in the caller's order, equal to the padded."""
    from reward import RewardFunction

    rows = generate_long_prompt_pairs(4, seed=2)
    prompts = [r["prompt"] for r in rows for _ in range(3)][::-1]
    # three different completions a prompt, so a group read back in another order gives other rewards
    completions = [c for r in rows for c in (r["chosen"], r["rejected"], r["rejected"] + r["chosen"])][::-1]
    fast = RewardFunction(str(tiny_model_dir))
    slow = RewardFunction(str(tiny_model_dir), padding_free=False)
    got = fast(prompts=prompts, completions=completions)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(slow(prompts=prompts, completions=completions)), **TOL)
    alone = [slow(prompts=[p], completions=[c])[0] for p, c in zip(prompts, completions)]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(alone), **TOL)
    assert forward_counts(fast.model)["packed"] > 0
