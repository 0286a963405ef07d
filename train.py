"""Train a Bradley–Terry reward model (the same command as `reward-train`).

    python train.py                                    # tiny model on the generated task (offline)
    python train.py --model_name_or_path Qwen/Qwen2.5-0.5B --dataset_name trl-lib/ultrafeedback_binarized \
        --per_device_train_batch_size 8 --learning_rate 1e-5 --bf16 --output_dir runs/qwen-rm
    python train.py --config my_run.yaml --max_steps 50
    python train.py --output_dir runs/qwen-rm --resume_from_checkpoint latest   # the saved options are reused

The run reads top to bottom in reward/recipe.py (preflight -> rows -> tokenizer -> model -> tokens ->
fit -> export -> report); it lives in the package so that an installed `reward` has it, and
`reward.RewardTrainer` runs the same stages.
"""

import sys
from typing import Any

from reward.run.train_cli import cli


def __getattr__(name: str) -> Any:
    """`import train; train.main(cfg)` runs what the CLI runs. reward.recipe (torch, transformers' models:
    seconds) is imported on that first use, not here, so that `python train.py --help` answers at once."""
    if name == "main":
        from reward.recipe import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(cli())
