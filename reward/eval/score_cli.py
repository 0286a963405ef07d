"""The score command (`python score.py` = `reward-score`): score a file with a trained reward model.

Preference files (chosen/rejected) print pairwise accuracy, mean reward margin, the loss and reward
stats, then calibration (ECE + reliability table), length bias and accuracy per subset
(`reward/metrics.py`). `--explain` prints every term of the loss pair by pair
(`reward/eval/explain.py`). Files of texts (`text`), prompt/response rows or conversations (`messages`)
get a `reward` each; rows of a prompt and a list of `completions` get `rewards` and a `ranking`
(and best-of-n accuracy with a `scores`, `ranking` or `best` column). Text is formatted as the
model's config.json records training did (`reward_format`). `--check_consumers` scores the rows the
way GRPO, RewardBench, a PPO loop and the pipeline do (`reward/eval/consumer_check.py`).
`--input -` reads JSON Lines (or a JSON array) from standard input. Every sequence is held to the
model's positions and `--max_length`; `--truncation` says what happens to a longer one
(reward/eval/lengths.py), and the rows it happened to are listed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reward.config import make_parser, option, parse_into
from reward.errors import UserError, run_cli
from reward.options import score_problems, type_problems

if TYPE_CHECKING:
    from reward.eval.scoring import RewardScorer

# What needs torch is imported inside the functions that score, so that `--help` (and a bad flag) answers
# before it is: the options are parsed first.


@dataclass
class ScoreConfig:
    model: str = option(None, "Saved reward model folder (or Hub id); required.")
    input: str = option(
        None,
        "Rows to score: .jsonl/.json/.csv/.parquet with chosen/rejected, text, prompt/response or messages; "
        "'-' reads JSON Lines (or a JSON array) from standard input; required.",
    )
    output: str | None = option(None, "Write every input row plus its reward(s) to this .jsonl file.")
    batch_size: int = option(16, "Sequences per forward pass.")
    padding_free: bool = option(
        True, "Pack each batch into one row, a pair's or row's prompt computed once (the padded rewards to 1e-5)."
    )
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: cuda if available).")
    max_length: int | None = option(
        None,
        "Hold every sequence to this many tokens (default: none beyond the model's positions, e.g. BERT 512, "
        "GPT-2 1024; training's --max_length is a choice of pairs to train on, not a limit of the model).",
    )
    truncation: str = option(
        "left",
        "A sequence over the limit (left/skip/error): left keeps its last tokens, where the reward is read "
        "(the start of the prompt cut; a leading BOS/[CLS] kept), skip leaves it without a reward (null, counted "
        "and listed; a pair skipped whole, as training drops it), error stops. Either way the rows are listed.",
    )
    normalize: bool = option(
        False,
        "Write (reward - mean) / std with the held-out reward statistics saved in the model's config.json "
        "(texts, responses, rankings).",
    )
    check_consumers: bool = option(
        False,
        "Score the rows the way each consumer does (pipeline, TRL GRPO, RewardBench, PPO-style, RewardFunction) "
        "and print how far each is from the training-time reward, with what to change.",
    )
    check_rows: int = option(
        200, "--check_consumers scores only the first this many rows, nine times over (0: every row)."
    )
    # --- pairs only: the loss explained, and diagnostics ---------------------------------------------
    explain: bool = option(
        False,
        "Print each pair's loss term and its gradients w.r.t. both rewards (with --output: add them to each row).",
    )
    explain_rows: int = option(20, "Pairs shown in the --explain table (totals always cover every pair).")
    center_rewards_coefficient: float | None = option(
        None, "Centring coefficient of the scored loss (default: the model's training_config.json, else none)."
    )
    label_smoothing: float | None = option(
        None, "Label smoothing of the scored loss (default: the model's training_config.json, else 0)."
    )
    calibration_bins: int = option(10, "Equal-width confidence bins over [0.5, 1] for ECE and the reliability table.")
    reliability_out: str | None = option(None, "Write the ECE and reliability table to this JSON file.")
    plot: str | None = option(
        None, 'Save reward histograms and the reliability diagram to this image (needs pip install -e ".[plot]").'
    )
    debug: bool = option(False, "Show the full traceback for input errors.")

    def __post_init__(self) -> None:
        from reward.eval.arguments import device_problem
        from reward.eval.lengths import policy_problem

        if not self.model or not self.input:
            raise UserError("--model and --input are required")
        if problems := type_problems(self) or score_problems(self):
            raise UserError("; ".join(problems))
        problems = [device_problem("--device", self.device), policy_problem("--truncation", self.truncation)]
        if problems := [p for p in problems if p]:
            raise UserError("; ".join(problems))


# `score.py --help` shows the options under these headings, each field under exactly one (tests/test_help.py)
SCORE_GROUPS = {
    "model and input": "model input device batch_size padding_free max_length truncation",
    "output": "output normalize debug",
    "consumers": "check_consumers check_rows",
    "pairs: the loss explained, calibration and plots": "explain explain_rows center_rewards_coefficient "
    "label_smoothing calibration_bins reliability_out plot",
}


def parse_score_config(argv: list[str] | None = None) -> ScoreConfig:
    usage = "%(prog)s --model DIR --input FILE [--OPTION VALUE ...]"  # not argparse's list of every flag
    parser = make_parser(ScoreConfig, "Score texts or preference pairs with a reward model.", SCORE_GROUPS, usage)
    return parse_into(parser, list(sys.argv[1:] if argv is None else argv))


PAIR_ONLY_OPTIONS = ("explain", "plot", "reliability_out")


def main(cfg: ScoreConfig) -> dict:
    """Score `cfg.input`; returns the pair metrics (pairs) or reward stats (texts)."""
    from reward.eval.inputs import PAIRS, RANKINGS, RATED, load_rows
    from reward.eval.scoring import RewardScorer
    from reward.formatting import describe_format
    from reward.run.console import quiet_libraries_unless_tty
    from reward.run.writes import write_atomically

    live = quiet_libraries_unless_tty()  # output to a file: no progress-bar frames in it
    rows, kind = load_rows(cfg.input)
    used = [f"--{name}" for name in PAIR_ONLY_OPTIONS if getattr(cfg, name)]
    if kind != PAIRS and used:
        raise UserError(f"{', '.join(used)} need(s) a file of pairs (chosen/rejected columns); {cfg.input} has {kind}")
    if cfg.normalize and (kind == PAIRS or cfg.check_consumers):
        raise UserError(
            "--normalize rescales single rewards (texts, responses, rankings); pair metrics use raw rewards"
        )
    if cfg.plot:
        from reward.eval.plotting import require_matplotlib

        require_matplotlib()  # fail before scoring, not after
    if cfg.output:
        check_output_path(cfg.output)  # before the work, not after it
    scorer = RewardScorer(
        cfg.model,
        batch_size=cfg.batch_size,
        device=cfg.device,
        normalize=cfg.normalize,
        padding_free=cfg.padding_free,
        max_length=cfg.max_length,
        truncation=cfg.truncation,
        show_progress=live,
    )
    print(f"scoring {len(rows)} {kind} from {cfg.input} with {cfg.model} on {scorer.device}")
    print(scorer.rule.describe())
    if not cfg.check_consumers:  # the check's report names it itself
        print(f"formatting: {describe_format(scorer.format, scorer.format_record)}")
    if scorer.normalize:
        print(
            f"normalized: (reward - {scorer.stats['mean']:.4f}) / {scorer.stats['std']:.4f} ({scorer.stats['source']})"
        )
    if cfg.check_consumers:
        from reward.eval.consumer_check import check_consumers, first_rows, format_report, rows_within

        rows, first_line = first_rows(rows, cfg.check_rows)
        print(first_line, flush=True)
        rows, left_out = rows_within(scorer, rows, kind)
        # the rows within the limit, tokenized once; a line as each consumer (a scoring pass) finishes
        results = check_consumers(scorer, rows, kind, within=True, say=lambda line: print(line, flush=True))
        print(format_report(scorer, results, len(rows), left_out))
        scored, summary = [r.to_dict() for r in results], {"consumers": [r.to_dict() for r in results]}
    elif kind == PAIRS:
        scored, summary = report_pairs(cfg, scorer, rows)
    elif kind == RANKINGS:
        scored, summary = scorer.score_rankings(rows)
        print(format_ranking_summary(summary))
    elif kind == RATED:
        scored, summary = report_ratings(scorer, rows)
    else:
        scored, summary = report_rows(scorer, rows, kind)
    fitting = scorer.last_fitting
    if not cfg.check_consumers and fitting.changed:  # the consumer check says what it left out itself
        print("\n".join(fitting.lines("sequences")))
        summary["lengths"] = fitting.to_dict()
    if cfg.output:
        write_atomically(cfg.output, (json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in scored))
        print(f"wrote {len(scored)} rows to {cfg.output}")
    return summary


def report_rows(scorer: RewardScorer, rows: list[dict], kind: str) -> tuple[list[dict], dict]:
    """Score texts/responses/chats; print the reward stats over the rows scored."""
    scored = scorer.score_rows(rows, kind)
    rewards = [r["reward"] for r in scored if r["reward"] is not None]
    if not rewards:
        raise UserError(f"no row left to score: {'; '.join(scorer.last_fitting.lines('sequences'))}")
    summary = {
        "rows": len(rewards),
        "reward_mean": sum(rewards) / len(rewards),
        "reward_min": min(rewards),
        "reward_max": max(rewards),
    }
    skipped = f" ({len(rows) - len(rewards)} skipped, reward null)" if len(rewards) < len(rows) else ""
    print(
        f"rows {summary['rows']}{skipped} | reward mean {summary['reward_mean']:.4f} "
        f"min {summary['reward_min']:.4f} max {summary['reward_max']:.4f}"
    )
    return scored, summary


def report_ratings(scorer: RewardScorer, rows: list[dict]) -> tuple[list[dict], dict]:
    """Rated completions: each one's reward, and how the rewards follow the ratings over the rows scored
    (reward/labels/metrics.py): Pearson, Spearman, and the accuracy on the pairs the ratings imply per prompt
    (grouped as training groups them). A model trained on ratings (config.json `reward_ratings`) also gives
    each row's `rating_estimate` (reward × σ + μ) and the RMSE on the rating scale, as its training reported."""
    from reward.labels.metrics import rating_metrics
    from reward.labels.rated import read_rating_scale
    from reward.labels.rows import describe_scores, group_by_prompt

    prompts = [row.get("prompt") or "" for row in rows]  # no prompt: the completion is the whole text
    rewards = scorer.rewards(prompts, [row["completion"] for row in rows], names=("prompt", "completion"))
    scale = read_rating_scale(scorer.model.config)  # None: a model trained on pairs has no rating scale
    estimate = (lambda r: None if r is None else r * scale.std + scale.mean) if scale else None
    scored = [
        {**row, "reward": r, **({"rating_estimate": estimate(r)} if scale else {})} for row, r in zip(rows, rewards)
    ]
    kept = [i for group in group_by_prompt(rows) for i in group if rewards[i] is not None]  # prompt by prompt
    if not kept:
        raise UserError(f"no row left to score: {'; '.join(scorer.last_fitting.lines('sequences'))}")
    sizes = [sum(rewards[i] is not None for i in group) for group in group_by_prompt(rows)]
    scores = [float(rows[i]["score"]) for i in kept]
    on_scale = (scale.mean, scale.std) if scale else ()
    summary = rating_metrics([rewards[i] for i in kept], scores, [k for k in sizes if k], *on_scale)
    if scale is None:
        del summary["rmse"]  # against a scale only a model trained on ratings has
    said = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"rated {len(kept)} completions | {describe_scores(scores)}")
    rmse = (
        f"RMSE {summary['rmse']:.4f} (rating_estimate = reward x {scale.std:.4g} + {scale.mean:.4g}) | "
        if scale
        else ""
    )
    print(
        f"reward vs rating: {rmse}Pearson {said(summary['pearson'])} | Spearman {said(summary['spearman'])} | "
        f"implied pairs {summary['implied_pairs']}, accuracy {said(summary['implied_pair_accuracy'])}"
    )
    return scored, summary


