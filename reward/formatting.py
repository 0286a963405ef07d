"""Preference rows -> token ids, following TRL's RewardTrainer by default.

- Explicit prompt: `prompt + chosen` and `prompt + rejected` (plain string concatenation, no
  separator; for message lists, list concatenation).
- Text (not conversational): EOS is appended unless the text already ends with it, then
  `tokenizer(text)` with its default special tokens (a Llama-style tokenizer adds BOS).
- Conversational: `tokenizer.apply_chat_template(messages, tokenize=True)`; the template decides
  BOS/EOS, nothing is appended (transformers then tokenizes the rendered text with
  add_special_tokens=False, exactly what TRL's GRPO does with the same text).
- A pair where either side is longer than `max_length` tokens is dropped, not truncated
  (truncation would cut off the end of a response, where the reward is read), and counted; so is
  one longer than a model's learned positions (BERT 512, GPT-2 1024), which would fail in its forward.

The text part of that policy is a `SequenceFormat`, chosen from the options, the tokenizer and the
data (`choose_format`), and it is part of the model: reward/export.py writes it (with what the
tokenizer adds, the chat template's hash and where the head reads the reward) into config.json as
`reward_format`, and every scorer (score.py, `RewardScorer`, `RewardFunction`, the model card) reads
it back, so a saved model is scored on the strings it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from reward.data import CONVERSATIONAL, IMPLICIT, margin_value, subset_column
from reward.errors import UserError
from reward.tokenizer import beyond_reach, check_chat_template, pair_chars

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
    dropped_past_positions: int = 0  # within max_length, but longer than the model's learned positions

    def describe(self, max_length: int | None) -> str:
        return (
            f"{self.kept} (dropped {self.dropped_too_long} over {max_length} tokens, "
            f"{self.dropped_identical} with chosen == rejected)"
        )

    def require_pairs(self, max_length: int | None, position_limit: int | None) -> None:
        """Stop, saying why, when no pair is left to train on."""
        if self.kept == 0 and self.dropped_past_positions:
            raise UserError(f"no training pair fits the {position_limit} positions the model has")
        if self.kept == 0:
            raise UserError(
                f"no training pair left: {self.dropped_too_long} longer than --max_length {max_length}, "
                f"{self.dropped_identical} with chosen identical to rejected"
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
    """Prompt and response as RewardBench renders them (rewardbench/utils.py `prepare_dialogue_from_tokenizer`)."""
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


DROP_REASON = "drop_reason"  # set while tokenizing: 0 kept, 1 chosen == rejected, 2 over max_length, 3 past positions


def encode_and_judge(
    row: dict,
    tokenizer: PreTrainedTokenizerBase,
    sequence_format: SequenceFormat,
    max_length: int | None,
    position_limit: int | None = None,
    max_chars: tuple[int, int] | None = None,
) -> dict:
    """`encode_pair`, plus why the pair will be dropped, decided while its ids are still Python lists: a
    `filter` reading them back out of Arrow is a pass over every token (two such passes, identical then
    over-long, were 15 % of tokenizing 10k long-prompt pairs); past `max_chars` (chars, reason): untokenized."""
    if max_chars is not None and pair_chars(row) > max_chars[0]:  # dropped: placeholder ids, never trained
        reason = 1 if row["chosen"] == row["rejected"] else max_chars[1]  # the same text: the same ids, identical
        return {"chosen_ids": [0], "rejected_ids": [0], "margin": 0.0, DROP_REASON: reason}
    out = encode_pair(row, tokenizer, sequence_format)
    chosen, rejected = out["chosen_ids"], out["rejected_ids"]
    if chosen == rejected:  # identical first
        out[DROP_REASON] = 1
    elif not fits(chosen, rejected, max_length):
        out[DROP_REASON] = 2
    else:
        out[DROP_REASON] = 0 if fits(chosen, rejected, position_limit) else 3
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
    keep: tuple[str, ...] = (),
    position_limit: int | None = None,
) -> tuple[Dataset, TokenizeStats]:
    """Tokenize every pair and drop identical and over-long ones (longer than `max_length`, or than a model's
    `position_limit`). Returns columns chosen_ids, rejected_ids, margin, the `subset` (or `category`) column
    when the rows have one (for per-subset eval accuracy), and the columns of `keep` that the rows have."""
    if fmt == CONVERSATIONAL or sequence_format.text_as_chat:
        require_chat_template(tokenizer)  # fail before the first row, not inside datasets.map
    kept_columns = [c for c in (subset_column(ds.column_names), *keep) if c in ds.column_names]
    judge = {"tokenizer": tokenizer, "sequence_format": sequence_format, "max_length": max_length}
    limit, reason = (max_length, 2) if max_length else (position_limit, 3)  # the first rule that would drop it
    judge |= {"max_chars": (beyond_reach(tokenizer, limit), reason) if limit else None}
    out = ds.map(
        encode_and_judge,
        fn_kwargs={**judge, "position_limit": position_limit},
        remove_columns=[c for c in ds.column_names if c not in kept_columns],
        num_proc=num_proc,
        desc=f"Tokenizing {desc}",
    )
    if DROP_REASON not in out.column_names:  # no rows: map added nothing
        return out, TokenizeStats(kept=0, dropped_too_long=0)
    reasons = out.select_columns([DROP_REASON]).with_format("arrow")[:][DROP_REASON].to_numpy()  # (N,)
    kept, identical, too_long, past_positions = np.bincount(reasons, minlength=4).tolist()
    if kept < len(out):  # the filter reads the one small column, not the ids
        out = out.filter(
            lambda reason: [r == 0 for r in reason],
            input_columns=[DROP_REASON],
            batched=True,
            num_proc=num_proc,
            desc=f"Dropping identical and over-long {desc} pairs",
        )
    out = out.remove_columns([DROP_REASON])
    return out, TokenizeStats(kept, too_long, identical, past_positions)


# --- the format: chosen from the options, checked against the data and a resumed checkpoint ----------
def choose_format(
    requested: SequenceFormat, tokenizer: PreTrainedTokenizerBase, data_format: str, checkpoint: Path | None
) -> SequenceFormat:
    """The formatting options (`--append_eos`, `--add_special_tokens`, `--text_as_chat`) as they apply to
    this tokenizer, checked against the data, and against the checkpoint when resuming (a run must not
    change how its text becomes tokens half-way)."""
    if requested.text_as_chat and data_format == IMPLICIT:
        raise UserError("--text_as_chat needs a prompt column (it renders the prompt as the user turn)")
    if requested.text_as_chat and not tokenizer.chat_template:
        raise UserError("--text_as_chat needs a tokenizer with a chat template")
    if data_format == CONVERSATIONAL or requested.text_as_chat:  # the model folder's own template: checked once
        require_chat_template(tokenizer)
        check_chat_template(tokenizer, tokenizer.name_or_path or "the tokenizer")
    chosen = effective_format(requested, tokenizer)
    if requested.append_eos and not chosen.append_eos and data_format != CONVERSATIONAL and not requested.text_as_chat:
        why = "has no EOS token" if tokenizer.eos_token is None else f"appends its own EOS {tokenizer.eos_token!r}"
        print(f"tokenizer {why}: nothing more is appended")
    saved = checkpoint_format(checkpoint)
    for name in ("append_eos", "add_special_tokens", "text_as_chat"):
        if saved is not None and name in saved and saved[name] != getattr(chosen, name):
            raise UserError(
                f"--{name}: the checkpoint was trained with {str(saved[name]).lower()}; resume with the same "
                "formatting options (or start a new run)"
            )
    return chosen


def checkpoint_format(checkpoint: Path | None) -> dict | None:
    """The `reward_format` a checkpoint recorded, or None (no checkpoint, or one from before it was recorded)."""
    path = Path(checkpoint) / "config.json" if checkpoint else None
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get(FORMAT_KEY)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc


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
    """config.json's `reward_format`: the policy as it applied and what a consumer needs to match it."""
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
    """The SequenceFormat a model was trained with and its record (None: from elsewhere; TRL's is assumed)."""
    record = getattr(config, FORMAT_KEY, None)
    if not isinstance(record, dict):
        return TRL_FORMAT, None
    names = {f.name for f in fields(SequenceFormat)}
    return SequenceFormat(**{k: bool(v) for k, v in record.items() if k in names}), record


def describe_format(sequence_format: SequenceFormat, record: dict[str, Any] | None) -> str:
    """One line for people: how plain text and conversations become tokens, and where the reward is read.

    >>> describe_format(TRL_FORMAT, None).split(": ", 1)[1]
    'EOS appended (if the tokenizer has one), special tokens added'
    """
    if sequence_format.text_as_chat:
        text = "plain text as user/assistant messages through the chat template"
    else:
        # a record holds the format as it applied (no EOS to append: append_eos false); without one, the rule
        eos = f"EOS {record['eos_token']!r} appended" if record and record.get("eos_token") else "EOS appended"
        eos += "" if record else " (if the tokenizer has one)"
        text = (
            (eos if sequence_format.append_eos else "no EOS appended")
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
    templated = record.get("chat_template_sha256", "") is not None  # recorded as None: the tokenizer has none
    return f"{text}; {'conversations through the chat template; ' if templated else ''}{reads}"
