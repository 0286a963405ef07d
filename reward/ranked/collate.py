r"""A micro-batch of prompts, each with its K responses: one packed segment per prompt.

Expanded into pairs, a ranking of K responses costs 2·C(K, 2) sequences: K = 4 runs the prompt 12
times and each response 3 times. Grouped (--rankings grouped, the default for ranked data), a prompt's
responses share one segment

    [P | R1' | R2' | ... | RK']      P: the longest token prefix common to all K sequences

laid out with the pair path's machinery (reward/fast/layout.py `shared_segment`, `lay_out`): every
Rk' attends to P and to itself, never to another response, and its positions go on from len(P), so
each response's reward is the one its own padded row gives (tests/test_rankings_grouped.py checks
rewards and gradients against K separate padded forwards). The prompt is computed once per prompt and
each response once. Where packing does not apply (an encoder, or an architecture off the allow-list:
reward/fast/packed_forward.py `supports_packing`) the same batch runs as one padded (S, T) forward.

A prompt's responses never split across micro-batches: the loss of a prompt (all-pairs or
Plackett–Luce, reward/ranked/loss.py) needs all of its rewards in one graph.

    RankedCollator(pad_token_id, max_tokens_per_row="all", share_prefix=True)(rows) -> RankedBatch
    batch.rewards(model) -> (S,) float32, the rewards of every response, prompt by prompt
    group_for_training(pairs, objective) -> one row per prompt

A `RankedBatch` is a micro-batch like any other to the loop (reward/collate.py `MicroBatch`), and
reward/ranked/loss.py `RankingObjective` is its objective (reward/loss.py `Objective`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc  # datasets' own storage layer
import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel

from reward.errors import UserError
from reward.fast.layout import Rows, lay_out, shared_segment, unshared_segment
from reward.fast.packed_forward import forward_segments, padded_forward, supports_packing
from reward.fast.packing import packs
from reward.ranked.loss import Comparisons, RankingObjective
from reward.ranked.rows import group_rankings


@dataclass
class RankedBatch:
    """P prompts and their S = Σ K_p responses, numbered consecutively prompt by prompt."""

    sequences: list[list[int]]  # S token lists: prompt + response, as tokenized for the pair path
    comparisons: Comparisons  # the kept comparisons, as indices into the S rewards
    orders: list[torch.Tensor]  # per prompt: its response indices into the S rewards, best score first
    pad_token_id: int
    rows: Rows | None  # the packed layout; None: one padded (S, T) forward
    scores: torch.Tensor | None = None  # (S,) float32: each response's score (a rating: reward/labels/loss.py)

    @property
    def num_prompts(self) -> int:
        return len(self.orders)

    @property
    def sequence_tokens(self) -> int:
        """Real tokens of the S sequences, each computed on its own (what a padded forward runs, padding excluded)."""
        return sum(map(len, self.sequences))

    @property
    def num_tokens(self) -> int:
        """Tokens the packed forward computes: the prompt once per prompt, each response once."""
        return self.rows.num_tokens if self.rows is not None else self.sequence_tokens

    def rewards(self, model: nn.Module) -> torch.Tensor:
        """(S,) float32: every response's reward, packed where the model supports it, else padded.
        Call it inside the same autocast context as `compute_rewards`."""
        if self.rows is not None and supports_packing(model):
            return forward_segments(model, self.rows, self.pad_token_id)  # (S,)
        return padded_forward(model, self.sequences, self.pad_token_id)  # (S,)


def ranked_batch(
    rows: list[dict],
    pad_token_id: int,
    max_tokens_per_row: int | str | None = "all",
    share_prefix: bool = True,
    packed: bool = True,
) -> RankedBatch:
    """Grouped ranked rows (reward/ranked/rows.py `group_rankings`) -> one micro-batch.

    Exact example (pad 0): two responses [5, 6, 7] and [5, 6, 8, 9] of one prompt share [5, 6]; a
    second prompt's three responses share [3].

    >>> b = ranked_batch([
    ...     {"completion_ids": [[5, 6, 7], [5, 6, 8, 9]], "scores": [1.0, 0.0], "better": [0], "worse": [1],
    ...      "tied": [False]},
    ...     {"completion_ids": [[3, 4], [3, 1], [3, 2]], "scores": [0.0, 2.0, 1.0], "better": [1, 1, 2],
    ...      "worse": [0, 2, 0], "tied": [False, False, False]}], pad_token_id=0)
    >>> b.rows.input_ids, b.rows.segments
    (tensor([[5, 6, 7, 8, 9, 3, 4, 1, 2]]), [(0, 0, 2, 1, 2), (0, 5, 1, 1, 1, 1)])
    >>> b.comparisons.better.tolist(), b.comparisons.worse.tolist(), [o.tolist() for o in b.orders]
    ([0, 3, 3, 4], [1, 2, 4, 2], [[0, 1], [3, 4, 2]])
    >>> b.num_tokens, b.sequence_tokens
    (9, 13)
    """
    if not rows:
        raise ValueError("cannot collate an empty list of prompts")
    if pad_token_id is None:
        raise ValueError("RankedCollator needs a pad_token_id")
    sequences, better, worse, tied, prompt, per_prompt, orders = [], [], [], [], [], [], []
    offsets = []  # where each prompt's responses start among the S sequences
    for p, row in enumerate(rows):
        offset, k = len(sequences), len(row["completion_ids"])
        offsets.append(offset)
        sequences += [list(ids) for ids in row["completion_ids"]]
        better += [offset + i for i in row["better"]]
        worse += [offset + i for i in row["worse"]]
        tied += list(row["tied"])
        prompt += [p] * len(row["better"])
        per_prompt.append(len(row["better"]))
        by_score = sorted(range(k), key=lambda i: -row["scores"][i])  # stable: equal scores keep index order
        orders.append(torch.tensor([offset + i for i in by_score], dtype=torch.long))
    if not all(sequences):
        raise ValueError("cannot pack an empty token sequence (it has no token to read a reward at)")
    comparisons = Comparisons(
        better=torch.tensor(better, dtype=torch.long),
        worse=torch.tensor(worse, dtype=torch.long),
        tied=torch.tensor(tied, dtype=torch.bool),
        prompt=torch.tensor(prompt, dtype=torch.long),
        per_prompt=torch.tensor(per_prompt, dtype=torch.long),
        ties_skipped=0,  # counted once, at the data stage
    )
    layout = None
    if packed:
        if share_prefix:  # one segment per prompt: [P | R1' | ... | RK']
            ends = [*offsets[1:], len(sequences)]
            spans = zip(offsets, ends)
            segments = [shared_segment([(n, sequences[n]) for n in range(a, b)], pad_token_id) for a, b in spans]
        else:
            segments = [unshared_segment(n, ids, pad_token_id) for n, ids in enumerate(sequences)]
        layout = lay_out(segments, len(sequences), pad_token_id, max_tokens_per_row)
    scores = torch.tensor([float(s) for row in rows for s in row["scores"]], dtype=torch.float32)  # (S,)
    return RankedBatch(sequences, comparisons, orders, pad_token_id, layout, scores)


@dataclass
class RankedCollator:
    """`ranked_batch` with fixed options. `packed=False` gives the padded (S, T) batch (the reference)."""

    pad_token_id: int
    max_tokens_per_row: int | str | None = "all"  # as PackingCollator: "all" one row, N per row, None one each
    share_prefix: bool = True
    packed: bool = True

    def __call__(self, rows: list[dict]) -> RankedBatch:
        return ranked_batch(rows, self.pad_token_id, self.max_tokens_per_row, self.share_prefix, self.packed)

    def describe(self, model: PreTrainedModel, order: str) -> str:
        """The start-up `forward:` line (reward/fast/packing.py `describe_forward` asks for it)."""
        if self.packed and supports_packing(model):
            layout = "one padding-free row" if self.max_tokens_per_row == "all" else "one row per prompt"
            segment = "[P | R1' | ... | RK'], the prompt computed once" if self.share_prefix else "unshared sequences"
            return f"{order} micro-batches of prompts packed into {layout}: {segment} (reward/ranked/collate.py)"
        return (
            f"{order} micro-batches of prompts as one padded (S, T) batch of their responses (reward/ranked/collate.py)"
        )


def ranked_collator(
    pad_token_id: int, padding_free: bool, share_prefix: bool, model: nn.Module | None = None
) -> RankedCollator:
    """Training's collator for grouped prompts, laid out as the pair options say (reward/fast/packing.py
    `pair_collator`): packed unless both are off or the model is an encoder (then one padded (S, T) batch)."""
    packed = packs(padding_free, share_prefix, model)
    return RankedCollator(pad_token_id, "all" if padding_free else None, share_prefix, packed=packed)


def prompt_lengths(ds: Dataset) -> list[int]:
    """Per grouped prompt, its responses' lengths summed (what it costs padded: the length-grouped order's key).

    >>> rows = [{"completion_ids": [[5, 6], [5], [5, 7, 8]]}, {"completion_ids": [[1], [2]]}]
    >>> prompt_lengths(Dataset.from_list(rows))
    [6, 2]
    """
    lists = ds.select_columns(["completion_ids"]).with_format("arrow")[:]["completion_ids"].combine_chunks()
    inner = pc.list_value_length(lists.flatten()).to_numpy()  # (S,) every response's length
    ends = np.concatenate([[0], np.cumsum(inner)])  # (S + 1,)
    offsets = lists.offsets.to_numpy() - lists.offsets[0].as_py()  # (P + 1,) responses per prompt
    return (ends[offsets[1:]] - ends[offsets[:-1]]).tolist()


def group_for_training(pairs: Dataset, objective: RankingObjective) -> tuple[Dataset, str]:
    """The tokenized comparisons (after every drop) as one row per prompt, and the start-up line about it
    (with the divisor of an epoch: what `objective.row_units` counts)."""
    rows = group_rankings(pairs)
    if objective.loss == "plackett_luce":
        tied = sum(len(set(scores)) < len(scores) for scores in rows["scores"])
        if tied:
            raise UserError(
                f"--ranking_loss plackett_luce needs a strict order, and {tied} of {len(rows)} prompts have tied "
                "scores; use --ranking_loss bradley_terry (ties skipped or, with --tie_handling half, trained toward ½)"
            )
    units = objective.row_units(rows)
    name = "all-pairs Bradley–Terry" if objective.loss == "bradley_terry" else "Plackett–Luce"
    weight = "every comparison alike" if objective.normalization == "comparison" else "every prompt alike"
    line = f"rankings: grouped, {len(rows)} prompts ({len(pairs)} comparisons) | {name}, {weight}"
    return rows, line + f" | divisor {sum(units)} per epoch"
