"""Bad input and options: train.py and score.py exit with code 2 and one `error: ...` line (the last one on
stderr) naming the file, the 1-based line/row and the field where there is one; no traceback unless --debug.

Everything runs in-process through `train.cli` / `score.cli`; data errors stop before the model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from conftest import build_gpt2_model, build_gpt2_style_tokenizer
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

import score
import train
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import build_tiny_tokenizer, tiny_config

pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")  # conftest.py


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    """conftest sets HF_HUB_OFFLINE after transformers (hence huggingface_hub) is imported, so the constant
    huggingface_hub reads is still False in this process: a Hub lookup would retry for ~25 s per file."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# --- helpers -------------------------------------------------------------------------------------
def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pairs(n: int = 6) -> list[dict]:
    return generate_pairs(n, seed=1)


def conversation(reply: str = "Of course, happy to help.") -> dict:
    return {
        "prompt": [{"role": "user", "content": "Can you help me?"}],
        "chosen": [{"role": "assistant", "content": reply}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }


def invoke(cli, argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = cli(argv)
    except SystemExit as exc:  # argparse exits on its own for some mistakes
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clean_error(code, err: str, needles) -> str:
    """Exit 2, the last non-empty stderr line is `error: ...` and names every needle; no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err[-3000:]
    assert lines and lines[-1].startswith("error: "), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    for needle in needles:
        assert needle in lines[-1], f"{needle!r} not in {lines[-1]!r}"
    return lines[-1]


def assert_debug_shows_traceback(code, err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback (most recent call last)" in err, err[-3000:]
    assert lines[-1].startswith("error: ")


def check_train_error(argv: list[str], needles, tmp_path: Path, capsys) -> tuple[str, str]:
    """Run train.py's CLI without and with --debug; returns (error line, stdout) of the first run."""
    common = ["--max_steps", "2", "--synthetic_num_pairs", "50", "--disable_tqdm"]
    code, out, err = invoke(train.cli, [*argv, *common, "--output_dir", str(tmp_path / "out")], capsys)
    line = assert_clean_error(code, err, needles)
    code, _, err = invoke(train.cli, [*argv, *common, "--output_dir", str(tmp_path / "out-debug"), "--debug"], capsys)
    assert_debug_shows_traceback(code, err)
    return line, out


def check_score_error(argv: list[str], needles, capsys) -> str:
    code, _, err = invoke(score.cli, argv, capsys)
    line = assert_clean_error(code, err, needles)
    code, _, err = invoke(score.cli, [*argv, "--debug"], capsys)
    assert_debug_shows_traceback(code, err)
    return line


# --- model folders built offline -----------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_models")

    # GPT-2 style: a tokenizer with no chat template (pad := eos)
    gpt2 = root / "gpt2-no-chat-template"
    tokenizer = build_gpt2_style_tokenizer()
    build_gpt2_model(tokenizer).save_pretrained(gpt2)
    tokenizer.save_pretrained(gpt2)
    assert not tokenizer.chat_template

    # a Llama classifier with a 2-label head
    two = root / "two-labels"
    tiny_tokenizer = build_tiny_tokenizer()
    config = tiny_config(tiny_tokenizer)
    config.num_labels = 2
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(two)
    tiny_tokenizer.save_pretrained(two)

    # a tokenizer with neither pad nor eos token
    bare = root / "no-pad-no-eos"
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([r["prompt"] + r["chosen"] for r in pairs(50)], trainer)
    bare_tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok)
    assert bare_tokenizer.pad_token is None and bare_tokenizer.eos_token is None
    bare_tokenizer.save_pretrained(bare)
    config = GPT2Config(vocab_size=len(bare_tokenizer), n_embd=32, n_layer=1, n_head=2, num_labels=1)
    GPT2ForSequenceClassification(config).save_pretrained(bare)
    return {"gpt2": gpt2, "two_labels": two, "no_pad": bare}


# --- train.py: bad data files --------------------------------------------------------------------
def malformed_json(tmp_path):
    rows = pairs(4)
    path = tmp_path / "pairs.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines[2] = lines[2][:-5]  # line 3: cut off
    path.write_text("\n".join(lines) + "\n")
    return path, ["line 3", "malformed JSON"]


def json_line_not_an_object(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pairs(2)) + "[1, 2]\n")
    return path, ["line 3", "expected a JSON object"]


