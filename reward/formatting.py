"""Preference rows -> token ids, following TRL's RewardTrainer by default.

- Explicit prompt: `prompt + chosen` and `prompt + rejected` (plain string concatenation, no
  separator; for message lists, list concatenation).
- Text (not conversational): EOS is appended unless the text already ends with it, then
  `tokenizer(text)` with its default special tokens (a Llama-style tokenizer adds BOS).
- Conversational: `tokenizer.apply_chat_template(messages, tokenize=True)`; the template decides
  BOS/EOS, nothing is appended.
- A pair where either side is longer than `max_length` tokens is dropped, not truncated
  (truncation would cut off the end of a response, where the reward is read), and counted.

The same functions format text at scoring time, so a saved model sees the same strings it was
trained on (see `format_text`, and `reward/scoring.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from reward.data import CONVERSATIONAL, margin_value
from reward.diagnostics import subset_column
from reward.errors import UserError


@dataclass
class TokenizeStats:
    kept: int
    dropped_too_long: int
    dropped_identical: int = 0  # chosen == rejected token for token: no preference to learn


def format_text(text: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """The exact string that is tokenized for a non-conversational sequence: EOS appended once.

    >>> from types import SimpleNamespace
    >>> tok = SimpleNamespace(eos_token="</s>")
    >>> format_text("Q: 2+2? A: 4", tok), format_text("Q: 2+2? A: 4</s>", tok)
    ('Q: 2+2? A: 4</s>', 'Q: 2+2? A: 4</s>')
    """
    eos = tokenizer.eos_token
    return text if text.endswith(eos) else text + eos


def encode_text(text: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of a non-conversational sequence (prompt already joined)."""
    return tokenizer(format_text(text, tokenizer))["input_ids"]


def require_chat_template(tokenizer: PreTrainedTokenizerBase) -> None:
    if not tokenizer.chat_template:
        raise UserError(
            "conversational data needs a chat template, but the tokenizer "
            f"({tokenizer.name_or_path or type(tokenizer).__name__}) has none"
        )


def encode_messages(messages: list[dict], tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids of a conversation rendered with the tokenizer's chat template."""
    require_chat_template(tokenizer)
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def encode_sequence(prompt: str | list | None, response: str | list, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """prompt + response -> ids, dispatching on text vs. message list."""
    if isinstance(response, list):
        return encode_messages(list(prompt or []) + list(response), tokenizer)
    return encode_text((prompt or "") + response, tokenizer)


def encode_pair(row: dict, tokenizer: PreTrainedTokenizerBase) -> dict:
    """One preference row -> {"chosen_ids", "rejected_ids", "margin"}."""
    prompt = row.get("prompt")
    return {
        "chosen_ids": encode_sequence(prompt, row["chosen"], tokenizer),
        "rejected_ids": encode_sequence(prompt, row["rejected"], tokenizer),
        "margin": margin_value(row["margin"]) if row.get("margin") is not None else 0.0,
    }


def tokenize_pairs(
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    fmt: str,
    max_length: int | None,
    num_proc: int | None = None,
    desc: str = "train",
) -> tuple[Dataset, TokenizeStats]:
    """Tokenize every pair and drop over-long ones. Returns columns chosen_ids, rejected_ids, margin,
    and the `subset` (or `category`) column when the rows have one (for per-subset eval accuracy)."""
    if fmt == CONVERSATIONAL:
        require_chat_template(tokenizer)  # fail before the first row, not inside datasets.map
    keep = subset_column(ds.column_names)
    out = ds.map(
        encode_pair,
        fn_kwargs={"tokenizer": tokenizer},
        remove_columns=[c for c in ds.column_names if c != keep],
        num_proc=num_proc,
        desc=f"Tokenizing {desc}",
    )
    before = len(out)
    out = out.filter(
        lambda r: r["chosen_ids"] != r["rejected_ids"], num_proc=num_proc, desc=f"Dropping identical {desc} pairs"
    )
    identical = before - len(out)
    total = len(out)
    if max_length is not None:
        out = out.filter(
            lambda r: len(r["chosen_ids"]) <= max_length and len(r["rejected_ids"]) <= max_length,
            num_proc=num_proc,
            desc=f"Dropping {desc} pairs over {max_length} tokens",
        )
    return out, TokenizeStats(kept=len(out), dropped_too_long=total - len(out), dropped_identical=identical)
