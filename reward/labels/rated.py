"""Rated completions as training reads them (issue #31): `{"prompt"?, "completion", "score"}` rows, one
rating each (HelpSteer2's 0-4 helpfulness, a 1-10 judge score), trained by regression (reward/labels/loss.py
`RegressionObjective`, docs/loss.md §11).

    RATED_ROWS         the format reward/run/rows.py adds to reward/data.py: recognised, checked row by row, grouped
    group_ratings      rows -> one row per prompt {"prompt", "completions", "scores"}: each run of adjacent
                       rows with one prompt, before the held-out split, so a group is held out whole
    tokenize_ratings   each completion as the pair path encodes a response (reward/formatting.py
                       `encode_sequence`); the over-long ones dropped and counted; the rows the loop reads:
                       completion_ids, scores and the pairs the ratings imply (better / worse / tied), the
                       schema of a grouped ranking, so reward/ranked/collate.py packs each prompt as one
                       segment [P | C1' | ... | CK'], the prompt computed once
    rating_scale       μ and σ of the training ratings (the regression's standardisation), saved with the
                       model as config.json `reward_ratings` (score.py reads it back)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.data import PreferenceData, RowFormat
from reward.formatting import SequenceFormat, encode_sequence, require_chat_template
from reward.labels.loss import implied_pairs
from reward.labels.rows import RATED, describe_scores, group_by_prompt, label_kind, label_row_problem

RATINGS_KEY = "reward_ratings"  # config.json: how the rewards relate to the ratings they were trained on


def group_ratings(rows: Dataset) -> Dataset:
    """Validated rated rows as one row per prompt, in file order: {"prompt", "completions", "scores"}, a
    group being a run of adjacent rows with one prompt (reward/labels/rows.py `group_by_prompt`: why runs,
    and the bound). Its completions share one segment (the prompt computed once) and imply its pairs.

    >>> rated = [("a", " x", 1), ("a", " z", 0), ("", "y", 2), ("a", " w", 3)]
    >>> rows = Dataset.from_list([{"prompt": p, "completion": c, "score": s} for p, c, s in rated])
    >>> [(row["prompt"], row["completions"], row["scores"]) for row in group_ratings(rows)]
    [('a', [' x', ' z'], [1.0, 0.0]), ('', ['y'], [2.0]), ('a', [' w'], [3.0])]
    """
    prompts = rows["prompt"] if "prompt" in rows.column_names else [None] * len(rows)
    completions, scores = rows["completion"], [float(s) for s in rows["score"]]
    no_prompt = [] if completions and isinstance(completions[0], list) else ""  # one type per Arrow column
    named = rows["group"] if "group" in rows.column_names else None  # a `group` column splits runs further
    keys = [{"prompt": p} if named is None else {"prompt": p, "group": g} for p, g in zip(prompts, named or prompts)]
    return Dataset.from_list(
        [
            {"prompt": prompts[g[0]] or no_prompt, "completions": [completions[i] for i in g],
             "scores": [scores[i] for i in g]}
            for g in group_by_prompt(keys)
        ]
    )  # fmt: skip


def ungroup_ratings(groups: Dataset) -> Iterator[dict]:
    """`group_ratings`' rows back as rated rows {"prompt", "completion", "score", "group"} (a held-out split to
    score: `group` numbers each row's group, so score.py forms the groups training evaluated)."""
    for number, group in enumerate(groups):
        for completion, score in zip(group["completions"], group["scores"]):
            yield {"prompt": group["prompt"], "completion": completion, "score": score, "group": number}


RATED_ROWS = RowFormat(RATED, lambda columns: label_kind(columns)[0] == RATED, label_row_problem, group_ratings)


def describe_ratings(data: PreferenceData) -> str:
    """The start-up lines of rated data: its size by prompt and completion, then how the ratings are spread."""
    train, test = data.train, data.test
    held = f"{len(test)} prompts ({sum(map(len, test['scores']))} completions)" if test is not None else "none"
    scores = [s for group in train["scores"] for s in group]
    return (
        f"data: {data.source} | format: rated completions -> regression | train {len(train)} prompts "
        f"({len(scores)} rated completions) | held-out {held}\n{describe_scores(scores)}"
    )


