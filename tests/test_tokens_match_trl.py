"""Our token ids are TRL's: each pair tokenized by `reward.formatting.tokenize_pairs` and by the
installed TRL's own `RewardTrainer._prepare_dataset` (EOS appended unless present, prompt + response
joined as text, `tokenizer(text)` with its special tokens). Split from tests/test_data.py; the other
formats and a GPT-2 tokenizer are in tests/test_trl_parity.py::test_token_ids_match_trl."""

from __future__ import annotations

import pytest
from datasets import Dataset

from reward.data import EXPLICIT, IMPLICIT
from reward.formatting import tokenize_pairs
from reward.presets.synthetic import generate_pairs

trl = pytest.importorskip("trl")


def trl_token_ids(data: Dataset, tokenizer, tmp_path) -> Dataset:
    args = trl.RewardConfig(output_dir=str(tmp_path), max_length=None, bf16=False, use_cpu=True, report_to="none")
    # `_prepare_dataset` reads no trainer state, so a bare instance stands in for a built trainer
    return trl.RewardTrainer._prepare_dataset(trl.RewardTrainer.__new__(trl.RewardTrainer), data, tokenizer, args, "t")


def test_explicit_prompt_ids_match_trl(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    data = Dataset.from_list(generate_pairs(5, seed=0))
    ours, _ = tokenize_pairs(data, tok, EXPLICIT, max_length=None)
    theirs = trl_token_ids(data, tok, tmp_path)
    for side in ("chosen_ids", "rejected_ids"):
        assert ours[side] == theirs[side]
    for ids in [*ours["chosen_ids"], *ours["rejected_ids"]]:  # BOS once at the start, EOS once at the end
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert ids.count(tok.eos_token_id) == 1 and ids.count(tok.bos_token_id) == 1


def test_implicit_prompt_ids_match_trl(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    rows = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in generate_pairs(4)]
    data = Dataset.from_list(rows)
    ours, _ = tokenize_pairs(data, tok, IMPLICIT, max_length=None)
    theirs = trl_token_ids(data, tok, tmp_path)
    assert ours["chosen_ids"] == theirs["chosen_ids"] and ours["rejected_ids"] == theirs["rejected_ids"]
    assert all(ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id for ids in ours["chosen_ids"])
