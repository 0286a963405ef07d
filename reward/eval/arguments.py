"""The Python API's arguments checked before any work: `RewardScorer`, `RewardFunction` and their calls.

A bare string where a list is expected would be scored character by character (`RewardFunction("Q: hi? ",
"A: yes.")` returned 7 rewards); None, a None item or a message with a role training refuses would fail
deep inside a tokenizer or a chat template, or be scored as something else. Each is a `UserError` (a
ValueError, so code catching ValueError still does) naming the argument and the index:
`completions[3] must be a string or a list of messages, got None`. The text rule is training's
(reward/data.py `text_problem`): one rule for what can be trained on and what can be scored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from reward.data import CONVERSATIONAL, EXPLICIT, row_problem, text_problem
from reward.errors import UserError, first_line
from reward.eval.lengths import policy_problem

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")  # where a scorer can move the model


def device_problem(name: str, device: object) -> str | None:
    """Why `device` is not a device to score on here, naming the option or argument `name`."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        return f"{name} must be a device name such as 'cpu' or 'cuda:0', got {type(device).__name__}"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        return f"{name} {device!r} is not a device ({first_line(exc)}); use cpu, cuda, cuda:N or mps"
    if dev.type not in DEVICE_TYPES:
        return f"{name} {device!r}: scoring runs on {', '.join(DEVICE_TYPES)}, not {dev.type}"
    backend = getattr(torch, dev.type, None) if dev.type != "mps" else torch.backends.mps
    if dev.type != "cpu" and not (backend and backend.is_available()):
        return f"{name} {device!r}: no {dev.type} device is available here (use cpu)"
    if dev.type in ("cuda", "xpu") and dev.index is not None and dev.index >= backend.device_count():
        return f"{name} {device!r}: this machine has {backend.device_count()} {dev.type} device(s), numbered from 0"
    return None


def check_scorer_arguments(
    model: object,
    tokenizer: object,
    batch_size: object,
    device: object,
    flags: dict[str, object],
    max_length: object,
    truncation: object,
) -> None:
    """RewardScorer's constructor arguments, every problem in one line; `flags` must each be True or False
    (show_progress may be None: the class default)."""
    problems = []
    loaded = isinstance(model, torch.nn.Module) and hasattr(model, "config")  # a PreTrainedModel, or peft's wrapper
    if not isinstance(model, (str, Path)) and not loaded:
        problems.append(f"model must be a model folder, a Hub id or a loaded PreTrainedModel, got {kind(model)}")
    elif tokenizer is None and loaded:
        problems.append("tokenizer: a loaded model needs its tokenizer (a PreTrainedTokenizerBase), got None")
    elif tokenizer is not None and not isinstance(tokenizer, PreTrainedTokenizerBase):
        problems.append(f"tokenizer must be a PreTrainedTokenizerBase (or None), got {kind(tokenizer)}")
    if not is_int(batch_size) or batch_size < 1:
        problems.append(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if max_length is not None and (not is_int(max_length) or max_length < 2):
        problems.append(f"max_length must be an integer >= 2 (or None: the model's positions), got {max_length!r}")
    problems += [p for p in (device_problem("device", device), policy_problem("truncation", truncation)) if p]
    for name, value in flags.items():
        if not isinstance(value, bool) and not (name == "show_progress" and value is None):
            problems.append(f"{name} must be True or False, got {value!r}")
    if problems:
        raise UserError("; ".join(problems))


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def kind(value: object) -> str:
    return "None" if value is None else type(value).__name__


def sequence_problem(name: str, value: object, may_be_empty: bool) -> str | None:
    """Why one prompt or completion cannot be scored: training's text rule (a string, or a non-empty list of
    messages with a known role and string content), or None."""
    if not isinstance(value, (str, list)):
        return f"{name} must be a string or a list of messages, got {kind(value)}"
    return text_problem(name, value, conversational=isinstance(value, list), may_be_empty=may_be_empty)


def check_list(name: str, values: object) -> None:
    """A list (or tuple) of items: never a bare string (it would be scored character by character) or None."""
    if isinstance(values, (str, bytes)):
        raise UserError(f"{name} must be a list with one item per sequence, got a bare string ({values[:40]!r})")
    if not isinstance(values, (list, tuple)):
        raise UserError(f"{name} must be a list with one item per sequence, got {kind(values)}")


def check_sequences(prompts: object, completions: object, names: tuple[str, str] = ("prompts", "completions")) -> None:
    """Prompts and completions as `RewardFunction` / `RewardScorer.rewards` take them: two lists of the same
    length, each item a string or a message list, a prompt and its completion of the same kind.

    An empty string is a completion (a policy may stop at once) and an empty prompt is no prompt."""
    prompt_name, completion_name = names
    check_list(prompt_name, prompts)
    check_list(completion_name, completions)
    if len(prompts) != len(completions):
        raise UserError(
            f"{len(prompts)} {prompt_name} but {len(completions)} {completion_name}: one prompt per completion"
        )
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        for name, value in ((prompt_name, prompt), (completion_name, completion)):
            if problem := sequence_problem(f"{name}[{i}]", value, may_be_empty=True):
                raise UserError(problem)
        if isinstance(prompt, list) != isinstance(completion, list) and prompt:
            raise UserError(
                f"{completion_name}[{i}] is {'a message list' if isinstance(completion, list) else 'a string'} but "
                f"{prompt_name}[{i}] is not: both strings, or both message lists"
            )


def check_rows(name: str, rows: object, problem: Callable[[dict], str | None]) -> None:
    """A list of row dicts, each one `problem` finds nothing wrong with (it names the field)."""
    check_list(name, rows)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UserError(f"{name}[{i}] must be a dict of fields, got {kind(row)}")
        if found := problem(row):
            raise UserError(f"{name}[{i}]: {found}")


def missing_fields(row: dict, *keys: str) -> str | None:
    """The first of `keys` a row lacks, as a problem, or None."""
    missing = [key for key in keys if key not in row]
    return f"missing field(s) {', '.join(repr(k) for k in missing)}" if missing else None


def pair_problem(row: dict) -> str | None:
    """Why a row passed to `score_pairs` cannot be scored (training's rule), or None."""
    if missing := missing_fields(row, "chosen", "rejected"):
        return missing
    return row_problem(row, CONVERSATIONAL if isinstance(row["chosen"], list) else EXPLICIT)


def check_groups(groups: list) -> None:
    """Token-id groups as `score_groups` takes them: a list of lists of non-empty id lists (or None)."""
    if not isinstance(groups, (list, tuple)):
        raise UserError(f"groups must be a list of lists of token-id lists, got {type(groups).__name__}")
    for g, group in enumerate(groups):
        if not isinstance(group, (list, tuple)):
            raise UserError(f"groups[{g}] must be a list of token-id lists, got {type(group).__name__}")
        for k, ids in enumerate(group):
            if ids is not None and not token_ids(ids):
                raise UserError(f"groups[{g}][{k}] must be a non-empty list of token ids (ints)")


def check_token_ids(sequences: object) -> None:
    """`score_ids`'s argument: a list of non-empty token-id lists."""
    if not isinstance(sequences, (list, tuple)):
        raise UserError(f"sequences must be a list of token-id lists, got {type(sequences).__name__}")
    if (bad := next((i for i, ids in enumerate(sequences) if not token_ids(ids)), None)) is not None:
        raise UserError(f"sequences[{bad}] must be a non-empty list of token ids (ints), got {sequences[bad]!r:.60}")


def token_ids(ids: object) -> bool:
    return isinstance(ids, list) and bool(ids) and all(type(t) is int for t in ids)  # not bool, not float
