"""One length rule for every scoring path: score.py, `RewardScorer`, `RewardFunction`, the consumer check.

The limit. A model with learned absolute positions takes at most that many tokens (reward/model.py
`position_limit`: BERT 512, GPT-2 1024; one token more fails inside its embedding, "expanded size (595)
must match (512)"); a RoPE model has no such table. `max_length` (score.py `--max_length`,
`RewardScorer(max_length=...)`) may set a lower limit. By default there is none beyond the positions:
training's `--max_length` decides which *training pairs* are worth their memory, it is not a property
of the model (a RoPE model scores longer text the way it scores any text), and taking it from the
folder's training_config.json would change the rewards a folder gives depending on how it was trained
rather than on what it can read. Pass `--max_length` to score as training filtered.

The policy (`truncation`), for a sequence over the limit:

    left   the default: keep its last tokens. The reward is read at the end (a decoder's last token,
           its EOS; the chat template's end of turn), so the response and the token the head reads
           stay and the start of the prompt goes; a leading special token (BOS, an encoder's [CLS],
           which its head reads) is kept in front. RewardBench truncates on the same side. Every row
           gets a reward, and the count (and rows) truncated is said.
    skip   no reward: None (null in score.py's output), counted and listed, as training drops such
           pairs (a pair is skipped whole). TRL's GRPO takes None from a reward function as NaN and
           gives that completion no advantage (trl 1.16 grpo_trainer.py `_calculate_rewards`:
           "Convert None values to NaN"; `_generate_and_score_completions`: unscorable completions are
           left out of the group baseline, their advantage set to 0).
    error  stop with one line naming the rows.

Size before tokenizing. A tokenizer run on a 50 MB row takes minutes and ~9 GB (byte-level BPE, 27M
tokens; measured) or aborts the process when memory runs out, with no error line. No token stands
for more than `chars_per_token` characters (its longest vocabulary entry; a WordPiece [UNK] stands for
a word of up to `max_input_chars_per_word`), so a text of more than limit x that many characters
cannot fit; past MAX_ROW_CHARS too (reward/tokenizer.py `beyond_reach`, the rule training drops such
pairs by) it is never tokenized: it is skipped (whatever the policy but 'error', which stops; it
cannot be cut by tokens without tokenizing it). Every shorter text is tokenized and cut as above. Only
text the tokenizer mostly throws away (runs of whitespace, characters its normalizer drops, fused
unknown characters, words past WordPiece's per-word limit, each one [UNK]) could break the bound: not
text a reward model is meant to judge.
With no token limit at all (a RoPE model, no max_length) a row of more than MAX_ROW_CHARS characters
is skipped the same way: about 250k tokens of English, more than reward models read, ~2 s and 200 MB
of tokenizer work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.errors import UserError
from reward.model import position_limit, unwrap
from reward.tokenizer import HUGE_TEXT_CHARS, beyond_reach

POLICIES = ("left", "skip", "error")
MAX_ROW_CHARS = HUGE_TEXT_CHARS  # with no token limit: a text longer than this is not tokenized
SHOWN = 10  # rows named in a message
KINDS = ("truncated", "skipped", "too_large")


def policy_problem(name: str, value: object) -> str | None:
    """Why `value` is not a truncation policy, naming the option or argument `name`."""
    if value in POLICIES:
        return None
    return f"{name} must be 'left', 'skip' or 'error', got {value!r}"


@dataclass(frozen=True)
class LengthRule:
    """The limit a scorer holds every sequence to, and what happens past it."""

    tokens: int | None  # the most tokens a sequence may have; None: no limit
    why: str  # where the limit comes from, for messages: "the model's 512 positions", "max_length 300"
    policy: str  # one of POLICIES
    chars: int  # a text of more characters than this is not tokenized
    keep: frozenset[int] = field(default_factory=frozenset)  # special ids kept in front when cutting on the left

    @classmethod
    def of(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int | None, policy: str
    ) -> LengthRule:
        positions = position_limit(unwrap(model))
        limits = [(n, why) for n, why in ((positions, f"the model's {positions} positions"),) if n]
        limits += [(max_length, f"max_length {max_length}")] if max_length else []
        tokens, why = min(limits) if limits else (None, "no token limit")
        chars = beyond_reach(tokenizer, tokens) if tokens else MAX_ROW_CHARS  # never below MAX_ROW_CHARS
        return cls(tokens, why, policy, chars, frozenset(tokenizer.all_special_ids))

    def cut(self, ids: list[int]) -> list[int]:
        """The last tokens of an over-long sequence, its first token kept in front when it is a special one.

        >>> LengthRule(4, "", "left", 40, frozenset({1})).cut([1, 5, 6, 7, 8, 9])
        [1, 7, 8, 9]
        >>> LengthRule(4, "", "left", 40, frozenset({1})).cut([5, 6, 7, 8, 9])
        [6, 7, 8, 9]
        """
        head = 1 if ids[0] in self.keep else 0
        return ids[:head] + ids[len(ids) - (self.tokens - head) :]

    def seen_length(self, ids: list[int]) -> int:
        """How many tokens of `ids` the model reads under this rule (a cut sequence: exactly the limit)."""
        return len(ids) if self.tokens is None else min(len(ids), self.tokens)

    def describe(self) -> str:
        """One line for the start of a scoring run."""
        if self.tokens is None:
            return f"lengths: no token limit; texts over {self.chars:,} characters are skipped without tokenizing"
        action = {
            "left": "cut on the left: the start of the prompt goes, a leading special token (BOS, [CLS]) stays",
            "skip": "skipped (no reward)",
            "error": "refused",
        }[self.policy]
        return f"lengths: sequences over {self.tokens} tokens ({self.why}) are {action}"


@dataclass
class Fitting:
    """What the rule did to one call's sequences, each named by (group, position in the group)."""

    rule: LengthRule
    sequences: int
    name: Callable[[int, int], str] = field(default=lambda g, k: f"row {g + 1}")  # a sequence in messages
    truncated: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[int, int]] = field(default_factory=list)  # over the limit, no reward ('skip')
    too_large: list[tuple[int, int]] = field(default_factory=list)  # over rule.chars: never tokenized, no reward

    @property
    def changed(self) -> bool:
        return bool(self.truncated or self.skipped or self.too_large)

    def lines(self, unit: str = "sequences") -> list[str]:
        """What happened, one line per kind, naming the first SHOWN sequences (`unit`: "rows", "completions")."""
        rule, out, name = self.rule, [], self.name
        if self.truncated:
            out.append(
                f"truncated {len(self.truncated)} of {self.sequences} {unit} over {rule.tokens} tokens ({rule.why}) "
                f"on the left to {rule.tokens} (the start cut, a leading special token kept): "
                f"{named(self.truncated, name)}"
            )
        if self.skipped:
            out.append(
                f"skipped {len(self.skipped)} of {self.sequences} {unit} over {rule.tokens} tokens ({rule.why}), "
                f"no reward: {named(self.skipped, name)}"
            )
        if self.too_large:
            out.append(
                f"skipped {len(self.too_large)} of {self.sequences} {unit} of more than {rule.chars:,} characters "
                f"(more than {too_large_why(rule)}), not tokenized, no reward: {named(self.too_large, name)}"
            )
        return out

    def to_dict(self) -> dict:
        """The limit, the policy and the sequences each kind holds, by name (score.py's summary)."""
        names = {kind: list(dict.fromkeys(self.name(*s) for s in getattr(self, kind))) for kind in KINDS}
        return {"limit": self.rule.tokens, "truncation": self.rule.policy, **names}


