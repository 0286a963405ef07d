"""Preference rows -> token ids, following TRL's RewardTrainer by default.

- Explicit prompt: `prompt + chosen` and `prompt + rejected` (plain string concatenation, no
  separator; for message lists, list concatenation).
- Text (not conversational): EOS is appended unless the text already ends with it, then
  `tokenizer(text)` with its default special tokens (a Llama-style tokenizer adds BOS).
- Conversational: `tokenizer.apply_chat_template(messages, tokenize=True)`; the template decides
  BOS/EOS, nothing is appended (transformers then tokenizes the rendered text with
  add_special_tokens=False, exactly what TRL's GRPO does with the same text).
- A pair where either side is longer than `max_length` tokens is dropped, not truncated
  (truncation would cut off the end of a response, where the reward is read), and counted.

The text part of that policy is a `SequenceFormat`, and it is part of the model: train.py writes it
(with what the tokenizer adds, the chat template's hash and where the head reads the reward) into
config.json as `reward_format`, and every scorer (score.py, `RewardScorer`, `RewardFunction`, the
model card) reads it back, so a saved model is scored on the strings it was trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from reward.data import CONVERSATIONAL, margin_value, subset_column
from reward.errors import UserError
from reward.ranked.rows import RANKING_COLUMNS

FORMAT_KEY = "reward_format"  # config.json field: how training turned text into tokens
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SequenceFormat:
    """How one (prompt, response) becomes token ids. The defaults are TRL's RewardTrainer.

    TRL's GRPO scores `prompt + completion` tokenized with add_special_tokens=False, the completion
    decoded without special tokens (trl/trainer/grpo_trainer.py, `_calculate_rewards`):
    `SequenceFormat(append_eos=False, add_special_tokens=False)` trains for exactly that string.
    RewardBench renders [user: prompt, assistant: response] with the chat template:
    `SequenceFormat(text_as_chat=True)`. Conversational rows always use the chat template.
    """

    append_eos: bool = True  # plain text: append tokenizer.eos_token unless present (no-op without one)
    add_special_tokens: bool = True  # plain text: tokenizer(text, add_special_tokens=...), e.g. Llama's BOS
    text_as_chat: bool = False  # plain-text prompt/response rendered as a user + an assistant message


TRL_FORMAT = SequenceFormat()


@dataclass
class TokenizeStats:
    kept: int
    dropped_too_long: int
    dropped_identical: int = 0  # chosen == rejected token for token: no preference to learn

    def describe(self, max_length: int | None) -> str:
        return (
            f"{self.kept} (dropped {self.dropped_too_long} over {max_length} tokens, "
            f"{self.dropped_identical} with chosen == rejected)"
        )


def format_text(text: str, tokenizer: PreTrainedTokenizerBase, sequence_format: SequenceFormat = TRL_FORMAT) -> str:
    """The exact string that is tokenized for a non-conversational sequence: EOS appended once.

    Nothing is appended when the format says so, or when the tokenizer has no EOS token (BERT-style
    encoders end a sequence with their own special tokens, e.g. [SEP]); train.py also switches it
    off for a tokenizer that appends its own EOS (`effective_format`).

    >>> from types import SimpleNamespace
    >>> tok = SimpleNamespace(eos_token="</s>")
    >>> format_text("Q: 2+2? A: 4", tok), format_text("Q: 2+2? A: 4</s>", tok)
    ('Q: 2+2? A: 4</s>', 'Q: 2+2? A: 4</s>')
    >>> format_text("Q: 2+2? A: 4", tok, SequenceFormat(append_eos=False))
    'Q: 2+2? A: 4'
    """
    eos = tokenizer.eos_token
    if not sequence_format.append_eos or eos is None or text.endswith(eos):
        return text
    return text + eos


def encode_text(
    text: str, tokenizer: PreTrainedTokenizerBase, sequence_format: SequenceFormat = TRL_FORMAT
) -> list[int]:
    """Token ids of a non-conversational sequence (prompt already joined)."""
    formatted = format_text(text, tokenizer, sequence_format)
    return tokenizer(formatted, add_special_tokens=sequence_format.add_special_tokens)["input_ids"]


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


def as_messages(prompt: str | None, response: str) -> list[dict]:
    """A plain-text prompt and response as RewardBench renders them: one user turn, one assistant turn
    (rewardbench/utils.py `prepare_dialogue_from_tokenizer`, single-turn case)."""
    user = [{"role": "user", "content": prompt}] if prompt else []
    return [*user, {"role": "assistant", "content": response}]


def encode_sequence(
    prompt: str | list | None,
    response: str | list,
    tokenizer: PreTrainedTokenizerBase,
    sequence_format: SequenceFormat = TRL_FORMAT,
) -> list[int]:
    """prompt + response -> ids, dispatching on text vs. message list."""
    if isinstance(response, list):
        return encode_messages(list(prompt or []) + list(response), tokenizer)
    if sequence_format.text_as_chat:
        return encode_messages(as_messages(prompt, response), tokenizer)
    return encode_text((prompt or "") + response, tokenizer, sequence_format)


def encode_pair(row: dict, tokenizer: PreTrainedTokenizerBase, sequence_format: SequenceFormat = TRL_FORMAT) -> dict:
    """One preference row -> {"chosen_ids", "rejected_ids", "margin"}."""
    prompt = row.get("prompt")
    return {
        "chosen_ids": encode_sequence(prompt, row["chosen"], tokenizer, sequence_format),
        "rejected_ids": encode_sequence(prompt, row["rejected"], tokenizer, sequence_format),
        "margin": margin_value(row["margin"]) if row.get("margin") is not None else 0.0,
    }


DROP_REASON = "drop_reason"  # set while tokenizing: 0 kept, 1 chosen == rejected, 2 a side over max_length


def encode_and_judge(
    row: dict, tokenizer: PreTrainedTokenizerBase, sequence_format: SequenceFormat, max_length: int | None
) -> dict:
    """`encode_pair`, plus why the pair will be dropped, decided while its ids are still Python lists: a
    `filter` reading them back out of Arrow is a pass over every token (two such passes, identical then
    over-long, were 15 % of tokenizing 10k long-prompt pairs)."""
    out = encode_pair(row, tokenizer, sequence_format)
    chosen, rejected = out["chosen_ids"], out["rejected_ids"]
    out[DROP_REASON] = 1 if chosen == rejected else 0 if fits(chosen, rejected, max_length) else 2  # identical first
    return out


def fits(chosen_ids: list[int], rejected_ids: list[int], max_length: int | None) -> bool:
    """Neither side longer than `max_length` tokens (TRL's rule: `<=` keeps a pair exactly at the limit)."""
    return max_length is None or (len(chosen_ids) <= max_length and len(rejected_ids) <= max_length)


def tokenize_pairs(
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    fmt: str,
    max_length: int | None,
    num_proc: int | None = None,
    desc: str = "train",
    sequence_format: SequenceFormat = TRL_FORMAT,
) -> tuple[Dataset, TokenizeStats]:
    """Tokenize every pair and drop identical and over-long ones. Returns columns chosen_ids, rejected_ids,
    margin, and the `subset` (or `category`) column when the rows have one (for per-subset eval accuracy)."""
    if fmt == CONVERSATIONAL or sequence_format.text_as_chat:
        require_chat_template(tokenizer)  # fail before the first row, not inside datasets.map
    keep = [c for c in (subset_column(ds.column_names), *RANKING_COLUMNS, "tied") if c in ds.column_names]
    out = ds.map(
        encode_and_judge,
        fn_kwargs={"tokenizer": tokenizer, "sequence_format": sequence_format, "max_length": max_length},
        remove_columns=[c for c in ds.column_names if c not in keep],
        num_proc=num_proc,
        desc=f"Tokenizing {desc}",
    )
    if DROP_REASON not in out.column_names:  # no rows: map added nothing
        return out, TokenizeStats(kept=0, dropped_too_long=0)
    reasons = out.select_columns([DROP_REASON]).with_format("arrow")[:][DROP_REASON].to_numpy()  # (N,)
    kept, identical, too_long = np.bincount(reasons, minlength=3).tolist()
    if identical or too_long:  # the filter reads the one small column, not the ids
        out = out.filter(
            lambda reason: [r == 0 for r in reason],
            input_columns=[DROP_REASON],
            batched=True,
            num_proc=num_proc,
            desc=f"Dropping identical and over-long {desc} pairs",
        )
    out = out.remove_columns([DROP_REASON])
    return out, TokenizeStats(kept=kept, dropped_too_long=too_long, dropped_identical=identical)


def drop_longer(
    ds: Dataset, max_length: int | None, num_proc: int | None = None, desc: str = "train"
) -> tuple[Dataset, int]:
    """Pairs where neither side is longer than `max_length` tokens, and how many were dropped."""
    if max_length is None:
        return ds, 0
    kept = ds.filter(
        lambda r: fits(r["chosen_ids"], r["rejected_ids"], max_length),
        num_proc=num_proc,
        desc=f"Dropping {desc} pairs over {max_length} tokens",
    )
    return kept, len(ds) - len(kept)


def drop_past_positions(
    train_ds: Dataset, eval_ds: Dataset | None, limit: int, num_proc: int | None = None
) -> tuple[Dataset, Dataset | None]:
    """Drop pairs longer than a model's learned positions (when --max_length allows more: they would fail
    inside the forward), saying how many, like --max_length."""
    fitted = []
    for split, ds in (("train", train_ds), ("eval", eval_ds)):
        if ds is not None:
            ds, dropped = drop_longer(ds, limit, num_proc, split)
            if dropped:
                print(f"{split}: dropped {dropped} more pairs longer than the {limit} positions the model has")
        fitted.append(ds)
    if len(fitted[0]) == 0:
        raise UserError(f"no training pair fits the {limit} positions the model has")
    return fitted[0], fitted[1]


# --- the format as part of the model (config.json `reward_format`) --------------------------------
def special_tokens_added(tokenizer: PreTrainedTokenizerBase) -> dict[str, list[str]]:
    """What `tokenizer(text)` puts around a text: {"before": ["<s>"], "after": []} for Llama-style."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    at = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), 0)
    before, after = full[:at], full[at + len(bare) :]
    return {"before": tokenizer.convert_ids_to_tokens(before), "after": tokenizer.convert_ids_to_tokens(after)}


def chat_template_hash(tokenizer: PreTrainedTokenizerBase) -> str | None:
    template = tokenizer.chat_template
    if not isinstance(template, str) or not template:
        return None
    return hashlib.sha256(template.encode()).hexdigest()[:16]


def effective_format(sequence_format: SequenceFormat, tokenizer: PreTrainedTokenizerBase) -> SequenceFormat:
    """The format as it applies to this tokenizer: no EOS is appended when it has none (BERT) or when it
    appends its own (RoBERTa's `</s>`, DeBERTa-v2's `[SEP]`), where TRL would append a second one."""
    eos = tokenizer.eos_token
    own = sequence_format.add_special_tokens and eos in special_tokens_added(tokenizer)["after"]
    return replace(sequence_format, append_eos=sequence_format.append_eos and eos is not None and not own)


def format_record(
    sequence_format: SequenceFormat, tokenizer: PreTrainedTokenizerBase, data_format: str
) -> dict[str, Any]:
    """The `reward_format` entry of config.json: the policy as it applied, and the facts a consumer needs
    to match it (train.py adds `reward_token`, where the model's head reads the reward)."""
    effective = effective_format(sequence_format, tokenizer)
    added = special_tokens_added(tokenizer) if effective.add_special_tokens else {"before": [], "after": []}
    return {
        "version": FORMAT_VERSION,
        **asdict(effective),
        "eos_token": tokenizer.eos_token,
        "special_tokens": added,
        "chat_template_sha256": chat_template_hash(tokenizer),
        "data_format": data_format,
    }


def read_format(config: PretrainedConfig) -> tuple[SequenceFormat, dict[str, Any] | None]:
    """The SequenceFormat a model was trained with, and its full record (None: not recorded, e.g. a model
    from elsewhere; TRL's formatting is then assumed)."""
    record = getattr(config, FORMAT_KEY, None)
    if not isinstance(record, dict):
        return TRL_FORMAT, None
    names = {f.name for f in fields(SequenceFormat)}
    return SequenceFormat(**{k: bool(v) for k, v in record.items() if k in names}), record


def describe_format(sequence_format: SequenceFormat, record: dict[str, Any] | None) -> str:
    """One line for people: how plain text and conversations become tokens, and where the reward is read.

    >>> describe_format(TRL_FORMAT, None)
    "TRL's RewardTrainer format assumed (no reward_format in config.json): EOS appended, special tokens added"
    """
    if sequence_format.text_as_chat:
        text = "plain text as user/assistant messages through the chat template"
    else:
        eos = f"EOS {record['eos_token']!r}" if record and record.get("eos_token") else "EOS"
        text = (
            (f"{eos} appended" if sequence_format.append_eos else "no EOS appended")
            + ", "
            + ("special tokens added" if sequence_format.add_special_tokens else "no special tokens added")
        )
        if record and sequence_format.add_special_tokens:
            added = record.get("special_tokens") or {}
            shown = [f"{t!r} in front" for t in added.get("before", [])]
            shown += [f"{t!r} at the end" for t in added.get("after", [])]
            text += f" ({', '.join(shown)})" if shown else " (none for this tokenizer)"
    if record is None:
        return f"TRL's RewardTrainer format assumed (no {FORMAT_KEY} in config.json): {text}"
    reads = f"reward read at: {record.get('reward_token', '?')}"
    if record.get("data_format") == CONVERSATIONAL:
        return f"conversations through the chat template, which writes its own BOS/EOS (plain text: {text}); {reads}"
    return f"{text}; conversations through the chat template; {reads}"