def report_pairs(cfg: ScoreConfig, scorer: RewardScorer, rows: list[dict]) -> tuple[list[dict], dict]:
    """Score pairs with the model's training loss options; print metrics, diagnostics, the explanation."""
    from reward.eval.explain import explain_pairs, format_explanation
    from reward.eval.loss_options import training_loss_options
    from reward.run.writes import write_atomically

    opts = training_loss_options(cfg.model, cfg.center_rewards_coefficient, cfg.label_smoothing)
    if opts.center_rewards_coefficient or opts.label_smoothing:
        print(
            f"loss options: center_rewards_coefficient {opts.center_rewards_coefficient or 0:g}, "
            f"label_smoothing {opts.label_smoothing:g} ({opts.source})"
        )
    if "strength" in rows[0] and opts.strength_as != "ignore":  # read as the model's training read it
        print(f"strength read as a {opts.strength_as} (--strength_weights {opts.strength_weights}; {opts.source})")
    report = scorer.score_pairs(rows, opts, cfg.calibration_bins)
    m = report.metrics
    skipped = f" ({m['pairs_skipped']} skipped, rewards null)" if m.get("pairs_skipped") else ""
    print(
        f"pairs {m['pairs']}{skipped} | accuracy {m['accuracy']:.4f} | margin {m['margin']:.4f} | "
        f"loss {m['loss']:.4f} | reward mean {m['reward_mean']:.4f} min {m['reward_min']:.4f} max {m['reward_max']:.4f}"
    )
    print(report.diagnostics.format())
    if "strength" in rows[0]:  # how much better chosen is: accuracy per level (reward/labels/metrics.py)
        from reward.labels.metrics import accuracy_by_strength

        delta = (report.r_chosen - report.r_rejected).tolist()  # (B,) the scored pairs
        m["accuracy_by_strength"] = accuracy_by_strength(delta, [float(rows[i]["strength"]) for i in report.scored])
        levels = m["accuracy_by_strength"].items()
        print("accuracy by strength: " + " | ".join(f"{k}: {v['accuracy']:.4f} ({v['pairs']})" for k, v in levels))
    scored = report.rows
    if cfg.explain:
        explanation = explain_pairs(
            report.r_chosen, report.r_rejected, report.margin, opts.center_rewards_coefficient, opts.label_smoothing
        )
        print(format_explanation(explanation, cfg.explain_rows))
        # r_chosen / r_rejected come back unchanged (float32 values widened to float64 exactly); a skipped
        # pair has no rewards, so no terms
        terms = dict(zip(report.scored, explanation.rows()))
        scored = [{**row, **terms.get(i, {})} for i, row in enumerate(scored)]
    if cfg.reliability_out:
        write_atomically(cfg.reliability_out, [json.dumps(report.diagnostics.calibration.to_dict(), indent=2) + "\n"])
        print(f"wrote the reliability table to {cfg.reliability_out}")
    if cfg.plot:
        from reward.eval.plotting import plot_scores

        plot_scores(report.r_chosen, report.r_rejected, report.diagnostics.calibration, cfg.plot)
        print(f"wrote reward histograms and the reliability diagram to {cfg.plot}")
    return scored, m


