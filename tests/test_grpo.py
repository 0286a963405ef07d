"""Reward models inside a real `trl.GRPOTrainer` (CPU, a tiny random policy, one step): the rewards GRPO
computes equal score.py's for the same prompt + completion, through `reward.RewardFunction` and, for a
model trained in GRPO's format, through the folder path; and `reward/eval/consumers.py`'s reproduction of
GRPO's path is what GRPO itself computes."""

from __future__ import annotations

import json

import pytest
from conftest import save_tiny_policy, train_tiny
from datasets import Dataset
from test_consumers import polite_pairs

import score
from reward import RewardFunction
from reward.eval.consumers import Sequences, trl_grpo_path
from reward.eval.score_cli import parse_score_config
from reward.eval.scoring import RewardScorer

trl = pytest.importorskip("trl", reason="needs the bench extra: pip install -e '.[bench]'")
# trl's GRPOTrainer turns gradient checkpointing on and off on the policy with transformers' old names: its
# deprecation, not ours (pyproject.toml turns ours into errors; here only those two messages are let through)
THIRD_PARTY = [
    pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning"),
    pytest.mark.filterwarnings("ignore:`gradient_checkpointing_disable` is deprecated:FutureWarning"),
]
pytestmark = [pytest.mark.slow, *THIRD_PARTY]

PROMPTS = ["Could you name a fruit for me?", "Name an animal, please.", "Which sport do you like?", "A tool?"]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return save_tiny_policy(tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="module")
def trl_model(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("trl") / "rm")


def run_grpo(policy, reward_funcs, prompts, out) -> tuple[list, list, list[float], dict]:
    """One GRPO step; returns the prompts, completions and rewards its `_calculate_rewards` produced,
    and the step's logged metrics."""
    captured = []

    class Capturing(trl.GRPOTrainer):
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            captured.append((prompts, completions, rewards[:, 0].tolist()))
            return rewards

    args = trl.GRPOConfig(
        output_dir=str(out),
        max_steps=1,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=12,
        bf16=False,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
    )
    dataset = Dataset.from_dict({"prompt": prompts})
    trainer = Capturing(model=str(policy), reward_funcs=reward_funcs, args=args, train_dataset=dataset)
    trainer.train()
    assert len(captured) == 1
    logged = next(r for r in trainer.state.log_history if "reward" in r)
    return *captured[0], logged


def score_py_rewards(model_dir, prompts, completions, tmp_path) -> list[float]:
    path, out = tmp_path / "responses.jsonl", tmp_path / "scored.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "response": c}) + "\n" for p, c in zip(prompts, completions)))
    score.main(parse_score_config(["--model", str(model_dir), "--input", str(path), "--output", str(out)]))
    return [json.loads(line)["reward"] for line in out.read_text().splitlines()]


def test_reward_function_gives_grpo_the_training_reward(policy, trl_model, tmp_path):
    fn = RewardFunction(str(trl_model), device="cpu")
    prompts, completions, rewards, logged = run_grpo(policy, [fn], PROMPTS, tmp_path / "grpo")
    assert len(set(completions)) > 1 and len(rewards) == 4
    expected = score_py_rewards(trl_model, prompts, completions, tmp_path)
    assert rewards == pytest.approx(expected, abs=1e-5)
    assert logged[f"rewards/{fn.__name__}/mean"] == pytest.approx(sum(expected) / len(expected), abs=1e-5)


def test_a_model_trained_in_grpos_format_can_be_given_as_a_path(policy, tmp_path):
    folder = train_tiny(tmp_path / "rm", append_eos=False, add_special_tokens=False)
    prompts, completions, rewards, _ = run_grpo(policy, [str(folder)], PROMPTS, tmp_path / "grpo")
    assert rewards == pytest.approx(score_py_rewards(folder, prompts, completions, tmp_path), abs=1e-5)


def test_the_consumer_check_reproduces_grpos_own_scoring(policy, trl_model, tmp_path):
    prompts, completions, rewards, _ = run_grpo(policy, [str(trl_model)], PROMPTS, tmp_path / "grpo")
    scorer = RewardScorer(trl_model, device="cpu", show_progress=False)
    assert rewards == pytest.approx(trl_grpo_path(scorer, Sequences(prompts, completions)), abs=1e-5)
    trained = score_py_rewards(trl_model, prompts, completions, tmp_path)
    assert max(abs(a - b) for a, b in zip(rewards, trained)) > 1e-2  # a default run is not GRPO's format


def test_conversational_prompts_through_reward_function(policy, tmp_path):
    folder = train_tiny(tmp_path / "rm", dataset=Dataset.from_list(polite_pairs(64)), max_steps=3)
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    prompts, completions, rewards, _ = run_grpo(
        policy, [RewardFunction(str(folder), device="cpu")], chats, tmp_path / "g"
    )
    assert isinstance(completions[0], list) and completions[0][-1]["role"] == "assistant"
    assert rewards == pytest.approx(score_py_rewards(folder, prompts, completions, tmp_path), abs=1e-5)
    scorer = RewardScorer(folder, device="cpu", show_progress=False)
    # conversational training renders the same template GRPO renders: its path sees the trained reward too
    assert trl_grpo_path(scorer, Sequences(prompts, completions)) == pytest.approx(rewards, abs=1e-5)
