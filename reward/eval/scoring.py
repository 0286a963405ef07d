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
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from reward.collate import margins
from reward.data import detect_format, load_raw, ranking_problem, subset_column, text_problem, validate
from reward.errors import UserError
from reward.export import STATS_KEY
from reward.fast.packed_scoring import group_rewards
from reward.formatting import chat_template_hash, encode_messages, encode_pair, encode_sequence, read_format
from reward.loss import bradley_terry_loss
from reward.metrics import DEFAULT_BINS, Diagnostics, diagnose, loss_metrics
from reward.model import first_line, pick_device
from reward.ranked.rows import ranked_scores, ranking_summary
from reward.tokenizer import LOAD_ERRORS, check_model_source, ensure_pad_token, folder_problem

PAIRS, RANKINGS, TEXTS, RESPONSES, CHATS = "pairs", "rankings", "texts", "responses", "chats"


@dataclass
class PairReport:
    rows: list[dict]  # input fields + r_chosen, r_rejected
    metrics: dict[str, float | None]  # accuracy, margin, loss, reward stats, diagnostics, over all pairs
    r_chosen: torch.Tensor  # (B,)
    r_rejected: torch.Tensor  # (B,)
    margin: torch.Tensor | None  # (B,); None when no row has a margin
    diagnostics: Diagnostics


@dataclass
class LossOptions:
    """The loss options scoring uses, so that its loss is the training loss of the model."""

    center_rewards_coefficient: float | None = None
    label_smoothing: float = 0.0
    source: str = "defaults"  # where they came from, for the printed line


def training_loss_options(
    model_dir: str, center_rewards_coefficient: float | None = None, label_smoothing: float | None = None
) -> LossOptions:
    """Options given here win; the rest come from MODEL_DIR/training_config.json (written by train.py)
    when the folder has one, else the defaults (no centring, no smoothing)."""
    path = Path(model_dir) / "training_config.json"
    saved: dict = {}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from exc
    sources = []
    if center_rewards_coefficient is None and saved.get("center_rewards_coefficient") is not None:
        center_rewards_coefficient = float(saved["center_rewards_coefficient"])
        sources.append("center_rewards_coefficient")
    if label_smoothing is None and saved.get("label_smoothing") is not None:
        label_smoothing = float(saved["label_smoothing"])
        sources.append("label_smoothing")
    source = f"{', '.join(sources)} from {path}" if sources else "command line / defaults"
    return LossOptions(center_rewards_coefficient, label_smoothing or 0.0, source)