def format_ranking_summary(summary: dict) -> str:
    line = f"prompts {summary['prompts']} | completions {summary['completions']}"
    if "best_of_n_accuracy" in summary:
        line += (
            f" | best-of-n accuracy {summary['best_of_n_accuracy']:.4f} "
            f"(picking at random: {summary['best_of_n_chance']:.4f})"
        )
    if "comparison_accuracy" in summary and summary["comparison_accuracy"] is None:  # every score ties
        line += f"\nno comparable pairs: all {summary['ties']} comparisons tie in the scores (no accuracy)"
    elif "comparison_accuracy" in summary:
        tau = summary["kendall_tau"]
        line += (
            f"\ncomparisons {summary['comparisons']} | accuracy {summary['comparison_accuracy']:.4f} | "
            f"Kendall tau {'n/a' if tau is None else f'{tau:.4f}'} (mean per prompt) | "
            f"ties {summary['ties']} (not scored)"
        )
    return line


def check_output_path(path: str) -> None:
    """An --output that cannot be written is an error before scoring, not a traceback after it."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"--output {path}: is a directory")
    parent = next((p for p in out.parents if p.exists()), Path("."))
    if not parent.is_dir():
        raise UserError(f"--output {path}: {parent} is a file, not a folder")


def run(cfg: ScoreConfig) -> int:
    """Exit codes: 0 done, 2 bad input or options."""
    main(cfg)
    return 0


def cli(argv: list[str] | None = None) -> int:
    return run_cli(sys.argv[1:] if argv is None else argv, parse=parse_score_config, run=run)
