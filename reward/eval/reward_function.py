"""A trained reward model as a reward function for RL loops (TRL's `reward_funcs` signature).

    from reward import RewardFunction
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=RewardFunction("runs/tiny-synthetic"), ...)

TRL calls a callable reward as `f(prompts=..., completions=..., completion_ids=..., **columns)` and
wants one float per completion (trl/trainer/grpo_trainer.py, `_calculate_rewards`). Prompts and
completions are strings, or message lists for conversational data. Given a model *path* instead,
GRPO formats the text its own way (no BOS, no EOS: `reward/eval/consumers.py` measures the gap); this
class formats every prompt + completion exactly as training did, from the `reward_format` the
model's config.json records, and scores them in length-sorted batches on the process's device.

A completion that GRPO cut at `max_completion_length` arrives as text like a finished one (both are
decoded without special tokens) and is scored as training scored finished text (EOS appended, for
the default format): its reward is the reward of that text as an answer. To keep such completions
out of the policy loss, use `GRPOConfig(mask_truncated_completions=True)`.

`normalize=True` returns (r - mean) / std with the reward statistics of the held-out split that
train.py saved (config.json `reward_stats`): rewards centred near 0 with unit spread, the scale
PPO-style advantage estimates expect (OpenRLHF's `normalize_reward` does the same with its own
stored mean/std). GRPO normalises rewards within each group anyway, so it does not need it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.eval.scoring import RewardScorer


class RewardFunction:
    """`f(prompts, completions, **kwargs) -> list[float]`: the trained reward of prompt + completion."""

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        normalize: bool = False,
        show_progress: bool = False,
    ):
        self.scorer = RewardScorer(
            model, tokenizer, batch_size=batch_size, device=device, show_progress=show_progress, normalize=normalize
        )
        # TRL names a callable's metrics after its __name__ (rewards/<name>/mean)
        name = Path(str(model)).name if isinstance(model, (str, Path)) else type(model).__name__
        self.__name__ = name or "reward_model"

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float]:
        """One reward per completion; other keyword arguments (completion_ids, dataset columns,
        trainer_state, ...) are accepted and ignored."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return self.scorer.rewards(list(prompts), list(completions))

    def __repr__(self) -> str:
        return f"RewardFunction({self.scorer.source!r}, normalize={self.scorer.normalize})"
