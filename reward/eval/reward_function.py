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

A bare string, None, a None item or a message with a role training refuses is a `UserError` (a
ValueError) naming the argument and the index (reward/eval/arguments.py). A completion longer than
the model's positions (or `max_length=`) is cut to its last tokens (`truncation="left"`, the
default) or left without a reward (`truncation="skip"`: None, which GRPO turns into NaN and gives no
advantage); the first call that does either warns once, and `length_counts` keeps counting
(reward/eval/lengths.py).

`normalize=True` returns (r - mean) / std with the reward statistics of the held-out split that
train.py saved (config.json `reward_stats`): rewards centred near 0 with unit spread, the scale
PPO-style advantage estimates expect (OpenRLHF's `normalize_reward` does the same with its own
stored mean/std). GRPO normalises rewards within each group anyway, so it does not need it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from reward.eval.scoring import RewardScorer


class RewardFunction(RewardScorer):
    """`f(prompts, completions, **kwargs) -> list[float]`: the trained reward of prompt + completion.

    Built like a `RewardScorer` (a folder or Hub id, or a loaded model and its tokenizer; batch_size,
    device, normalize, max_length, truncation), without a progress bar by default.
    """

    show_progress_default = False

    def __init__(self, model: str | Path | PreTrainedModel, *args: Any, **kwargs: Any):
        super().__init__(model, *args, **kwargs)
        # TRL names a callable's metrics after its __name__ (rewards/<name>/mean)
        self.__name__ = (Path(str(model)).name if isinstance(model, (str, Path)) else type(model).__name__) or "reward"
        self.length_counts = {"completions": 0, "truncated": 0, "skipped": 0}  # over every call
        self.warned = False

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        """One reward per completion (None: skipped for its length, `truncation="skip"`); other keyword
        arguments (completion_ids, dataset columns, trainer_state, ...) are accepted and ignored."""
        rewards = self.rewards(prompts, completions, names=("prompts", "completions"))
        fitting = self.last_fitting
        self.length_counts["completions"] += fitting.sequences
        self.length_counts["truncated"] += len(fitting.truncated)
        self.length_counts["skipped"] += len(fitting.skipped) + len(fitting.too_large)
        if fitting.changed and not self.warned:
            self.warned = True
            said = "; ".join(fitting.lines("completions"))
            warnings.warn(f"{self!r}: {said} (said once; `length_counts` keeps counting)", stacklevel=2)
        return rewards

    def __repr__(self) -> str:
        return f"RewardFunction({self.source!r}, normalize={self.normalize})"
