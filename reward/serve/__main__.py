"""`python -m reward.serve --model DIR` = `reward-serve --model DIR` (reward/serve/cli.py)."""

import sys

from reward.serve.cli import cli

if __name__ == "__main__":
    sys.exit(cli())