@dataclass
class RatedTokens:
    """What tokenizing one split of rated rows kept and dropped."""

    prompts: int
    completions: int
    dropped_too_long: int = 0
    dropped_past_positions: int = 0

    def describe(self, max_length: int | None) -> str:
        kept = f"{self.completions} rated completions of {self.prompts} prompts"
        past = f", {self.dropped_past_positions} past the model's positions" if self.dropped_past_positions else ""
        return f"{kept} (dropped {self.dropped_too_long} over {max_length} tokens{past})"


def encode_rated(
    row: dict,
    tokenizer: PreTrainedTokenizerBase,
    sequence_format: SequenceFormat,
    max_length: int | None,
    position_limit: int | None,
) -> dict:
    """One prompt's completions as token ids, the ones over `max_length` (or the model's positions) dropped, and
    the pairs the kept ones' ratings imply, as indices into them."""
    ids, scores, too_long, past = [], [], 0, 0
    for completion, score in zip(row["completions"], row["scores"]):
        sequence = encode_sequence(row["prompt"] or None, completion, tokenizer, sequence_format)
        if max_length is not None and len(sequence) > max_length:  # TRL's rule: a sequence at the limit is kept
            too_long += 1
        elif position_limit is not None and len(sequence) > position_limit:
            past += 1
        else:
            ids.append(sequence)
            scores.append(score)
    better, worse = implied_pairs([scores])
    return {"completion_ids": ids, "scores": scores, "better": better, "worse": worse, "tied": [False] * len(better),
            "too_long": too_long, "past_positions": past}  # fmt: skip


def tokenize_ratings(
    rows: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    sequence_format: SequenceFormat,
    max_length: int | None,
    num_proc: int | None = None,
    split: str = "train",
    position_limit: int | None = None,
) -> tuple[Dataset, RatedTokens]:
    """Every prompt's completions as ids (see `encode_rated`); a prompt left with none is dropped."""
    chat = len(rows) and isinstance(rows[0]["completions"][0], list)
    if chat or sequence_format.text_as_chat:
        require_chat_template(tokenizer)  # before the first row, not inside datasets.map
    options = {"tokenizer": tokenizer, "sequence_format": sequence_format, "max_length": max_length}
    out = rows.map(encode_rated, fn_kwargs={**options, "position_limit": position_limit},
                   remove_columns=rows.column_names, num_proc=num_proc, desc=f"Tokenizing {split}")  # fmt: skip
    if not len(out):
        return out, RatedTokens(0, 0)
    too_long, past = sum(out["too_long"]), sum(out["past_positions"])
    out = out.remove_columns(["too_long", "past_positions"])
    out = out.filter(lambda ids: [bool(i) for i in ids], input_columns=["completion_ids"], batched=True)
    return out, RatedTokens(len(out), sum(map(len, out["scores"])), too_long, past)


@dataclass(frozen=True)
class RatingScale:
    """The regression's standardisation: the reward estimates (score − mean) / std (docs/loss.md §11)."""

    mean: float = 0.0
    std: float = 1.0
    standardized: bool = False

    def describe(self) -> str:
        if not self.standardized:
            return "regression on the raw ratings (--rating_standardize false): the reward estimates the rating"
        return (
            f"regression on (rating − {self.mean:.4g}) / {self.std:.4g}, the training ratings' mean and std: "
            f"reward × {self.std:.4g} + {self.mean:.4g} estimates the rating"
        )


def rating_scale(rows: Dataset, standardize: bool) -> RatingScale:
    """μ and σ (population) of the training split's kept ratings; σ = 1 when they are all equal."""
    if not standardize:
        return RatingScale()
    scores = [s for group in rows["scores"] for s in group]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return RatingScale(mean, std if std > 0 else 1.0, True)


def record_rating_scale(model: PreTrainedModel, scale: RatingScale, pair_weight: float) -> None:
    """Saved with the model (config.json `reward_ratings`): what its reward means on the rating scale."""
    setattr(model.config, RATINGS_KEY, {**asdict(scale), "pair_weight": pair_weight})


def read_rating_scale(config: object) -> RatingScale | None:
    """The scale a saved model was trained on, or None (a model trained on pairs)."""
    saved = getattr(config, RATINGS_KEY, None)
    if not isinstance(saved, dict):
        return None
    return RatingScale(float(saved.get("mean", 0.0)), float(saved.get("std", 1.0)), bool(saved.get("standardized")))
