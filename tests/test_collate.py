"""The pairwise collator: the exact example from its docstring, plus padding rules."""

import torch

from reward.collate import PairwiseCollator, pad_right


def test_docstring_example_exactly():
    collate = PairwiseCollator(pad_token_id=0)
    batch = collate(
        [
            {"chosen_ids": [5, 6, 7], "rejected_ids": [5, 8], "margin": 1.5},
            {"chosen_ids": [9], "rejected_ids": [9, 4, 4, 2]},
        ]
    )
    assert torch.equal(batch.input_ids, torch.tensor([[5, 6, 7, 0], [9, 0, 0, 0], [5, 8, 0, 0], [9, 4, 4, 2]]))
    assert torch.equal(batch.attention_mask, torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]))
    assert torch.equal(batch.margin, torch.tensor([1.5, 0.0]))
    assert batch.input_ids.dtype == torch.long and batch.margin.dtype == torch.float32


def test_rows_i_and_b_plus_i_are_one_pair():
    pairs = [{"chosen_ids": [10 + i], "rejected_ids": [20 + i, 1]} for i in range(3)]
    ids = PairwiseCollator(pad_token_id=0)(pairs).input_ids  # (6, 2)
    for i in range(3):
        assert ids[i, 0] == 10 + i and ids[3 + i, 0] == 20 + i


def test_pad_to_multiple_of_rounds_up_and_pads_with_pad_id():
    batch = PairwiseCollator(pad_token_id=3, pad_to_multiple_of=8)(
        [{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 8]}, {"chosen_ids": [9], "rejected_ids": [9, 4, 4, 2]}]
    )
    assert batch.input_ids.shape == (4, 8)
    assert (batch.input_ids[:, 4:] == 3).all() and (batch.attention_mask[:, 4:] == 0).all()
    # already a multiple: unchanged
    ids, _ = pad_right([[1] * 8], pad_token_id=0, pad_to_multiple_of=8)
    assert ids.shape == (1, 8)


def test_attention_mask_counts_real_tokens():
    pairs = [{"chosen_ids": [1] * n, "rejected_ids": [2] * (n + 2)} for n in (1, 4, 2)]
    mask = PairwiseCollator(pad_token_id=0)(pairs).attention_mask
    assert mask.sum(dim=1).tolist() == [1, 4, 2, 3, 6, 4]
