"""Our token ids are TRL's: each pair tokenized by `reward.formatting.tokenize_pairs` and by the
installed TRL's own `RewardTrainer._prepare_dataset` (EOS appended unless present, prompt + response
joined as text, `tokenizer(text)` with its special tokens). Then every format (explicit with and
without margin, implicit, conversational, conversational implicit) with the tiny tokenizer (adds BOS)
and a GPT-2-style one (no BOS, no pad token): the same rows kept and the same pairs dropped at a
`max_length` that cuts the longer half. Step-for-step training parity: tests/test_trl_parity.py."""

from __future__ import annotations

import pytest
from conftest import build_gpt2_style_tokenizer
from datasets import Dataset

from reward.data import CONVERSATIONAL, EXPLICIT, IMPLICIT
from reward.formatting import tokenize_pairs
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import build_tiny_tokenizer

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


# --- every format, two tokenizers, max_length drops --------------------------------------------------
def token_rows(kind: str, eos: str) -> tuple[Dataset, str]:
    """30 synthetic pairs in the requested format, plus rows that end with EOS already and long rows."""
    base = generate_pairs(30, seed=21)
    base[0]["chosen"] += eos  # "unless it already ends with EOS"
    base[1]["rejected"] += eos
    for row in base[2:6]:  # long enough to be dropped
        row["chosen"] += " and then some more words" * 6
    if kind == "explicit":
        return Dataset.from_list(base), EXPLICIT
    if kind == "explicit-margin":
        return Dataset.from_list([{**r, "margin": i / 7} for i, r in enumerate(base)]), EXPLICIT
    if kind == "implicit":
        return Dataset.from_list(
            [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in base]
        ), IMPLICIT

    def user(text):
        return [{"role": "user", "content": text}]

    def assistant(text):
        return [{"role": "assistant", "content": text.removesuffix(eos).strip()}]

    if kind == "conversational":
        return Dataset.from_list(
            [
                {"prompt": user(r["prompt"]), "chosen": assistant(r["chosen"]), "rejected": assistant(r["rejected"])}
                for r in base
            ]
        ), CONVERSATIONAL
    if kind == "conversational-implicit":
        return Dataset.from_list(
            [
                {
                    "chosen": user(r["prompt"]) + assistant(r["chosen"]),
                    "rejected": user(r["prompt"]) + assistant(r["rejected"]),
                }
                for r in base
            ]
        ), CONVERSATIONAL
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind,tokenizer_name",
    [
        ("explicit", "tiny"),
        ("explicit-margin", "tiny"),
        ("implicit", "tiny"),
        ("conversational", "tiny"),
        ("conversational-implicit", "tiny"),
        ("explicit", "gpt2"),  # no BOS added, no pad token
        ("implicit", "gpt2"),
    ],
)
def test_token_ids_match_trl(kind, tokenizer_name, tmp_path):
    tokenizer = build_tiny_tokenizer() if tokenizer_name == "tiny" else build_gpt2_style_tokenizer()
    data, fmt = token_rows(kind, tokenizer.eos_token)
    full, _ = tokenize_pairs(data, tokenizer, fmt, max_length=None)
    longest = sorted(max(len(c), len(r)) for c, r in zip(full["chosen_ids"], full["rejected_ids"]))
    max_length = longest[len(longest) // 2]  # drops the longer half (ties kept on both sides)

    ours, stats = tokenize_pairs(data, tokenizer, fmt, max_length=max_length)
    args = trl.RewardConfig(
        output_dir=str(tmp_path),
        max_length=max_length,
        bf16=False,
        use_cpu=True,
        activation_checkpointing=False,
        report_to="none",
    )
    bare = trl.RewardTrainer.__new__(trl.RewardTrainer)  # `_prepare_dataset` reads no trainer state
    theirs = trl.RewardTrainer._prepare_dataset(bare, data, tokenizer, args, "train")

    assert 0 < stats.dropped_too_long < len(data)
    assert len(ours) == len(theirs) == stats.kept
    assert ours["chosen_ids"] == theirs["chosen_ids"]
    assert ours["rejected_ids"] == theirs["rejected_ids"]
    if kind == "explicit-margin":
        assert ours["margin"] == theirs["margin"]
    if tokenizer_name == "tiny":
        assert all(ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id for ids in ours["chosen_ids"])
    if not kind.startswith("conversational"):
        assert all(
            ids[-1] == tokenizer.eos_token_id and ids[-2] != tokenizer.eos_token_id for ids in ours["chosen_ids"]
        )
