"""Score texts and preference pairs with a saved reward model, formatted exactly as in training.

Input rows (JSONL/JSON/CSV/Parquet, detected from the columns):

    pairs      chosen, rejected (+ prompt, margin)      -> adds r_chosen, r_rejected
    texts      text                                     -> adds reward
    responses  prompt, response (strings or messages)   -> adds reward
    chats      messages                                 -> adds reward

Text goes through `reward.formatting` (EOS appended; chat template for message lists), so a pair
scored here gets the rewards the training loop computed for it. The pair loss uses the model's
training loss options (centring, label smoothing; `training_loss_options`), so it is the loss the
training evaluation reports; pairs also get the diagnostics of `reward.diagnostics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from reward.collate import pad_right
from reward.data import detect_format, load_raw, text_problem, validate
from reward.diagnostics import DEFAULT_BINS, Diagnostics, diagnose, subset_column
from reward.errors import UserError
from reward.formatting import encode_messages, encode_pair, encode_sequence, encode_text
from reward.loss import bradley_terry_loss
from reward.model import check_model_source, compute_rewards, ensure_pad_token, first_line
from reward.precision import pick_device

PAIRS, TEXTS, RESPONSES, CHATS = "pairs", "texts", "responses", "chats"


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
    """A saved reward model plus its tokenizer, scoring in length-sorted batches."""

    def __init__(self, model_dir: str, batch_size: int = 16, device: str | None = None, show_progress: bool = True):
        try:
            check_model_source(model_dir)
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"{model_dir}: could not load a reward model ({first_line(exc)})") from exc
        if self.model.config.num_labels != 1:
            raise UserError(f"{model_dir}: the model has {self.model.config.num_labels} labels, a reward model has 1")
        ensure_pad_token(self.tokenizer)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = torch.device(device) if device else pick_device()
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.show_progress = show_progress

    @torch.no_grad()
    def score_ids(self, sequences: list[list[int]]) -> list[float]:
        """Rewards for token-id lists, in input order. Sorting by length keeps padding small."""
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        rewards = [0.0] * len(sequences)
        bar = tqdm(total=len(sequences), desc="scoring", unit="seq", disable=not self.show_progress)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            ids, mask = pad_right([sequences[i] for i in idx], self.tokenizer.pad_token_id)  # (N, T)
            r = compute_rewards(self.model, ids.to(self.device), mask.to(self.device))  # (N,)
            for i, value in zip(idx, r.tolist()):
                rewards[i] = value
            bar.update(len(idx))
        bar.close()
        return rewards

    def score_pairs(
        self, rows: list[dict], loss_options: LossOptions | None = None, num_bins: int = DEFAULT_BINS
    ) -> PairReport:
        """Rewards of both sides of every pair, the loss (with the training loss options) and diagnostics."""
        opts = loss_options or LossOptions()
        encoded = [encode_pair(row, self.tokenizer) for row in rows]
        n = len(encoded)
        rewards = self.score_ids([e["chosen_ids"] for e in encoded] + [e["rejected_ids"] for e in encoded])
        r_c, r_r = torch.tensor(rewards[:n]), torch.tensor(rewards[n:])  # (B,), (B,)
        margin = torch.tensor([e["margin"] for e in encoded])  # (B,) 0 where a row has none
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
        metrics = {
            "pairs": n,
            "accuracy": out.accuracy,
            "margin": out.margin,
            "loss": out.loss.item(),
            "reward_mean": out.reward_mean,
            "reward_min": out.reward_min,
            "reward_max": out.reward_max,
            **diagnostics.metrics(),
        }
        scored = [{**row, "r_chosen": c, "r_rejected": r} for row, c, r in zip(rows, r_c.tolist(), r_r.tolist())]
        has_margin = any(row.get("margin") is not None for row in rows)
        return PairReport(scored, metrics, r_c, r_r, margin if has_margin else None, diagnostics)

    def score_rows(self, rows: list[dict], kind: str) -> list[dict]:
        """Rows of kind texts/responses/chats -> the same rows with a `reward` field."""
        encode = {
            TEXTS: lambda row: encode_text(row["text"], self.tokenizer),
            RESPONSES: lambda row: encode_sequence(row["prompt"], row["response"], self.tokenizer),
            CHATS: lambda row: encode_messages(row["messages"], self.tokenizer),
        }[kind]
        rewards = self.score_ids([encode(row) for row in rows])
        return [{**row, "reward": r} for row, r in zip(rows, rewards)]


def detect_kind(columns: list[str], source: str = "input") -> str:
    if "chosen" in columns or "rejected" in columns:
        return PAIRS
    if "text" in columns:
        return TEXTS
    if "prompt" in columns and "response" in columns:
        return RESPONSES
    if "messages" in columns:
        return CHATS
    raise UserError(
        f"{source}: cannot tell what to score from columns {', '.join(columns)}: expected chosen/rejected "
        "(pairs), text, prompt/response, or messages"
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
    chat = isinstance(row["response"], list)
    return text_problem("prompt", row["prompt"], chat, may_be_empty=True) or text_problem(
        "response", row["response"], chat
    )
