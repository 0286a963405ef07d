"""A request's groups -> token ids -> pieces the batcher schedules; the rewards -> the reply.

Formatting is the scorer's, which is training's (reward/eval/scoring.py `RewardScorer.encode_within`:
the model's recorded `reward_format`), so a completion served here gets the reward score.py gives the
same (prompt, completion). Every sequence is held to the scorer's length rule (reward/eval/lengths.py:
cut on the left, skipped, or the request refused with 413 under `--truncation error`), and the reply
lists each completion it touched.

/get_reward's queries are whole texts that OpenRLHF decoded from the policy's token ids with
`skip_special_tokens=False` (openrlhf/trainer/ppo_utils/experience_maker.py): they may carry the
policy's padding, and a BOS the tokenizer adds again. `clean_query` takes off pad tokens at either end
and the special tokens this tokenizer adds itself (its BOS in front, an encoder's [SEP] at the end), so
a query is scored as score.py scores the same text (`texts` rows).

A group becomes pieces of at most about `max_batch_tokens` computed tokens (its common prefix once,
each suffix), so that one huge group cannot make a micro-batch unbounded; pieces of one prompt in the
same micro-batch are merged again (reward/serve/batcher.py).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reward.errors import UserError, first_line
from reward.eval.lengths import fit_groups
from reward.eval.scoring import RewardScorer
from reward.fast.layout import common_prefix_length
from reward.serve.protocol import Limits, Parsed, RequestError, parse_get_reward, parse_json, parse_score

ACTIONS = {"truncated": "truncated", "skipped": "skipped", "too_large": "too_large"}  # Fitting's lists -> reply


@dataclass
class Piece:
    """Some completions of one group, scheduled as a unit: a segment [P | S1' | ... ] in a micro-batch."""

    ticket: Ticket
    group: int
    positions: list[int]  # the completions' indices in their group
    sequences: list[list[int]]
    key: str | None  # Group.key: pieces with equal keys in one micro-batch share their prompt
    prefix: int  # their common token prefix
    cost: int  # tokens computed when scored alone: the prefix once, then each suffix


@dataclass
class Ticket:
    """One request on its way through the batcher: its pieces, the rewards as they come back."""

    parsed: Parsed
    rewards: list[list[float | None]]
    lengths: list[dict]
    pieces: list[Piece] = field(default_factory=list)
    left: int = 0  # pieces not scored yet (the worker thread alone counts down)
    cancelled: bool = False  # the client went away: pieces not started are dropped
    error: BaseException | None = None
    arrived: float = field(default_factory=time.monotonic)
    on_done: Callable[[], None] | None = None  # called from the worker thread when the last piece is scored

    @property
    def completions(self) -> int:
        return sum(len(piece.sequences) for piece in self.pieces)

    def finish(self, piece: Piece, values: list[float]) -> bool:
        """Record a piece's rewards; True when it was the last one (never after the ticket failed)."""
        if self.error is not None:
            return False
        for k, value in zip(piece.positions, values):
            self.rewards[piece.group][k] = value
        self.left -= 1
        return self.left == 0

    def fail(self, error: BaseException) -> None:
        self.error, self.left = error, 0


class Engine:
    """Turns request bodies into tickets and tickets into replies, with one scorer's model, tokenizer,
    format and length rule."""

    def __init__(self, scorer: RewardScorer, limits: Limits, max_batch_tokens: int):
        self.scorer, self.limits, self.max_batch_tokens = scorer, limits, max_batch_tokens
        tokenizer = scorer.tokenizer
        self.pad_text = tokenizer.pad_token
        self.added_before, self.added_after = added_special_text(tokenizer, scorer.format.add_special_tokens)

    def prepare(self, protocol: str, body: bytes) -> Ticket:
        """Parse, check, tokenize and cut a request into pieces (runs in the encoding thread, off the event
        loop). Raises RequestError."""
        data = parse_json(body)
        parsed = parse_score(data, self.limits) if protocol == "score" else parse_get_reward(data, self.limits)
        encode, name = self.scorer.encode_within, self.namer(parsed)
        encoded: list[list[list[int] | None]] = []
        for g, group in enumerate(parsed.groups):
            encoded.append([])
            for k, completion in enumerate(group.completions):
                try:
                    prompt, text = (
                        (group.prompt, completion) if protocol == "score" else (None, self.clean_query(completion))
                    )
                    ids = encode(prompt, text)
                except Exception as exc:  # noqa: BLE001 - e.g. a chat template that refuses these messages
                    where = name(g, k)
                    raise RequestError(
                        422, f"{where}: cannot be formatted ({type(exc).__name__}: {first_line(exc)})", where
                    ) from None
                if ids == []:  # an empty text in a format that adds no token: nothing to read a reward at
                    raise RequestError(422, f"{name(g, k)}: no token to score (an empty text)", name(g, k))
                encoded[-1].append(ids)
        try:
            fitted, fitting = fit_groups(self.scorer.rule, encoded, name=name)
        except UserError as exc:  # --truncation error: the request holds a completion over the limit
            raise RequestError(413, str(exc)) from None
        lengths = [
            self.length_event(parsed, g, k, action)
            for kind, action in ACTIONS.items()
            for g, k in getattr(fitting, kind)
        ]
        ticket = Ticket(parsed, [[None] * len(group) for group in fitted], lengths)
        for g, group in enumerate(fitted):
            ticket.pieces += self.pieces(ticket, g, group)
        ticket.left = len(ticket.pieces)
        return ticket

    def pieces(self, ticket: Ticket, g: int, group: list[list[int] | None]) -> list[Piece]:
        """A group's scored completions in pieces of at most ~max_batch_tokens computed tokens each."""
        kept = [(k, ids) for k, ids in enumerate(group) if ids is not None]
        if not kept:
            return []
        prefix = min(common_prefix_length(kept[0][1], ids) for _, ids in kept)
        out, chunk, cost = [], [], prefix
        for k, ids in kept:
            if chunk and cost + len(ids) - prefix > self.max_batch_tokens:
                out.append(chunk)
                chunk, cost = [], prefix
            chunk.append((k, ids))
            cost += len(ids) - prefix
        out.append(chunk)
        key = ticket.parsed.groups[g].key
        return [self.piece(ticket, g, chunk, key) for chunk in out]

    @staticmethod
    def piece(ticket: Ticket, g: int, chunk: list[tuple[int, list[int]]], key: str | None) -> Piece:
        sequences = [ids for _, ids in chunk]
        prefix = min(common_prefix_length(sequences[0], ids) for ids in sequences) if len(sequences) > 1 else 0
        cost = prefix + sum(len(ids) - prefix for ids in sequences)
        return Piece(ticket, g, [k for k, _ in chunk], sequences, key, prefix, cost)

    def clean_query(self, text: str) -> str:
        """An OpenRLHF query as the text training would have seen: the policy's pad tokens off both ends and
        the special tokens this tokenizer adds itself off their ends (it adds them back).

        >>> from types import SimpleNamespace
        >>> e = Engine.__new__(Engine)
        >>> e.pad_text, e.added_before, e.added_after = "<pad>", "<s>", ""
        >>> e.clean_query("<pad><pad><s>Q: hi A: yo</s><pad>")
        'Q: hi A: yo</s>'
        """
        pad = self.pad_text
        if pad:
            while text.startswith(pad):
                text = text[len(pad) :]
            while text.endswith(pad):
                text = text[: -len(pad)]
        if self.added_before and text.startswith(self.added_before):
            text = text[len(self.added_before) :]
        if self.added_after and text.endswith(self.added_after):
            text = text[: -len(self.added_after)]
        return text

    @staticmethod
    def namer(parsed: Parsed) -> Callable[[int, int], str]:
        """How a completion is named in messages: by its place in the request's own fields."""
        if parsed.protocol == "get_reward":
            where = {gk: i for i, gk in enumerate(parsed.flat)}
            return lambda g, k: f"query[{where[(g, k)]}]"
        if parsed.flat is not None:
            return lambda g, k: f"completions[{k}]"
        return lambda g, k: f"groups[{g}].completions[{k}]"

    def length_event(self, parsed: Parsed, g: int, k: int, action: str) -> dict:
        where = {"group": g, "completion": k}
        if parsed.protocol == "get_reward":
            where = {"query": parsed.flat.index((g, k))}
        elif parsed.flat is not None:
            where = {"completion": k}
        event = {**where, "action": action, "limit": self.scorer.rule.tokens}
        return event | ({"max_chars": self.scorer.rule.chars} if action == "too_large" else {})

    def reply(self, ticket: Ticket) -> dict:
        """The response body of a scored ticket, rewards normalized when the server was started so."""
        parsed = ticket.parsed
        for g, group in enumerate(ticket.rewards):
            if (
                k := next((k for k, r in enumerate(group) if r is not None and not math.isfinite(r)), None)
            ) is not None:
                where = self.namer(parsed)(g, k)
                raise RequestError(500, f"the model gave a non-finite reward ({group[k]}) for {where}: check the model")
        rewards = [self.scorer.normalized(group) for group in ticket.rewards]
        if parsed.protocol == "score":
            shaped = rewards if parsed.flat is None else rewards[0] if rewards else []
            return {
                "rewards": shaped,
                "normalized": self.scorer.normalize,
                "model": self.scorer.source,
                "lengths": ticket.lengths,
            }
        flat = [rewards[g][k] for g, k in parsed.flat]
        touched = {event["query"] for event in ticket.lengths}
        # OpenRLHF logs the mean of each extra_logs list per step (openrlhf/trainer/ppo_utils/experience_maker.py)
        extra = {"reward_cut_or_skipped": [float(i in touched) for i in range(len(flat))]}
        return {"rewards": flat, "scores": flat, "extra_logs": extra, "lengths": ticket.lengths}


def added_special_text(tokenizer, adds: bool) -> tuple[str, str]:
    """The text of the special tokens `tokenizer(text)` puts in front of and after any text (a Llama BOS, an
    encoder's [CLS] ... [SEP]), or empty strings when the format adds none."""
    if not adds:
        return "", ""
    probe = "a"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), None)
    if start is None:
        return "", ""
    before, after = full[:start], full[start + len(bare) :]
    text = lambda ids: "".join(tokenizer.convert_ids_to_tokens(ids)) if ids else ""  # noqa: E731
    return text(before), text(after)
