"""One step of TRL's GRPOTrainer scored by a running reward server: the README's third command.

    python train.py                                  # trains runs/tiny-synthetic
    reward-serve --model runs/tiny-synthetic         # serves it on http://127.0.0.1:8000
    python examples/grpo_step.py                     # one GRPO step, its rewards from the server

An example of a consumer, outside the package: it runs TRL, which training never imports. The policy
is a random 2-layer Llama with the tiny tokenizer (reward/presets/tiny.py `save_tiny_policy`), built offline in a
second: its completions are noise, and the point is the path. TRL generates `--num_generations`
completions for each of the generated task's prompts ("Could you name a fruit for me?",
reward/presets/synthetic.py), calls `reward.RemoteRewardFunction`, which sends each prompt's
completions to the server as one group, and uses the rewards for one optimizer step. The command prints
every completion with its reward and the step's logged reward mean. Needs trl (`pip install -e
".[bench]"`); the server needs the `serve` extra, this command does not.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reward.config import make_parser, option, parse_into
from reward.errors import UserError, run_cli


@dataclass
class GrpoStepConfig:
    reward_url: str = option("http://127.0.0.1:8000", "The reward server (several: comma-separated URLs).")
    api_key: str | None = option(None, "The server's key (default: $REWARD_SERVE_API_KEY).", repr=False)
    num_prompts: int = option(2, "Prompts in the step (the generated task's).")
    num_generations: int = option(4, "Completions per prompt: GRPO's group size G.")
    max_completion_length: int = option(16, "Tokens per completion, at most.")
    output_dir: str | None = option(None, "Where TRL writes (default: a temporary folder).")
    seed: int = option(0, "Seed of the policy's init, the prompts and the sampling.")


def grpo_step(cfg: GrpoStepConfig) -> dict:
    """Run the step; returns the logged metrics plus the prompts, completions and rewards it scored."""
    try:
        import trl
    except ImportError:
        raise UserError('a GRPO step needs trl: pip install -e ".[bench]"') from None
    from datasets import Dataset

    from reward.presets.synthetic import generate_pairs
    from reward.presets.tiny import save_tiny_policy
    from reward.serve.client import RemoteRewardFunction

    remote = RemoteRewardFunction([url.strip() for url in cfg.reward_url.split(",")], api_key=cfg.api_key)
    seen: list[tuple] = []

    def remote_reward(prompts: list, completions: list, **kwargs) -> list[float | None]:
        rewards = remote(prompts, completions, **kwargs)
        seen.extend(zip(prompts, completions, rewards))
        return rewards

    prompts = list(dict.fromkeys(row["prompt"] for row in generate_pairs(200, seed=cfg.seed)))[: cfg.num_prompts]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(cfg.output_dir or scratch)
        args = trl.GRPOConfig(
            output_dir=str(out / "grpo"),
            max_steps=1,
            per_device_train_batch_size=cfg.num_prompts * cfg.num_generations,
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length,
            bf16=False,
            use_cpu=True,
            report_to="none",
            logging_steps=1,
            save_strategy="no",
            seed=cfg.seed,
        )
        policy = save_tiny_policy(out / "policy", cfg.seed)
        trainer = trl.GRPOTrainer(
            model=str(policy),
            reward_funcs=remote_reward,
            args=args,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
        )
        trainer.train()
    logged = next(record for record in trainer.state.log_history if "reward" in record)
    return {**logged, "scored": seen}


def main(cfg: GrpoStepConfig) -> int:
    result = grpo_step(cfg)
    for prompt, completion, reward in result["scored"]:
        shown = "  (no reward)" if reward is None else f"{reward:+.4f}"
        print(f"{shown}  {prompt!r} -> {completion!r}")
    print(
        f"GRPO step done: {len(result['scored'])} completions scored by {cfg.reward_url}; "
        f"logged reward mean {result['reward']:.4f}, std {result.get('reward_std', float('nan')):.4f}"
    )
    return 0


def parse_grpo_step_config(argv: list[str]) -> GrpoStepConfig:
    usage = "python examples/grpo_step.py [--reward_url http://127.0.0.1:8000] [--OPTION VALUE ...]"
    return parse_into(make_parser(GrpoStepConfig, "One GRPO step against a reward server.", None, usage), argv)


def cli(argv: list[str] | None = None) -> int:
    return run_cli(list(sys.argv[1:] if argv is None else argv), parse=parse_grpo_step_config, run=main)


if __name__ == "__main__":
    sys.exit(cli())
