"""Loading preference data (formats, file types, held-out split, errors) and tokenizing it as TRL does."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from datasets import Dataset

from reward.data import CONVERSATIONAL, EXPLICIT, IMPLICIT, load_preferences, subset_column
from reward.errors import UserError
from reward.formatting import tokenize_pairs
from reward.presets.synthetic import generate_pairs


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def explicit_rows(n: int, seed: int = 0) -> list[dict]:
    return generate_pairs(n, seed=seed)


def implicit_rows(n: int) -> list[dict]:
    return [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in explicit_rows(n)]


def conversational_rows(n: int, with_prompt: bool) -> list[dict]:
    rows = []
    for r in explicit_rows(n):
        user = [{"role": "user", "content": r["prompt"]}]
        chosen = [{"role": "assistant", "content": r["chosen"].strip()}]
        rejected = [{"role": "assistant", "content": r["rejected"].strip()}]
        if with_prompt:
            rows.append({"prompt": user, "chosen": chosen, "rejected": rejected})
        else:
            rows.append({"chosen": user + chosen, "rejected": user + rejected})
    return rows


FORMATS = {
    "explicit": (lambda n: explicit_rows(n), EXPLICIT),
    "implicit": (lambda n: implicit_rows(n), IMPLICIT),
    "conversational+prompt": (lambda n: conversational_rows(n, True), CONVERSATIONAL),
    "conversational": (lambda n: conversational_rows(n, False), CONVERSATIONAL),
}


# --- formats ------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_margin", [False, True], ids=["no-margin", "margin"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_each_format_is_detected_and_loads(tmp_path, name, with_margin):
    make, expected_format = FORMATS[name]
    rows = make(6)
    if with_margin:
        rows = [{**r, "margin": 0.5 * i} for i, r in enumerate(rows)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)

    data = load_preferences(str(path), eval_split_size=0)

    assert data.format == expected_format
    assert data.has_margin is with_margin
    assert data.train.to_list() == rows
    assert data.test is None and data.held_out is False
    assert data.source == str(path)


# --- file types ---------------------------------------------------------------------------------


def write_json_array(path: Path, rows: list[dict]) -> None:
    path.write_text(json.dumps(rows))


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_parquet(path: Path, rows: list[dict]) -> None:
    Dataset.from_list(rows).to_parquet(str(path))


WRITERS = {
    ".jsonl": write_jsonl,
    ".json": write_json_array,
    ".csv": write_csv,
    ".parquet": write_parquet,
}


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_each_file_type_loads(tmp_path, suffix):
    rows = explicit_rows(7)
    path = tmp_path / f"pairs{suffix}"
    WRITERS[suffix](path, rows)

    data = load_preferences(str(path), eval_split_size=0)

    assert data.format == EXPLICIT
    assert data.train.to_list() == rows
    assert data.source == str(path)
    assert data.test is None


def test_parquet_keeps_conversational_format(tmp_path):
    rows = conversational_rows(5, with_prompt=True)
    path = tmp_path / "chat.parquet"
    write_parquet(path, rows)
    data = load_preferences(str(path), eval_split_size=0)
    assert data.format == CONVERSATIONAL
    assert data.train.to_list() == rows


def test_folder_with_train_and_test_uses_test_as_eval(tmp_path):
    train_rows, test_rows = explicit_rows(6, seed=1), explicit_rows(3, seed=2)
    write_jsonl(tmp_path / "train.jsonl", train_rows)
    write_jsonl(tmp_path / "test.jsonl", test_rows)

    # eval_split_size is ignored when the source has its own test split
    data = load_preferences(str(tmp_path), eval_split_size=0.5)

    assert data.train.to_list() == train_rows
    assert data.test is not None and data.test.to_list() == test_rows
    assert data.held_out is False
    assert data.source == str(tmp_path)


def test_dataset_object_is_accepted():
    rows = implicit_rows(5)
    data = load_preferences(Dataset.from_list(rows), eval_split_size=0)
    assert data.format == IMPLICIT
    assert data.train.to_list() == rows
    assert data.source == "<Dataset>"


# --- held-out split -----------------------------------------------------------------------------


def test_eval_split_size_holds_out_the_right_count():
    rows = explicit_rows(20)
    data = load_preferences(Dataset.from_list(rows), eval_split_size=0.25, seed=0)

    assert data.held_out is True
    assert data.test is not None
    assert len(data.test) == 5 and len(data.train) == 15
    # a partition of the original rows: nothing lost, nothing duplicated
    together = sorted(json.dumps(r, sort_keys=True) for r in data.train.to_list() + data.test.to_list())
    assert together == sorted(json.dumps(r, sort_keys=True) for r in rows)


def test_eval_split_rounds_up_a_fractional_count():
    data = load_preferences(Dataset.from_list(explicit_rows(15)), eval_split_size=0.1)
    assert len(data.test) == math.ceil(0.1 * 15) == 2
    assert len(data.train) == 13


def test_eval_split_is_deterministic_per_seed_and_changes_with_seed():
    ds = Dataset.from_list([{**r, "id": i} for i, r in enumerate(explicit_rows(30))])

    def held_out_ids(seed: int) -> list[int]:
        return load_preferences(ds, eval_split_size=0.2, seed=seed).test["id"]

    first = held_out_ids(0)
    assert len(first) == 6
    assert held_out_ids(0) == first
    assert sorted(held_out_ids(1)) != sorted(first)


def test_eval_split_size_zero_gives_no_test():
    data = load_preferences(Dataset.from_list(explicit_rows(10)), eval_split_size=0)
    assert data.test is None
    assert data.held_out is False
    assert len(data.train) == 10


# --- errors -------------------------------------------------------------------------------------


def test_missing_rejected_column_names_the_column(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c"}] * 3)
    with pytest.raises(UserError, match="rejected"):
        load_preferences(str(path))


def test_missing_rejected_column_names_the_file(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c"}] * 3)
    with pytest.raises(UserError) as info:
        load_preferences(str(path))
    assert str(path) in str(info.value)


def bad_row_cases() -> list:
    good = explicit_rows(5)
    chat = conversational_rows(5, with_prompt=True)

    def with_row3(rows: list[dict], **change) -> list[dict]:
        rows = [dict(r) for r in rows]
        rows[2].update(change)
        return rows

    return [
        pytest.param(with_row3(good, chosen=None), "'chosen'", "must be a string", id="non-string-chosen"),
        pytest.param(with_row3(good, prompt="", chosen="   "), "'chosen'", "empty", id="empty-chosen-no-prompt"),
        pytest.param(
            with_row3([{**r, "margin": 1.0} for r in good], margin=float("nan")),
            "'margin'",
            "finite",
            id="nan-margin",
        ),
        pytest.param(
            with_row3(chat, rejected=[{"role": "robot", "content": "beep"}]),
            "'rejected'",
            "role",
            id="unknown-role",
        ),
    ]


@pytest.mark.parametrize("rows, field, problem", bad_row_cases())
def test_bad_row_in_jsonl_names_file_row_and_field(tmp_path, rows, field, problem):
    path = tmp_path / "bad.jsonl"
    # json.dumps writes NaN for float("nan"), which the JSON loader reads back as NaN
    write_jsonl(path, rows)
    with pytest.raises(UserError) as info:
        load_preferences(str(path))
    message = str(info.value)
    assert str(path) in message
    assert "row 3:" in message and "1 bad row(s)" in message
    assert field in message and problem in message


def test_bad_row_in_dataset_names_source_row_and_field():
    rows = [{**r, "margin": 1.0} for r in explicit_rows(5)]
    rows[3]["margin"] = float("inf")
    with pytest.raises(UserError) as info:
        load_preferences(Dataset.from_list(rows))
    message = str(info.value)
    assert "<Dataset>" in message and "row 4:" in message and "'margin'" in message


def test_bad_rows_in_test_split_name_the_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", explicit_rows(4))
    test_rows = explicit_rows(3, seed=5)
    test_rows[1] |= {"prompt": "", "rejected": ""}  # an empty response with no prompt: nothing to score
    write_jsonl(tmp_path / "test.jsonl", test_rows)
    with pytest.raises(UserError) as info:
        load_preferences(str(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and "[test]" in message
    assert "row 2:" in message and "'rejected'" in message


def test_conversational_data_needs_a_chat_template(gpt2_tokenizer):
    assert not gpt2_tokenizer.chat_template
    data = load_preferences(Dataset.from_list(conversational_rows(3, with_prompt=True)), eval_split_size=0)
    with pytest.raises(UserError, match="chat template"):
        tokenize_pairs(data.train, gpt2_tokenizer, data.format, max_length=None)


def test_nonexistent_path_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        load_preferences("./nope.jsonl")
    assert "./nope.jsonl" in str(info.value) and "no such file" in str(info.value)


def test_unsupported_suffix_is_a_user_error(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("chosen,rejected\na,b\n")
    with pytest.raises(UserError) as info:
        load_preferences(str(path))
    assert str(path) in str(info.value) and "unsupported file type" in str(info.value)


@pytest.mark.parametrize(
    "rows",
    [
        [{"prompt": "", "chosen": " yes", "rejected": " no"}, {"prompt": "Q.", "chosen": " a", "rejected": " b"}],
        [{"prompt": "2+2=", "chosen": " 4", "rejected": " 5"}, {"prompt": "1+2=", "chosen": " 3", "rejected": " 7"}],
    ],
    ids=["empty-prompt", "numeric-responses"],
)
def test_csv_loads_the_strings_it_holds(tmp_path, rows):
    path = tmp_path / "pairs.csv"
    write_csv(path, rows)
    data = load_preferences(str(path), eval_split_size=0)  # the same rows load fine from JSONL
    assert data.train.to_list() == rows


def test_subset_column_prefers_subset_over_category():
    assert subset_column(["prompt", "chosen", "category", "subset"]) == "subset"
    assert subset_column(["chosen", "category"]) == "category"
    assert subset_column(["chosen", "rejected"]) is None
