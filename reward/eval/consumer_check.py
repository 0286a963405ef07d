"""Run every consumer of `reward/eval/consumers.py` on the same rows and report how far each is from training.

    python score.py --model DIR --input FILE --check_consumers [--check_rows N]

scores the first `--check_rows` rows (200 by default, 0 for all: every consumer is a scoring pass of its own,
nine in all, so a large file would take nine times its scoring), printing a line as each consumer finishes,
then prints, per consumer, max |reward - training reward| and pairwise accuracy, then one line per
consumer that differs by more than TOLERANCE saying what to change (a training option, or how to
call the consumer). The fixes are chosen from the model's recorded `reward_format`.

Rows longer than the scorer's length limit (reward/eval/lengths.py) are left out of the check, and
said so: each consumer would cut or refuse them its own way, which is not the formatting the check
compares (`truncation="error"` stops instead). A consumer whose own format still runs past the
model's positions is skipped with that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from transformers import PreTrainedTokenizerBase

from reward.errors import UserError
from reward.eval.consumers import (
    REWARDBENCH,
    TOLERANCE,
    ConsumerResult,
    Sequences,
    Skip,
    installed_version,
    model_card_pipeline,
    our_reward_function,
    ppo_get_reward,
    rewardbench_default,
    rewardbench_hf_pipeline,
    training_packed,
    training_padded,
    trl_grpo_path,
)
from reward.eval.inputs import PAIRS, RATED, RESPONSES
from reward.eval.lengths import fit_groups
from reward.eval.scoring import RewardScorer
from reward.formatting import SequenceFormat, describe_format
from reward.model import is_encoder

CONSUMERS = [
    ("training forward, padded (the reference)", training_padded),
    ("training forward, packed + shared prompt", training_packed),
    ('pipeline("text-classification"), as the model card says', model_card_pipeline),
    ("reward.RewardFunction (GRPO reward_funcs callable)", our_reward_function),
    ("TRL GRPO, reward_funcs=DIR (trl {trl})", trl_grpo_path),
    ("RewardBench, default pipeline", rewardbench_default),
    ("RewardBench, HF pipeline path", rewardbench_hf_pipeline),
    ("PPO-style get_reward, rollout ends in EOS", lambda s, q: ppo_get_reward(s, q, with_eos=True)),
    ("PPO-style get_reward, rollout cut before EOS", lambda s, q: ppo_get_reward(s, q, with_eos=False)),
]


def sequences_of(rows: list[dict], kind: str) -> Sequences:
    if kind == PAIRS:
        prompts = [row.get("prompt") for row in rows]
        return Sequences(prompts * 2, [r["chosen"] for r in rows] + [r["rejected"] for r in rows], pairs=len(rows))
    if kind == RESPONSES:
        return Sequences([r["prompt"] for r in rows], [r["response"] for r in rows])
    if kind == RATED:  # rated completions (a regression model's held-out file): each completion as a response
        return Sequences([r.get("prompt") or "" for r in rows], [r["completion"] for r in rows])
    raise UserError(
        f"--check_consumers needs pairs (chosen/rejected), prompt/response or rated (completion/score) rows, not {kind}"
    )


def first_rows(rows: list[dict], cap: int) -> tuple[list[dict], str]:
    """The rows the check scores (the first `cap`, 0: all) and the line that says so before any is scored.

    >>> first_rows([{}] * 5000, 200)[1]
    'consumer check: first 200 of 5,000 rows (--check_rows 0 for all)'
    >>> first_rows([{}] * 150, 200)[1]
    'consumer check: all 150 rows'
    """
    if 0 < cap < len(rows):
        return rows[:cap], f"consumer check: first {cap:,} of {len(rows):,} rows (--check_rows 0 for all)"
    return rows, f"consumer check: all {len(rows):,} rows"


def rows_within(scorer: RewardScorer, rows: list[dict], kind: str) -> tuple[list[dict], list[str]]:
    """The rows whose sequences all fit the scorer's length limit, and a line per kind of row left out."""
    sequences_of(rows, kind)  # the kinds the check takes, before any tokenizing
    sides = {PAIRS: ("chosen", "rejected"), RATED: ("completion",)}.get(kind, ("response",))
    groups = [[scorer.encode_within(row.get("prompt"), row[side]) for side in sides] for row in rows]
    rule = scorer.rule if scorer.rule.policy == "error" else replace(scorer.rule, policy="skip")
    fitted, fitting = fit_groups(rule, groups, whole=True)
    kept = [row for row, group in zip(rows, fitted) if None not in group]
    said = [f"left out of the consumer check: {line}" for line in fitting.lines("sequences")]
    if not kept:
        raise UserError(f"--check_consumers: no row fits the model: {'; '.join(fitting.lines('sequences'))}")
    return kept, said


