"""Score a file with a trained reward model.

    python score.py --model runs/tiny-synthetic --input runs/tiny-synthetic/heldout_pairs.jsonl
    python score.py --model runs/tiny-synthetic --input texts.jsonl --output scored.jsonl

Preference files (chosen/rejected) print pairwise accuracy, mean reward margin and reward stats;
files of texts (`text`), prompt/response rows or conversations (`messages`) get a `reward` each.
Text is formatted as in training (EOS appended; chat template for message lists).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from reward.config import ScoreConfig, parse_score_config
from reward.errors import UserError
from reward.scoring import PAIRS, RewardScorer, load_rows


def main(cfg: ScoreConfig) -> dict:
    """Score `cfg.input`; returns the pair metrics (pairs) or reward stats (texts)."""
    rows, kind = load_rows(cfg.input)
    scorer = RewardScorer(cfg.model, batch_size=cfg.batch_size, device=cfg.device)
    print(f"scoring {len(rows)} {kind} from {cfg.input} with {cfg.model} on {scorer.device}")
    if kind == PAIRS:
        report = scorer.score_pairs(rows)
        scored, summary = report.rows, report.metrics
        m = summary
        print(
            f"pairs {m['pairs']} | accuracy {m['accuracy']:.4f} | margin {m['margin']:.4f} | loss {m['loss']:.4f} | "
            f"reward mean {m['reward_mean']:.4f} min {m['reward_min']:.4f} max {m['reward_max']:.4f}"
        )
    else:
        scored = scorer.score_rows(rows, kind)
        rewards = [r["reward"] for r in scored]
        summary = {
            "rows": len(rewards),
            "reward_mean": sum(rewards) / len(rewards),
            "reward_min": min(rewards),
            "reward_max": max(rewards),
        }
        print(
            f"rows {summary['rows']} | reward mean {summary['reward_mean']:.4f} "
            f"min {summary['reward_min']:.4f} max {summary['reward_max']:.4f}"
        )
    if cfg.output:
        out = Path(cfg.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w") as f:
            for row in scored:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        tmp.replace(out)  # never leave a half-written output file
        print(f"wrote {len(scored)} rows to {out}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        main(parse_score_config(argv))
    except UserError as exc:
        if "--debug" in argv:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
