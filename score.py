"""Score a file with a trained reward model (the same command as `reward-score`).

    python score.py --model runs/tiny-synthetic --input runs/tiny-synthetic/heldout_pairs.jsonl
    python score.py --model runs/tiny-synthetic --input texts.jsonl --output scored.jsonl
    python score.py --model runs/tiny-synthetic --input pairs.jsonl --explain --explain_rows 5
    python score.py --model runs/tiny-synthetic --input pairs.jsonl --plot scores.png --reliability_out rel.json

    python score.py --model runs/tiny-synthetic --input runs/tiny-synthetic/heldout_pairs.jsonl --check_consumers
    python score.py --model runs/tiny-synthetic --input completions.jsonl --output ranked.jsonl

The command lives in reward/eval/score_cli.py, so that an installed package has it too.
"""

import sys

from reward.eval.score_cli import cli, main  # noqa: F401 - `import score; score.main(cfg)` works as the CLI does

if __name__ == "__main__":
    sys.exit(cli())
