"""Score texts, preference pairs and ranked completions with a saved reward model, formatted
exactly as in training.

Input rows (JSONL/JSON/CSV/Parquet, detected from the columns):

    pairs      chosen, rejected (+ prompt, margin)                 -> adds r_chosen, r_rejected
    rankings   prompt, completions (+ scores | ranking | best)     -> adds rewards, ranking
    texts      text                                                -> adds reward
    responses  prompt, response (strings or messages)              -> adds reward
    chats      messages                                            -> adds reward

Text goes through `reward.formatting` with the model's recorded `SequenceFormat` (config.json
`reward_format`: EOS appended or not, special tokens or not, chat template), so a pair scored here
gets the rewards the training loop computed for it. The pair loss uses the model's training loss
options (centring, label smoothing; `training_loss_options`), so it is the loss the training
evaluation reports; pairs also get the diagnostics of `reward.metrics`. `normalize=True` maps
each reward to (r - mean) / std with the statistics train.py saved (config.json `reward_stats`).

Every sequence is held to one length rule (reward/eval/lengths.py: the model's positions and
`max_length`; past them cut on the left, skipped as None, or refused), and every argument is
checked before any work (reward/eval/arguments.py). Rows are read by reward/eval/inputs.py.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from reward.data import margin_value, ranking_problem, subset_column
from reward.errors import UserError
from reward.eval.arguments import (
    check_groups,
    check_rows,
    check_scorer_arguments,
    check_sequences,
    check_token_ids,
    missing_fields,
    pair_problem,
)
from reward.eval.inputs import CHATS, PAIRS, RANKINGS, RESPONSES, TEXTS, detect_kind, load_rows, scoring_row_problem
from reward.eval.lengths import Fitting, LengthRule, fit_groups
from reward.eval.loss_options import LossOptions
from reward.export import STATS_KEY
from reward.fast.packed_scoring import group_rewards
from reward.formatting import chat_template_hash, encode_sequence, read_format
from reward.labels.strength import strength_terms
from reward.loss import bradley_terry_loss
from reward.metrics import DEFAULT_BINS, Diagnostics, diagnose, loss_metrics
from reward.model import first_line, pick_device
from reward.ranked.rows import ranked_scores, ranking_summary
from reward.tokenizer import LOAD_ERRORS, check_model_source, ensure_pad_token, folder_problem, text_chars

# what this module offers; the rows' kinds and load_rows live in reward/eval/inputs.py, imported from here as before
__all__ = ["CHATS", "PAIRS", "RANKINGS", "RESPONSES", "TEXTS", "PairReport", "RewardScorer", "best_of_n_metrics"]
__all__ += ["best_indices", "detect_kind", "load_reward_model", "load_rows", "reward_stats", "scoring_row_problem"]


@dataclass
class PairReport:
    rows: list[dict]  # input fields + r_chosen, r_rejected (None for a pair over the length limit, 'skip')
    metrics: dict[str, float | None]  # accuracy, margin, loss, reward stats, diagnostics, over the scored pairs
    r_chosen: torch.Tensor  # (B,) the B scored pairs
    r_rejected: torch.Tensor  # (B,)
    margin: torch.Tensor | None  # (B,); None when no row has a margin
    diagnostics: Diagnostics
    scored: list[int]  # (B,) the rows the tensors are of, in order (every row unless some were skipped)
    fitting: Fitting  # what the length rule did


class RewardScorer:
    """A reward model plus its tokenizer and recorded format, scoring in length-sorted batches.

    `model` is a saved folder (or Hub id), or a loaded model together with its `tokenizer`. Sequences
    longer than the model's positions (or `max_length`) are handled by `truncation`: 'left' (cut to their
    last tokens), 'skip' (reward None) or 'error' (reward/eval/lengths.py); `last_fitting` says what the
    last call did.
    """

    show_progress_default = True  # a progress bar per scoring call (RewardFunction: off, it runs every RL step)

    def __init__(
        self,
        model: str | Path | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | None = None,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        show_progress: bool | None = None,
        normalize: bool = False,
        padding_free: bool = True,
        max_length: int | None = None,
        truncation: str = "left",
    ):
        flags = {"show_progress": show_progress, "normalize": normalize, "padding_free": padding_free}
        check_scorer_arguments(model, tokenizer, batch_size, device, flags, max_length, truncation)
        if isinstance(model, (str, Path)):
            self.source = str(model)
            self.tokenizer, self.model = load_reward_model(self.source)
        else:
            self.source = model.config.name_or_path or type(model).__name__
            self.model, self.tokenizer = model, tokenizer
        if self.model.config.num_labels != 1:
            raise UserError(f"{self.source}: the model has {self.model.config.num_labels} labels, a reward model has 1")
        ensure_pad_token(self.tokenizer)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id  # the head's reward token needs it
        self.model.config.get_text_config().pad_token_id = self.tokenizer.pad_token_id
        self.format, self.format_record = read_format(self.model.config)
        trained_template = (self.format_record or {}).get("chat_template_sha256")
        if trained_template and trained_template != chat_template_hash(self.tokenizer):
            warnings.warn(f"{self.source}: the tokenizer's chat template is not the one training used", stacklevel=2)
        self.stats = reward_stats(self.model.config)
        if normalize and self.stats is None:
            raise UserError(
                f"{self.source}: normalizing needs the reward statistics train.py saves (config.json '{STATS_KEY}'); "
                "this model has none (checkpoint-STEP folders have none: use the run's output folder)"
            )
        self.normalize = normalize
        self.device = torch.device(device) if device else pick_device()
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.padding_free = padding_free  # packed, a group's prompt once (reward/fast/packed_scoring.py)
        self.show_progress = self.show_progress_default if show_progress is None else show_progress
        self.rule = LengthRule.of(self.model, self.tokenizer, max_length, truncation)
        self.last_fitting: Fitting | None = None

    def encode(self, prompt: str | list | None, response: str | list) -> list[int]:
        """Token ids of prompt + response, formatted as training formatted them."""
        return encode_sequence(prompt, response, self.tokenizer, self.format)

    def encode_within(self, prompt: str | list | None, response: str | list) -> list[int] | None:
        """`encode`, or None for a text too large to tokenize: more characters than the length limit can
        hold (reward/eval/lengths.py), so the tokenizer never sees it."""
        if text_chars(prompt, response) > self.rule.chars:
            return None
        return self.encode(prompt, response)

    def rewards(
        self, prompts: list, responses: list, names: tuple[str, str] = ("prompts", "responses")
    ) -> list[float | None]:
        """One reward per (prompt, response), normalized when the scorer was built with normalize=True; None
        for a sequence the length rule skipped. Responses to the same prompt (GRPO's generations, a ranked
        row) are scored as one group. `names`: the arguments, as messages name them."""
        check_sequences(prompts, responses, names)
        groups: dict[str, list[int]] = {}  # prompt -> positions of its responses
        for i, prompt in enumerate(prompts):
            groups.setdefault(json.dumps(prompt, sort_keys=True, default=str), []).append(i)
        where = list(groups.values())
        encoded = [[self.encode_within(prompts[i], responses[i]) for i in group] for group in where]
        rewards: list[float | None] = [None] * len(prompts)
        for group, values in zip(where, self.score_groups(encoded, name=lambda g, k: f"{names[1]}[{where[g][k]}]")):
            for i, value in zip(group, values):
                rewards[i] = value
        return self.normalized(rewards)

    def normalized(self, rewards: list[float | None]) -> list[float | None]:
        if not self.normalize:
            return rewards
        mean, std = self.stats["mean"], self.stats["std"]
        return [None if r is None else (r - mean) / std for r in rewards]

    def score_ids(self, sequences: list[list[int]]) -> list[float | None]:
        """Rewards for token-id lists, in input order (None: over the length limit, truncation 'skip')."""
        check_token_ids(sequences)
        return [r for (r,) in self.score_groups([[seq] for seq in sequences], name=lambda g, _: f"sequences[{g}]")]

    def score_groups(
        self, groups: list[list[list[int] | None]], whole: bool = False, name: Callable[[int, int], str] | None = None
    ) -> list[list[float | None]]:
        """Rewards for groups of token-id lists that may share a prompt (a pair's sides, a prompt's
        completions), in input order, each sequence held to the length rule first (None in, or a sequence
        it skips: None out; `whole`: a group with one is skipped whole; `name` names a sequence in its
        messages). `last_fitting` records what it did."""
        check_groups(groups)
        fitted, self.last_fitting = fit_groups(self.rule, groups, whole, name)
        kept = self.forward_groups([[ids for ids in group if ids is not None] for group in fitted])
        out = []
        for group, values in zip(fitted, kept):
            rest = iter(values)
            out.append([None if ids is None else next(rest) for ids in group])
        return out

    @torch.no_grad()
    def forward_groups(self, groups: list[list[list[int]]]) -> list[list[float]]:
        """The model's rewards for groups of sequences within the limit. Groups go in length-sorted batches of
        about `batch_size` sequences; packed (the default), each group is one segment with its common prefix
        computed once and a batch is one padding-free row; `padding_free=False` pads each batch (the reference)."""
        size = self.batch_size  # a group larger than a batch is scored in pieces of this many sequences
        pieces = [group[k : k + size] for group in groups for k in range(0, len(group), size)]
        order = sorted(range(len(pieces)), key=lambda i: sum(map(len, pieces[i])))
        scored: list[list[float]] = [[] for _ in pieces]
        bar = tqdm(total=sum(map(len, groups)), desc="scoring", unit="seq", disable=not self.show_progress)
        start = 0
        while start < len(order):
            end, count = start + 1, len(pieces[order[start]])
            while end < len(order) and count + len(pieces[order[end]]) <= size:
                count, end = count + len(pieces[order[end]]), end + 1
            batch = [pieces[i] for i in order[start:end]]
            flat = group_rewards(self.model, batch, self.tokenizer.pad_token_id, self.padding_free).tolist()  # (S,)
            for i in order[start:end]:
                scored[i], flat = flat[: len(pieces[i])], flat[len(pieces[i]) :]
            bar.update(count)
            start = end
        rewards, at = [], 0
        for group in groups:
            n = -(-len(group) // size)  # its pieces, in order
            rewards.append([r for piece in scored[at : at + n] for r in piece])
            at += n
        bar.close()
        return rewards

    def score_pairs(
        self, rows: list[dict], loss_options: LossOptions | None = None, num_bins: int = DEFAULT_BINS
    ) -> PairReport:
        """Rewards of both sides of every pair, the loss (with the training loss options) and diagnostics, over
        the pairs scored (a pair with a side the length rule skips is skipped whole, as training drops it)."""
        check_rows("rows", rows, pair_problem)
        if not rows:
            raise UserError("rows: no pairs to score")
        if loss_options is not None and not isinstance(loss_options, LossOptions):
            raise UserError(f"loss_options must be a LossOptions or None, got {type(loss_options).__name__}")
        if type(num_bins) is not int or num_bins < 1:
            raise UserError(f"num_bins must be an integer >= 1, got {num_bins!r}")
        opts = loss_options or LossOptions()
        sides = [[self.encode_within(row.get("prompt"), row[side]) for side in ("chosen", "rejected")] for row in rows]
        rewards = self.score_groups(sides, whole=True)  # [[r_c, r_r]] per row, None when skipped
        fitting, scored = self.last_fitting, [i for i, (c, _) in enumerate(rewards) if c is not None]
        if not scored:
            raise UserError(f"no pair left to score: {'; '.join(fitting.lines())}")
        kept = [rows[i] for i in scored]
        r_c, r_r = torch.tensor([rewards[i] for i in scored]).T  # (B,), (B,)
        margin = torch.tensor([margin_value(row.get("margin")) or 0.0 for row in kept])  # (B,) 0 where none
        margin, weight = strength_terms(kept, opts.strength_as, opts.strength_weights, margin)  # as training read it
        out = bradley_terry_loss(r_c, r_r, margin, opts.center_rewards_coefficient, opts.label_smoothing, None, weight)
        column = subset_column(rows[0].keys())
        lengths = [[self.rule.seen_length(sides[i][side]) for i in scored] for side in (0, 1)]
        diagnostics = diagnose(
            r_c,
            r_r,
            torch.tensor(lengths[0]),  # (B,) tokens, as the model saw them
            torch.tensor(lengths[1]),  # (B,)
            [row.get(column) for row in kept] if column else None,
            num_bins,
        )
        summary = loss_metrics(out)  # as training's evaluation reduces them (reward/metrics.py)
        names = ("accuracy", "margin", "loss", "reward_mean", "reward_min", "reward_max")
        metrics = {"pairs": len(scored), **{name: summary[name] for name in names}, **diagnostics.metrics()}
        if len(scored) < len(rows):
            metrics["pairs_skipped"] = len(rows) - len(scored)
        out_rows = [{**row, "r_chosen": c, "r_rejected": r} for row, (c, r) in zip(rows, rewards)]
        has_margin = any(row.get("margin") is not None for row in rows) or opts.strength_as == "margin"
        return PairReport(out_rows, metrics, r_c, r_r, margin if has_margin else None, diagnostics, scored, fitting)

    def score_rows(self, rows: list[dict], kind: str) -> list[dict]:
        """Rows of kind texts/responses/chats -> the same rows with a `reward` field (None: skipped)."""
        fields = {TEXTS: ("text",), RESPONSES: ("prompt", "response"), CHATS: ("messages",)}
        if kind not in fields:
            raise UserError(f"kind must be {TEXTS!r}, {RESPONSES!r} or {CHATS!r}, got {kind!r}")
        check_rows("rows", rows, lambda row: missing_fields(row, *fields[kind]) or scoring_row_problem(row, kind))
        prompt_key, text_key = ("prompt", "response") if kind == RESPONSES else (None, fields[kind][0])
        encoded = [[self.encode_within(row[prompt_key] if prompt_key else None, row[text_key])] for row in rows]
        rewards = self.normalized([r for (r,) in self.score_groups(encoded)])
        return [{**row, "reward": r} for row, r in zip(rows, rewards)]

    def score_rankings(self, rows: list[dict]) -> tuple[list[dict], dict]:
        """Rows of a prompt and K completions -> each row plus `rewards` (K floats; None for a completion the
        length rule skipped) and `ranking` (indices of the scored ones, highest reward first), and best-of-n
        metrics over the rows wholly scored when rows say which completion is best."""
        check_rows("rows", rows, lambda row: missing_fields(row, "completions") or ranking_problem(row))
        encoded = [[self.encode_within(row.get("prompt"), c) for c in row["completions"]] for row in rows]
        per_row = [self.normalized(r) for r in self.score_groups(encoded)]  # a row's completions: one group
        scored = [{**row, "rewards": r, "ranking": ranking_of(r)} for row, r in zip(rows, per_row)]
        whole = [(row, r) for row, r in zip(rows, per_row) if None not in r]
        summary = best_of_n_metrics([row for row, _ in whole], [r for _, r in whole])
        if len(whole) < len(rows):
            summary["prompts_skipped"] = len(rows) - len(whole)
        ordered = [(ranked_scores(row), r) for row, r in whole if row.get("scores") or row.get("ranking")]
        if ordered:  # the held-out metrics of training on rankings (reward/ranked/rows.py)
            summary |= ranking_summary(*map(list, zip(*ordered)))
        return scored, summary


def ranking_of(rewards: list[float | None]) -> list[int]:
    """Indices of the scored completions, highest reward first.

    >>> ranking_of([0.1, None, 0.7])
    [2, 0]
    """
    return sorted((k for k, r in enumerate(rewards) if r is not None), key=lambda k: -rewards[k])


def load_reward_model(source: str) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """Tokenizer and one-label model of a saved folder (safetensors only), with one-line errors."""
    try:
        check_model_source(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source, use_safetensors=True)
    except LOAD_ERRORS as exc:
        raise UserError(
            folder_problem(source) or f"{source}: could not load a reward model ({first_line(exc)})"
        ) from exc
    return tokenizer, model


def reward_stats(config) -> dict | None:
    """{"mean", "std", "count", "source"} saved by train.py, or None."""
    stats = getattr(config, STATS_KEY, None)
    if not isinstance(stats, dict) or not stats.get("std"):
        return None
    return stats


def best_indices(row: dict) -> set[int] | None:
    """The completions a row marks as best (several when scores tie), or None if it marks none."""
    if row.get("best") is not None:
        return {int(row["best"])}
    if row.get("ranking") is not None:
        return {int(row["ranking"][0])}
    if row.get("scores") is not None:
        scores = [float(s) for s in row["scores"]]
        return {k for k, s in enumerate(scores) if s == max(scores)}
    return None


def best_of_n_metrics(rows: list[dict], rewards: list[list[float]]) -> dict:
    """Best-of-n accuracy: the share of prompts whose highest-reward completion is a best one (a reward
    tie at the top counts as wrong), with the chance level of picking at random.

    >>> best_of_n_metrics([{"best": 1}, {"scores": [3, 1, 3]}], [[0.1, 0.5], [0.2, 0.9, 0.0]])
    {'prompts': 2, 'completions': 5, 'best_of_n_accuracy': 0.5, 'best_of_n_chance': 0.5833333333333333}
    """
    out: dict = {"prompts": len(rows), "completions": sum(map(len, rewards))}
    marked = [(best_indices(row), r) for row, r in zip(rows, rewards)]
    marked = [(best, r) for best, r in marked if best is not None]
    if marked:
        top = [[k for k, v in enumerate(r) if v == max(r)] for _, r in marked]
        out["best_of_n_accuracy"] = sum(len(t) == 1 and t[0] in best for (best, _), t in zip(marked, top)) / len(marked)
        out["best_of_n_chance"] = sum(len(best) / len(r) for best, r in marked) / len(marked)
    return out