class RewardScorer:
    """A reward model plus its tokenizer and recorded format, scoring in length-sorted batches.

    `model` is a saved folder (or Hub id), or a loaded model together with its `tokenizer`.
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
    ):
        if isinstance(model, (str, Path)):
            self.source = str(model)
            self.tokenizer, self.model = load_reward_model(self.source)
        else:
            if tokenizer is None:
                raise ValueError("a loaded model needs its tokenizer")
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

    def encode(self, prompt: str | list | None, response: str | list) -> list[int]:
        """Token ids of prompt + response, formatted as training formatted them."""
        return encode_sequence(prompt, response, self.tokenizer, self.format)

    def rewards(self, prompts: list, responses: list) -> list[float]:
        """One reward per (prompt, response), normalized when the scorer was built with normalize=True.
        Responses to the same prompt (GRPO's generations, a ranked row) are scored as one group."""
        groups: dict[str, list[int]] = {}  # prompt -> positions of its responses
        for i, prompt in enumerate(prompts):
            groups.setdefault(json.dumps(prompt, sort_keys=True, default=str), []).append(i)
        encoded = [[self.encode(prompts[i], responses[i]) for i in where] for where in groups.values()]
        rewards = [0.0] * len(prompts)
        for where, values in zip(groups.values(), self.score_groups(encoded)):
            for i, value in zip(where, values):
                rewards[i] = value
        return self.normalized(rewards)

    def normalized(self, rewards: list[float]) -> list[float]:
        if not self.normalize:
            return rewards
        mean, std = self.stats["mean"], self.stats["std"]
        return [(r - mean) / std for r in rewards]

    def score_ids(self, sequences: list[list[int]]) -> list[float]:
        """Rewards for token-id lists, in input order."""
        return [r for (r,) in self.score_groups([[seq] for seq in sequences])]

    @torch.no_grad()
    def score_groups(self, groups: list[list[list[int]]]) -> list[list[float]]:
        """Rewards for groups of token-id lists that may share a prompt (a pair's sides, a prompt's
        completions), in input order. Groups go in length-sorted batches of about `batch_size`
        sequences; packed (the default), each group is one segment with its common prefix computed
        once and a batch is one padding-free row; `padding_free=False` pads each batch (the reference)."""
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
        """Rewards of both sides of every pair, the loss (with the training loss options) and diagnostics."""
        opts = loss_options or LossOptions()
        encoded = [encode_pair(row, self.tokenizer, self.format) for row in rows]
        n = len(encoded)
        rewards = self.score_groups([[e["chosen_ids"], e["rejected_ids"]] for e in encoded])  # [[r_c, r_r]] * B
        r_c, r_r = torch.tensor(rewards).reshape(n, 2).T  # (B,), (B,)
        margin = margins(encoded)  # (B,) 0 where a row has none
        out = bradley_terry_loss(r_c, r_r, margin, opts.center_rewards_coefficient, opts.label_smoothing)
        column = subset_column(rows[0].keys())
        diagnostics = diagnose(
            r_c,
            r_r,
            torch.tensor([len(e["chosen_ids"]) for e in encoded]),  # (B,) tokens, as the model saw them
            torch.tensor([len(e["rejected_ids"]) for e in encoded]),  # (B,)
            [row.get(column) for row in rows] if column else None,
            num_bins,
        )
        summary = loss_metrics(out)  # as training's evaluation reduces them (reward/metrics.py)
        names = ("accuracy", "margin", "loss", "reward_mean", "reward_min", "reward_max")
        metrics = {"pairs": n, **{name: summary[name] for name in names}, **diagnostics.metrics()}
        scored = [{**row, "r_chosen": c, "r_rejected": r} for row, c, r in zip(rows, r_c.tolist(), r_r.tolist())]
        has_margin = any(row.get("margin") is not None for row in rows)
        return PairReport(scored, metrics, r_c, r_r, margin if has_margin else None, diagnostics)

    def score_rows(self, rows: list[dict], kind: str) -> list[dict]:
        """Rows of kind texts/responses/chats -> the same rows with a `reward` field."""
        encode = {
            TEXTS: lambda row: self.encode(None, row["text"]),
            RESPONSES: lambda row: self.encode(row["prompt"], row["response"]),
            CHATS: lambda row: encode_messages(row["messages"], self.tokenizer),
        }[kind]
        rewards = self.normalized(self.score_ids([encode(row) for row in rows]))
        return [{**row, "reward": r} for row, r in zip(rows, rewards)]

    def score_rankings(self, rows: list[dict]) -> tuple[list[dict], dict]:
        """Rows of a prompt and K completions -> each row plus `rewards` (K floats) and `ranking` (indices,
        highest reward first), and best-of-n metrics when rows say which completion is best."""
        encoded = [[self.encode(row.get("prompt"), c) for c in row["completions"]] for row in rows]
        per_row = [self.normalized(r) for r in self.score_groups(encoded)]  # a row's completions: one group
        scored = [
            {**row, "rewards": r, "ranking": sorted(range(len(r)), key=lambda k, r=r: -r[k])}
            for row, r in zip(rows, per_row)
        ]
        summary = best_of_n_metrics(rows, per_row)
        ordered = [(ranked_scores(row), r) for row, r in zip(rows, per_row) if row.get("scores") or row.get("ranking")]
        if ordered:  # the held-out metrics of training on rankings (reward/ranked/rows.py)
            summary |= ranking_summary(*map(list, zip(*ordered)))
        return scored, summary


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


def detect_kind(columns: list[str], source: str = "input") -> str:
    if "chosen" in columns or "rejected" in columns:
        return PAIRS
    if "completions" in columns:
        return RANKINGS
    if "text" in columns:
        return TEXTS
    if "prompt" in columns and "response" in columns:
        return RESPONSES
    if "messages" in columns:
        return CHATS
    raise UserError(
        f"{source}: cannot tell what to score from columns {', '.join(columns)}: expected chosen/rejected "
        "(pairs), prompt/completions (rankings), text, prompt/response, or messages"
    )


def load_rows(path: str) -> tuple[list[dict], str]:
    """All rows of a file (first split) and their kind; pair files are validated like training data."""
    splits, source = load_raw(path)
    ds = next(iter(splits.values()))
    if len(ds) == 0:
        raise UserError(f"{source}: no rows to score")
    kind = detect_kind(ds.column_names, source)
    if kind == PAIRS:
        validate(ds, detect_format(ds.column_names, ds[0], source), source, "input")
    else:
        validate(ds, kind, source, "input", problem=scoring_row_problem)
    return ds.to_list(), kind


def scoring_row_problem(row: dict, kind: str) -> str | None:
    """Why a texts/responses/chats row cannot be scored, or None."""
    if kind == TEXTS:
        return text_problem("text", row["text"], conversational=False)
    if kind == CHATS:
        return text_problem("messages", row["messages"], conversational=True)
    if kind == RANKINGS:
        return ranking_problem(row)
    chat = isinstance(row["response"], list)
    return text_problem("prompt", row["prompt"], chat, may_be_empty=True) or text_problem(
        "response", row["response"], chat
    )