def csv_missing_column(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen\nName a fruit.,mango\n")
    return path, ["missing column(s) rejected", "found prompt, chosen"]


def jsonl_missing_columns(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": r["prompt"], "text": r["chosen"]} for r in pairs()])
    return path, ["missing column(s) chosen, rejected"]


def row_without_chosen(tmp_path):
    rows = pairs()
    del rows[3]["chosen"]
    return write_jsonl(tmp_path / "pairs.jsonl", rows), ["row 4", "field 'chosen' must be a string, got NoneType"]


def row_without_rejected(tmp_path):
    rows = pairs()
    del rows[0]["rejected"]
    return write_jsonl(tmp_path / "pairs.jsonl", rows), ["row 1", "field 'rejected'"]


def non_string_text(tmp_path):
    rows = pairs()
    rows[2]["chosen"] = 5
    return write_jsonl(tmp_path / "pairs.jsonl", rows), ["row 3", "field 'chosen' must be a string, got int"]


def empty_text(tmp_path):
    rows = pairs()
    rows[1] |= {"prompt": "", "rejected": "   "}  # empty, with no prompt: nothing to score
    return write_jsonl(tmp_path / "pairs.jsonl", rows), ["row 2", "field 'rejected' is empty"]


def empty_csv_cell(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected\nName a fruit.,mango,violin\n,,red\n")
    return path, ["row 2", "field 'chosen' is empty"]  # the 2nd data row (line 3 of the file)


def string_prompt_with_message_lists(tmp_path):
    rows = [{**conversation(), "prompt": "Can you help me?"} for _ in range(3)]
    return write_jsonl(tmp_path / "chat.jsonl", rows), ["row 1", "field 'prompt'", "list of messages"]


def unknown_role(tmp_path):
    bad = {**conversation(), "chosen": [{"role": "robot", "content": "beep"}]}
    return write_jsonl(tmp_path / "chat.jsonl", [conversation(), bad]), ["row 2", "field 'chosen'", "unknown role"]


def missing_content(tmp_path):
    bad = {**conversation(), "rejected": [{"role": "assistant"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [conversation(), conversation(), bad])
    return path, ["row 3", "field 'rejected'", "without string content"]


def nan_margin_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected,margin\nQ1,a,b,1.5\nQ2,c,d,2\nQ3,e,f,nan\n")
    return path, ["row 3", "field 'margin' must be a finite number"]


def inf_margin_jsonl(tmp_path):
    rows = [{**r, "margin": 1.0} for r in pairs()]
    rows[4]["margin"] = float("inf")  # json.dumps writes Infinity
    return write_jsonl(tmp_path / "pairs.jsonl", rows), ["row 5", "field 'margin' must be a finite number"]


def non_numeric_margin(tmp_path):
    rows = [{**r, "margin": 1.0} for r in pairs()]
    rows[1]["margin"] = "a lot"
    return write_jsonl(tmp_path / "pairs.jsonl", rows), ["row 2", "field 'margin'", "'a lot'"]


def empty_jsonl(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("")
    return path, []


def header_only_csv(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected\n")
    return path, []


DATA_CASES = [
    malformed_json,
    json_line_not_an_object,
    csv_missing_column,
    jsonl_missing_columns,
    row_without_chosen,
    row_without_rejected,
    non_string_text,
    empty_text,
    empty_csv_cell,
    string_prompt_with_message_lists,
    unknown_role,
    missing_content,
    nan_margin_csv,
    inf_margin_jsonl,
    non_numeric_margin,
    empty_jsonl,
    header_only_csv,
]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c.__name__ for c in DATA_CASES])
def test_bad_data_file_is_one_error_line_naming_file_row_and_field(case, tmp_path, capsys):
    path, needles = case(tmp_path)
    line, out = check_train_error(["--dataset_name", str(path)], [str(path), *needles], tmp_path, capsys)
    assert "optimizer steps" not in out  # stopped before the model was built


def test_bad_row_after_a_blank_line_names_its_file_line(tmp_path, capsys):
    rows = pairs(4)
    rows[2] |= {"prompt": "", "chosen": ""}
    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps(rows[0]) + "\n" + json.dumps(rows[1]) + "\n\n" + "".join(json.dumps(r) + "\n" for r in rows[2:])
    )
    assert path.read_text().splitlines()[3] == json.dumps(rows[2])  # the bad row is line 4
    code, _, err = invoke(train.cli, ["--dataset_name", str(path), "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, [str(path), "row 4", "field 'chosen' is empty"])


@pytest.mark.parametrize("case", [empty_jsonl, header_only_csv], ids=["jsonl", "csv"])
def test_empty_data_file_says_it_is_empty(case, tmp_path, capsys):
    path, _ = case(tmp_path)
    code, _, err = invoke(train.cli, ["--dataset_name", str(path), "--output_dir", str(tmp_path / "o")], capsys)
    assert "empty" in assert_clean_error(code, err, [str(path)]).replace(str(path), "")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_data_file_that_is_not_utf8_is_a_clean_error(suffix, tmp_path, capsys):
    path = tmp_path / f"latin1{suffix}"
    if suffix == ".csv":
        path.write_bytes("prompt,chosen,rejected\nName a drink.,caf\xe9,tea\n".encode("latin-1"))
    else:
        path.write_bytes('{"prompt": "Name a drink.", "chosen": "caf\xe9", "rejected": "tea"}\n'.encode("latin-1"))
    code, _, err = invoke(train.cli, ["--dataset_name", str(path), "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, [str(path)])


def test_unknown_hub_dataset_offline(tmp_path, capsys):
    name = "nobody-xyz/does-not-exist-123"
    check_train_error(["--dataset_name", name], [name, "could not load the dataset"], tmp_path, capsys)


# --- train.py: pairs that tokenize to nothing usable ----------------------------------------------
def test_every_pair_over_max_length(tmp_path, capsys):
    line, out = check_train_error(["--max_length", "4"], ["no training pair left", "--max_length 4"], tmp_path, capsys)
    assert "pairs kept: train 0 (dropped 45 over 4 tokens" in out


def test_identical_pairs_are_dropped_and_counted(tmp_path, capsys):
    rows = pairs(20)
    for i in (2, 5, 11):
        rows[i]["rejected"] = rows[i]["chosen"]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    argv = ["--dataset_name", str(path), "--eval_split_size", "0", "--max_steps", "2", "--disable_tqdm"]
    code, out, err = invoke(train.cli, [*argv, "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 0, err[-3000:]
    assert "pairs kept: train 17 (dropped 0 over 1024 tokens, 3 with chosen == rejected)" in out

    all_identical = write_jsonl(tmp_path / "same.jsonl", [{**r, "rejected": r["chosen"]} for r in pairs(20)])
    needles = ["no training pair left", "20 with chosen identical to rejected"]
    check_train_error(
        ["--dataset_name", str(all_identical), "--eval_split_size", "0"], needles, tmp_path / "all", capsys
    )


# --- train.py: models and tokenizers -------------------------------------------------------------
def test_conversational_data_with_a_tokenizer_without_chat_template(model_dirs, tmp_path, capsys):
    data = write_jsonl(tmp_path / "chat.jsonl", [conversation(f"Sure, answer {i}.") for i in range(10)])
    argv = ["--dataset_name", str(data), "--model_name_or_path", str(model_dirs["gpt2"])]
    check_train_error(argv, ["needs a chat template", str(model_dirs["gpt2"])], tmp_path, capsys)


def test_model_folder_that_does_not_exist(tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    check_train_error(["--model_name_or_path", missing], [missing], tmp_path, capsys)


def test_model_folder_that_does_not_exist_says_so(tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    code, _, err = invoke(train.cli, ["--model_name_or_path", missing, "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, [missing, "no such model folder"])


def test_relative_model_path_that_does_not_exist_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(train.cli, ["--model_name_or_path", "runs/typo-rm", "--output_dir", "o"], capsys)
    assert_clean_error(code, err, ["runs/typo-rm"])


def test_model_with_a_two_label_head(model_dirs, tmp_path, capsys):
    folder = str(model_dirs["two_labels"])
    check_train_error(["--model_name_or_path", folder], [folder, "exactly 1 label"], tmp_path, capsys)


def test_tokenizer_without_pad_or_eos_token(model_dirs, tmp_path, capsys):
    folder = str(model_dirs["no_pad"])
    check_train_error(["--model_name_or_path", folder], [folder, "neither a pad nor an eos token"], tmp_path, capsys)


# --- train.py: options ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--fp16"], "--fp16 needs a CUDA GPU"),
        (["--per_device_train_batch_size", "0"], "batch sizes must be >= 1"),
        (["--learning_rate", "-0.0001"], "--learning_rate must be a finite number in [0, 1]"),
        (["--bf16", "--fp16"], "--bf16 and --fp16 are mutually exclusive"),
    ],
    ids=["fp16-on-cpu", "batch-size-0", "negative-lr", "bf16-and-fp16"],
)
def test_bad_options(argv, message, tmp_path, capsys):
    if argv == ["--fp16"] and torch.cuda.is_available():
        pytest.skip("checks the CPU error")
    line, out = check_train_error(argv, [message], tmp_path, capsys)
    assert out == ""  # nothing loaded


@pytest.mark.parametrize("argv", [["--learning_rte", "1e-4"], ["--max_steps", "ten"]], ids=["unknown", "bad-value"])
def test_unknown_option_or_bad_value_is_one_error_line(argv, tmp_path, capsys):
    code, _, err = invoke(train.cli, [*argv, "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, [argv[0]])


# --- train.py: --skip_bad_rows -------------------------------------------------------------------
def test_skip_bad_rows_drops_and_reports_them(tmp_path, capsys):
    rows = pairs(20)
    rows[3]["chosen"] = 3  # rows 4, 9 and 17 (1-based) are bad
    rows[8]["rejected"] = None
    rows[16]["prompt"] = 7
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    argv = ["--dataset_name", str(path), "--eval_split_size", "0", "--max_steps", "2", "--disable_tqdm"]
    code, out, err = invoke(train.cli, [*argv, "--skip_bad_rows", "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 0, err[-3000:]
    skipped = [line for line in out.splitlines() if line.startswith("skipping ")]
    assert len(skipped) == 1, out
    assert str(path) in skipped[0] and "3 bad row(s)" in skipped[0]
    assert "row 4: field 'chosen'" in skipped[0] and "row 9: field 'rejected'" in skipped[0]
    assert "row 17: field 'prompt'" in skipped[0]
    assert "train 17 pairs" in out
    assert (tmp_path / "out" / "model.safetensors").exists()

    # without the flag the same file is an error listing the same rows
    needles = [str(path), "3 bad row(s)", "row 4", "row 9", "row 17", "--skip_bad_rows drops them"]
    check_train_error(["--dataset_name", str(path)], needles, tmp_path / "strict", capsys)


def test_skip_bad_rows_with_every_row_bad(tmp_path, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{**r, "prompt": "", "chosen": ""} for r in pairs(20)])
    argv = ["--dataset_name", str(path), "--skip_bad_rows"]
    check_train_error(
        argv, [str(path), "20 bad row(s)", "row 1:", "(and 15 more)", "no good rows left"], tmp_path, capsys
    )


# --- score.py ------------------------------------------------------------------------------------
def test_score_malformed_json(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(pairs(1)[0]) + "\n" + '{"chosen": "a", "rejected": \n')
    check_score_error(
        ["--model", str(tiny_model_dir), "--input", str(path)], [str(path), "line 2", "malformed JSON"], capsys
    )


def test_score_missing_model_folder(tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(3))
    missing = str(tmp_path / "no-such-model")
    check_score_error(["--model", missing, "--input", str(data)], [missing, "could not load a reward model"], capsys)


def test_score_relative_missing_model_folder_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "pairs.jsonl", pairs(3))
    code, _, err = invoke(score.cli, ["--model", "runs/typo-rm", "--input", "pairs.jsonl"], capsys)
    assert_clean_error(code, err, ["runs/typo-rm"])


def test_score_texts_file_with_a_null_text(tiny_model_dir, tmp_path, capsys):
    path = write_jsonl(tmp_path / "texts.jsonl", [{"text": "fine"}, {"text": "also fine"}, {"text": None}])
    needles = [str(path), "row 3", "field 'text' must be a string, got NoneType"]
    check_score_error(["--model", str(tiny_model_dir), "--input", str(path)], needles, capsys)


def test_score_unknown_columns(tiny_model_dir, tmp_path, capsys):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"question": "q", "answer": "a"}] * 3)
    check_score_error(["--model", str(tiny_model_dir), "--input", str(path)], ["question, answer"], capsys)


def test_score_unknown_columns_names_the_file(tiny_model_dir, tmp_path, capsys):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"question": "q", "answer": "a"}] * 3)
    code, _, err = invoke(score.cli, ["--model", str(tiny_model_dir), "--input", str(path)], capsys)
    assert_clean_error(code, err, [str(path)])


def test_score_unknown_option_is_one_error_line(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "pairs.jsonl", pairs(3))
    code, _, err = invoke(
        score.cli, ["--model", str(tiny_model_dir), "--input", str(data), "--bacth_size", "2"], capsys
    )
    assert_clean_error(code, err, ["--bacth_size"])
