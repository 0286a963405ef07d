"""reward/formatting.py: text to token ids (`tokenize_pairs`: EOS once, chat templates, the margin and subset
columns kept, the pairs dropped (over max_length or a model's positions, or chosen == rejected), each counted
once), and the text format chosen from the options (`choose_format`). Ids against TRL's own:
tests/test_tokens_match_trl.py."""

from __future__ import annotations

import pytest
from datasets import Dataset
from test_data import conversational_rows, explicit_rows

from reward.data import CONVERSATIONAL, EXPLICIT, load_preferences
from reward.formatting import tokenize_pairs
from reward.presets.synthetic import generate_pairs


def test_text_already_ending_in_eos_gets_no_second_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    rows = [
        {"prompt": "Name a fruit.", "chosen": " mango." + tok.eos_token, "rejected": " violin."},
        {"prompt": "Name a tool.", "chosen": " saw.", "rejected": " plum." + tok.eos_token},
    ]
    out, _ = tokenize_pairs(Dataset.from_list(rows), tok, EXPLICIT, max_length=None)

    assert out[0]["chosen_ids"] == tok("Name a fruit. mango." + tok.eos_token)["input_ids"]
    assert out[1]["rejected_ids"] == tok("Name a tool. plum." + tok.eos_token)["input_ids"]
    for enc in out:
        for ids in (enc["chosen_ids"], enc["rejected_ids"]):
            assert ids[-1] == tok.eos_token_id
            assert ids.count(tok.eos_token_id) == 1


@pytest.mark.parametrize("with_prompt", [True, False], ids=["prompt-list", "no-prompt"])
def test_conversational_ids_match_chat_template(tiny_tokenizer, with_prompt):
    tok = tiny_tokenizer
    rows = conversational_rows(4, with_prompt=with_prompt)
    out, _ = tokenize_pairs(Dataset.from_list(rows), tok, CONVERSATIONAL, max_length=None)

    for row, enc in zip(rows, out):
        for side in ("chosen", "rejected"):
            messages = row.get("prompt", []) + row[side]
            expected = tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
            ids = enc[f"{side}_ids"]
            assert ids == list(expected)
            assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
        if with_prompt:  # the prompt messages are part of the sequence
            response_only = tok.apply_chat_template(row["chosen"], tokenize=True, return_dict=True)["input_ids"]
            assert len(enc["chosen_ids"]) > len(response_only)


def test_over_long_pairs_are_dropped_and_counted(tiny_tokenizer):
    tok = tiny_tokenizer
    short, long = " ok.", " " + "a very long answer that goes on " * 6
    rows = [
        {"prompt": "P0.", "chosen": short, "rejected": " no."},  # kept
        {"prompt": "P1.", "chosen": long, "rejected": short},  # dropped: chosen too long
        {"prompt": "P2.", "chosen": short, "rejected": long},  # dropped: rejected too long
        {"prompt": "P3.", "chosen": short, "rejected": " fine."},  # kept
        {"prompt": "P4.", "chosen": long, "rejected": long + "!"},  # dropped: both too long
        {"prompt": "P5.", "chosen": " yes.", "rejected": short},  # kept
    ]
    lengths = {
        r["prompt"]: [len(tok(r["prompt"] + r[s] + tok.eos_token)["input_ids"]) for s in ("chosen", "rejected")]
        for r in rows
    }
    # the limit sits exactly at the longest kept sequence: "<= max_length" keeps it
    max_length = max(max(lengths[p]) for p in ("P0.", "P3.", "P5."))
    assert min(lengths["P1."][0], lengths["P2."][1], lengths["P4."][0]) > max_length

    out, stats = tokenize_pairs(Dataset.from_list(rows), tok, EXPLICIT, max_length=max_length)

    assert stats.kept == 3 and stats.dropped_too_long == 3
    assert stats.kept + stats.dropped_too_long == len(rows)
    assert len(out) == 3
    assert [enc["chosen_ids"] for enc in out] == [
        tok(rows[i]["prompt"] + rows[i]["chosen"] + tok.eos_token)["input_ids"] for i in (0, 3, 5)
    ]

    # one token less and the longest kept pair goes too
    _, tighter = tokenize_pairs(Dataset.from_list(rows), tok, EXPLICIT, max_length=max_length - 1)
    assert tighter.kept < 3 and tighter.kept + tighter.dropped_too_long == len(rows)


def test_identical_chosen_and_rejected_are_dropped_and_counted(tiny_tokenizer):
    rows = [
        {"prompt": "Q.", "chosen": " same.", "rejected": " same."},  # no preference: dropped
        {"prompt": "Q.", "chosen": " a.", "rejected": " b."},
        {"prompt": "Q.", "chosen": " x.", "rejected": " x.</s>"},  # identical once EOS is appended
    ]
    out, stats = tokenize_pairs(Dataset.from_list(rows), tiny_tokenizer, EXPLICIT, max_length=1024)
    assert (stats.kept, stats.dropped_identical, stats.dropped_too_long) == (1, 2, 0)
    assert len(out) == 1