def check_consumers(
    scorer: RewardScorer,
    rows: list[dict],
    kind: str,
    within: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[ConsumerResult]:
    """Every consumer's rewards for `rows` (those within the length limit: `rows_within`, unless `within` says
    the caller kept only those already), compared with the training-time reward (the first entry). `say` gets
    a line as each consumer finishes (each is a whole scoring pass: the command prints them)."""
    if not within:
        rows, _ = rows_within(scorer, rows, kind)
    seqs = sequences_of(rows, kind)
    results = []
    reference = None
    for number, (name, run) in enumerate(CONSUMERS, 1):
        name = name.format(trl=installed_version("trl") or "not installed")
        started = time.perf_counter()
        try:
            rewards = run(scorer, seqs)
        except Skip as why:
            results.append(ConsumerResult(name, skipped=str(why)))
            if say:
                say(f"consumer {number}/{len(CONSUMERS)} {name}: skipped")
            continue
        if say:
            seconds = time.perf_counter() - started
            say(f"consumer {number}/{len(CONSUMERS)} {name}: {len(rows):,} rows, {seconds:.1f} s")
        if reference is None:
            reference = rewards
        result = ConsumerResult(
            name,
            rewards,
            max_diff=max(abs(a - b) for a, b in zip(rewards, reference)),
            accuracy=pair_accuracy(rewards, seqs.pairs),
        )
        if result.max_diff > TOLERANCE:
            result.fix = fix_for(name, scorer, seqs)
        results.append(result)
    return results


def pair_accuracy(rewards: list[float], pairs: int | None) -> float | None:
    """Share of pairs with r_chosen > r_rejected (ties wrong), or None for single responses.

    >>> pair_accuracy([2.0, 1.0, 0.5, 1.0], pairs=2)
    0.5
    """
    if pairs is None:
        return None
    return sum(c > r for c, r in zip(rewards[:pairs], rewards[pairs:])) / pairs


def fix_for(name: str, scorer: RewardScorer, seqs: Sequences) -> str:
    """What makes this consumer see the trained reward, given how the model was trained."""
    fmt, tok = scorer.format, scorer.tokenizer
    added = (scorer.format_record or {}).get("special_tokens") or {}
    adds_tokens = bool(added.get("before") or added.get("after"))
    templated = seqs.conversational or fmt.text_as_chat
    if name.startswith("TRL GRPO"):
        return grpo_fix(scorer, seqs, adds_tokens)
    if name.startswith("RewardBench"):
        if not templated:
            return (
                "RewardBench wraps every pair in the chat template and this model was trained on plain text: "
                "retrain with --text_as_chat true (or on conversational rows)"
            )
        if name.endswith("HF pipeline path") and tok.bos_token:
            return (
                f"this path tokenizes the rendered template with special tokens again, so a template that writes "
                f"{tok.bos_token!r} gets it twice: use RewardBench's default pipeline, which masks the extra one"
            )
        return (
            "RewardBench tokenizes the rendered template with special tokens added and truncates at 2048 from the "
            "left: compare its token ids with training's for one row"
        )
    if name.startswith("PPO"):
        return ppo_fix(name, fmt, tok, templated)
    if name.startswith("pipeline") and getattr(scorer.model.config, "problem_type", None) != "regression":
        return (
            "the pipeline applies a sigmoid to a one-label model unless config.problem_type is 'regression': "
            "pass function_to_apply='none'"
        )
    return "this should match training exactly: please report it as a bug, with this table"


def ppo_fix(name: str, fmt: SequenceFormat, tok: PreTrainedTokenizerBase, templated: bool) -> str:
    finished = "ends in EOS" in name
    if tok.pad_token_id == tok.eos_token_id and templated:
        return (
            "PPO masks every token whose id is the pad id, so with pad == eos the template's EOS tokens inside "
            "the prompt are masked: give the tokenizer a dedicated pad token before training"
        )
    if templated and finished:
        return (
            "a rollout stops at its EOS, but the chat template writes tokens after it (e.g. a newline) and "
            "training read the reward there: score finished rollouts as the template renders them "
            "(reward.RewardFunction on the decoded text) rather than as raw ids"
        )
    if templated:
        return (
            "the chat template ends every training sequence with its own end token, which an unfinished "
            "rollout lacks: penalise unfinished rollouts (trl <= 1.12: PPOConfig(missing_eos_penalty=...))"
        )
    if not finished and fmt.append_eos:
        return (
            "an unfinished rollout is read at its last token, which training never scored: retrain with "
            "--append_eos false, or penalise unfinished rollouts (trl <= 1.12: PPOConfig(missing_eos_penalty=...))"
        )
    if finished and not fmt.append_eos:
        return (
            "a finished rollout keeps its EOS, which training never saw: strip the EOS before scoring, "
            "or retrain with --append_eos true (the default)"
        )
    return "PPO reads the policy's token ids: the policy must share this tokenizer and tokenize prompts as training"


def grpo_fix(scorer: RewardScorer, seqs: Sequences, adds_tokens: bool) -> str:
    fmt = scorer.format
    if seqs.conversational:
        return (
            "GRPO renders the same chat template as text, so the template does not survive a text round trip "
            "through this tokenizer: pass reward_funcs=reward.RewardFunction(DIR)"
        )
    if is_encoder(scorer.model):
        return (
            "GRPO drops the encoder's own special tokens ([CLS] ... [SEP]) that its head reads: "
            "pass reward_funcs=reward.RewardFunction(DIR)"
        )
    options = (
        ("--text_as_chat false", fmt.text_as_chat),
        ("--append_eos false", fmt.append_eos),
        ("--add_special_tokens false", fmt.add_special_tokens and adds_tokens),
    )
    flags = " ".join(flag for flag, on in options if on) or "the same options (the difference is not the format)"
    return (
        "GRPO scores prompt + completion as plain text with no special tokens and no EOS: pass "
        f"reward_funcs=reward.RewardFunction(DIR), or retrain with {flags}"
    )


def format_report(scorer: RewardScorer, results: list[ConsumerResult], rows: int, left_out: list[str] = ()) -> str:
    """The printed table (and the fixes below it); `left_out`: `rows_within`'s lines."""
    width = max(len(r.name) for r in results)
    lines = [
        f"consumer check: {rows} rows, {scorer.source}",
        *left_out,
        f"trained format: {describe_format(scorer.format, scorer.format_record)}",
        f"RewardBench reproduced from {REWARDBENCH}; a consumer matches training when max |Δr| <= {TOLERANCE:g}",
        f"{'consumer':<{width}}  {'max |Δr|':>9}  {'accuracy':>8}  verdict",
    ]
    fixes = []
    for r in results:
        if r.skipped:
            lines.append(f"{r.name:<{width}}  {'-':>9}  {'-':>8}  skipped: {r.skipped}")
            continue
        acc = f"{r.accuracy:.3f}" if r.accuracy is not None else "-"
        verdict = "same as training" if r.fix is None else f"DIFFERS (fix {len(fixes) + 1} below)"
        lines.append(f"{r.name:<{width}}  {r.max_diff:>9.2e}  {acc:>8}  {verdict}")
        if r.fix:
            fixes.append(f"  fix {len(fixes) + 1}, {r.name}: {r.fix}")
    return "\n".join(
        lines + (["what to change:", *fixes] if fixes else ["every consumer that ran sees the trained reward"])
    )
