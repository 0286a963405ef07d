"""The pairwise collator: B preference pairs -> one padded batch of 2B sequences.

Chosen and rejected go through the model in a single forward pass, stacked as [all chosen; all
rejected], so row i and row B + i are the two sides of pair i. Padding is on the right; the
sequence-classification head reads each row's reward at its last non-pad token.
"""

from __future__ import annotations

import torch


class PairwiseCollator:
    """Collate `{"chosen_ids", "rejected_ids", "margin"?}` rows into model inputs.

    Exact example (pad_token_id=0):

    >>> collate = PairwiseCollator(pad_token_id=0)
    >>> batch = collate([
    ...     {"chosen_ids": [5, 6, 7], "rejected_ids": [5, 8], "margin": 1.5},
    ...     {"chosen_ids": [9], "rejected_ids": [9, 4, 4, 2]},
    ... ])
    >>> batch["input_ids"]
    tensor([[5, 6, 7, 0],
            [9, 0, 0, 0],
            [5, 8, 0, 0],
            [9, 4, 4, 2]])
    >>> batch["attention_mask"]
    tensor([[1, 1, 1, 0],
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 1, 1]])
    >>> batch["margin"]
    tensor([1.5000, 0.0000])

    With `pad_to_multiple_of=8` the same pairs give shape (4, 8). A missing margin counts as 0,
    which leaves the loss unchanged: -logsigmoid(delta - 0) = -logsigmoid(delta).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        if pad_token_id is None:
            raise ValueError("PairwiseCollator needs a pad_token_id")
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, pairs: list[dict]) -> dict[str, torch.Tensor]:
        if not pairs:
            raise ValueError("cannot collate an empty list of pairs")
        sequences = [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs]  # 2B lists
        input_ids, attention_mask = pad_right(sequences, self.pad_token_id, self.pad_to_multiple_of)  # (2B, T)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "margin": margins(pairs)}


def pad_right(
    sequences: list[list[int]], pad_token_id: int, pad_to_multiple_of: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """N token lists -> (input_ids, attention_mask), both (N, T), padded on the right.

    >>> pad_right([[7, 8], [9]], pad_token_id=0)
    (tensor([[7, 8],
            [9, 0]]), tensor([[1, 1],
            [1, 0]]))
    """
    length = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of  # round up
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)  # (N, T)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)  # (N, T)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


def margins(pairs: list[dict]) -> torch.Tensor:
    """(B,) float32: each pair's margin, 0 where it has none (shared by the packed collator)."""
    return torch.tensor([float(p.get("margin") or 0.0) for p in pairs], dtype=torch.float32)  # (B,)