def test_each_dropped_pair_is_counted_once_and_the_kept_ones_keep_their_order(tiny_tokenizer):
    """Each pair is judged while it is encoded (`encode_and_judge`), not by filters reading the ids back:
    a pair both identical and over-long counts as identical (the order the two filters had), the
    judging column does not leak out, and a shuffled input (an indices mapping) keeps its order."""
    tok = tiny_tokenizer
    long = " " + "words " * 40
    rows = [
        {"prompt": "A.", "chosen": long, "rejected": long},  # identical and too long: counted as identical
        {"prompt": "B.", "chosen": " b.", "rejected": " c."},  # kept
        {"prompt": "C.", "chosen": long, "rejected": " d."},  # too long
        {"prompt": "D.", "chosen": " e.", "rejected": " e."},  # identical
        {"prompt": "E.", "chosen": " f.", "rejected": " g."},  # kept
    ]
    assert len(tok("A." + long)["input_ids"]) > 20 > len(tok("B. b." + tok.eos_token)["input_ids"])
    data = Dataset.from_list(rows).shuffle(seed=3)
    out, stats = tokenize_pairs(data, tok, EXPLICIT, max_length=20)
    assert (stats.kept, stats.dropped_identical, stats.dropped_too_long) == (2, 2, 1)
    assert out.column_names == ["chosen_ids", "rejected_ids", "margin"]
    kept = [r for r in data if r["prompt"] in ("B.", "E.")]  # in the shuffled order
    assert out["chosen_ids"] == [tok(r["prompt"] + r["chosen"] + tok.eos_token)["input_ids"] for r in kept]
    assert out["rejected_ids"] == [tok(r["prompt"] + r["rejected"] + tok.eos_token)["input_ids"] for r in kept]


def test_tokenize_keeps_the_subset_column(tiny_tokenizer):
    rows = [{**row, "category": "x", "note": "dropped"} for row in generate_pairs(4, seed=2)]
    out, _ = tokenize_pairs(Dataset.from_list(rows), tiny_tokenizer, "explicit prompt", max_length=None)
    assert set(out.column_names) == {"chosen_ids", "rejected_ids", "margin", "category"}
    assert out["category"] == ["x"] * 4


def test_margin_survives_tokenization(tiny_tokenizer):
    margins = [0.5, 1.0, 2.25, 0.0, 3.0]
    rows = [{**r, "margin": m} for r, m in zip(explicit_rows(5), margins)]
    data = load_preferences(Dataset.from_list(rows), eval_split_size=0)
    assert data.has_margin

    out, stats = tokenize_pairs(data.train, tiny_tokenizer, data.format, max_length=None)

    assert out["margin"] == pytest.approx(margins)
    assert stats.kept == 5 and stats.dropped_too_long == 0


def test_missing_margin_column_tokenizes_as_zero(tiny_tokenizer):
    data = load_preferences(Dataset.from_list(explicit_rows(4)), eval_split_size=0)
    assert not data.has_margin
    out, _ = tokenize_pairs(data.train, tiny_tokenizer, data.format, max_length=None)
    assert out["margin"] == [0.0] * 4
    assert set(out.column_names) == {"chosen_ids", "rejected_ids", "margin"}


def test_a_side_too_large_to_fit_is_dropped_without_tokenizing_it(tiny_tokenizer, monkeypatch):
    """A 50 MB row costs minutes and ~9 GB of tokenizer work, or aborts the process (reward/eval/lengths.py):
    a side with more characters than any `max_length` tokens can hold (and over HUGE_TEXT_CHARS) is dropped as
    over-long, counted as such, and never reaches the tokenizer; every other row is judged as before."""
    from reward import formatting
    from reward.tokenizer import HUGE_TEXT_CHARS, beyond_reach

    huge = " word" * (HUGE_TEXT_CHARS // 5 + 1)  # just over 1M characters
    assert len(huge) > beyond_reach(tiny_tokenizer, 20) == HUGE_TEXT_CHARS
    rows = [
        {"prompt": "A.", "chosen": huge, "rejected": " a."},  # too large: dropped untokenized
        {"prompt": "B.", "chosen": " b.", "rejected": " c."},  # kept
        {"prompt": "C.", "chosen": huge, "rejected": huge},  # identical: counted as identical, untokenized too
        {"prompt": "D.", "chosen": " " + "words " * 40, "rejected": " d."},  # over 20 tokens: tokenized, dropped
    ]
    seen = []
    encode = formatting.encode_pair
    monkeypatch.setattr(formatting, "encode_pair", lambda row, *a: seen.append(row["prompt"]) or encode(row, *a))
    out, stats = tokenize_pairs(Dataset.from_list(rows), tiny_tokenizer, EXPLICIT, max_length=20)
    assert (stats.kept, stats.dropped_identical, stats.dropped_too_long) == (1, 1, 2)
    assert seen == ["B.", "D."]  # the huge pairs never reached the tokenizer
    assert out["chosen_ids"] == [tiny_tokenizer("B. b." + tiny_tokenizer.eos_token)["input_ids"]]