def too_large_why(rule: LengthRule) -> str:
    if rule.tokens is None:
        return "scoring tokenizes with no token limit; max_length sets one"
    return f"{rule.tokens} tokens can hold"


def named(where: list[tuple[int, int]], name: Callable[[int, int], str]) -> str:
    """The first SHOWN names of the sequences `where` lists (a row's sides named once)."""
    names = list(dict.fromkeys(name(g, k) for g, k in where))
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def fit_groups(
    rule: LengthRule,
    groups: list[list[list[int] | None]],
    whole: bool = False,
    name: Callable[[int, int], str] | None = None,
) -> tuple[list[list[list[int] | None]], Fitting]:
    """Every sequence within the limit: kept, cut on the left, or None (not scored); None in `groups` is a
    text that was too large to tokenize. `whole`: a group with an unscored sequence is unscored whole (a
    pair has no reward difference without both sides). Raises the one-line error under policy 'error'."""
    fitting = Fitting(rule, sum(map(len, groups)), **({"name": name} if name else {}))
    out = []
    for g, group in enumerate(groups):
        fitted: list[list[int] | None] = []
        for k, ids in enumerate(group):
            if ids is None:
                fitting.too_large.append((g, k))
                fitted.append(None)
            elif rule.tokens is None or len(ids) <= rule.tokens:
                fitted.append(ids)
            elif rule.policy == "left":
                fitting.truncated.append((g, k))
                fitted.append(rule.cut(ids))
            else:
                fitting.skipped.append((g, k))
                fitted.append(None)
        out.append([None] * len(fitted) if whole and None in fitted else fitted)
    if rule.policy == "error" and (fitting.skipped or fitting.too_large):
        over = []
        if fitting.skipped:
            over.append(
                f"{len(fitting.skipped)} of {fitting.sequences} sequences are longer than {rule.tokens} tokens "
                f"({rule.why}): {named(fitting.skipped, fitting.name)}"
            )
        if fitting.too_large:
            over.append(
                f"{len(fitting.too_large)} of {fitting.sequences} texts have more than {rule.chars:,} characters "
                f"(more than {too_large_why(rule)}): {named(fitting.too_large, fitting.name)}"
            )
        raise UserError(
            f"{'; '.join(over)} (truncation 'left' scores the last tokens of a long one, 'skip' leaves it without "
            "a reward)"
        )
    return out, fitting
