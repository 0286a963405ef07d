"""Every loading option, and the data source, checked before the rows load (reward/run/loading.py, the tokenizer's
options in reward/tokenizer.py): exit 2, one `error:` line naming the option and the culprit, no traceback
without --debug, and the rows never read (`read_rows` fails the test if it is reached)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import huggingface_hub.constants
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import build_gpt2_model, build_gpt2_style_tokenizer
from test_bad_input import assert_clean_error, check_train_error, invoke, pairs, write_jsonl
from transformers import ViTConfig

import train
from reward import recipe
from reward.errors import UserError
from reward.model import load_model
from reward.presets.tiny import build_tiny_tokenizer, tiny_config, tiny_model
from reward.run.loading import check_model_options, from_pretrained_keys

pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    """No Hub lookups (see tests/test_bad_input.py `hub_offline`)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture()
def rows_never_read(monkeypatch):
    """The check under test must stop the run before the rows are read."""

    def read_rows(*args, **kwargs):
        raise AssertionError("the rows were read before a loading option was checked")

    monkeypatch.setattr(recipe, "read_rows", read_rows)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A GPT-2 and a Llama model folder (real from_pretrained loads), and a config whose model type has no
    sequence-classification class."""
    root = tmp_path_factory.mktemp("preflight")
    tokenizer = build_gpt2_style_tokenizer()
    build_gpt2_model(tokenizer).save_pretrained(root / "gpt2")
    tokenizer.save_pretrained(root / "gpt2")
    llama = build_tiny_tokenizer()
    tiny_model(llama, seed=0).save_pretrained(root / "llama")
    llama.save_pretrained(root / "llama")
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(root / "vit")
    return {name: root / name for name in ("gpt2", "llama", "vit")}


# --- the chat template ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "template, needles",
    [
        ("{% for m in messages %}{{ m['content'] }", ["does not compile (line 1: unexpected '}')"]),
        ("{% for m in messages %}\n{{ m['content'] | nosuchfilter }}{% endfor %}", ["does not compile (line 2:"]),
        ("{{ raise_exception('a system message first') }}", ["fails on a user/assistant", "a system message first"]),
    ],
    ids=["syntax", "unknown-filter", "raises"],
)
def test_a_chat_template_that_fails_stops_before_the_rows(template, needles, rows_never_read, tmp_path, capsys):
    path = tmp_path / "chat.jinja"
    path.write_text(template)
    check_train_error(["--chat_template_path", str(path)], [f"--chat_template_path {path}", *needles], tmp_path, capsys)


@pytest.mark.parametrize(
    "name, message",
    [("missing.jinja", "no such file"), ("templates/missing.j2", "no such file"), ("./no-such-dir", "no such file or")],
)
def test_a_missing_chat_template_path_says_what_is_missing(name, message, rows_never_read, tmp_path, capsys):
    line, _ = check_train_error(
        ["--chat_template_path", name], [f"--chat_template_path {name}: {message}"], tmp_path, capsys
    )
    assert "model folder" not in line


def test_a_chat_template_from_a_folder_without_one(folders, rows_never_read, tmp_path, capsys):
    folder = str(folders["gpt2"])
    check_train_error(["--chat_template_path", folder], [folder, "has no chat template"], tmp_path, capsys)


def test_a_model_folders_own_broken_chat_template_is_one_line_before_tokenizing(folders, tmp_path, capsys):
    """Not --chat_template_path but the template the model folder ships: it is used only by conversational data
    (or --text_as_chat), so it is checked once the data's format is known, before the first row is tokenized."""
    from test_bad_input import conversation

    model = tmp_path / "model"
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }"
    tiny_model(tokenizer, seed=0).save_pretrained(model)
    tokenizer.save_pretrained(model)
    data = write_jsonl(tmp_path / "chat.jsonl", [conversation(f"Sure, answer {i}.") for i in range(8)])
    argv = ["--model_name_or_path", str(model), "--dataset_name", str(data), "--eval_split_size", "0"]
    check_train_error(argv, [str(model), "the chat template does not compile (line 1:"], tmp_path, capsys)


@pytest.mark.parametrize("role", ["eos_token", "pad_token"])
def test_a_token_the_vocabulary_lacks_stops_before_the_rows(role, rows_never_read, tmp_path, capsys):
    check_train_error(
        [f"--{role}", "<nope>"], [f"--{role} '<nope>' is not in the tokenizer's vocabulary"], tmp_path, capsys
    )


# --- --model_init_kwargs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model, kwargs, needles",
    [
        ("gpt2", '{"low_cpu_mem_usag": true}', ["unknown key 'low_cpu_mem_usag' (did you mean 'low_cpu_mem_usage'?)"]),
        ("gpt2", '{"resid_pdro": 0.0}', ["unknown key 'resid_pdro' (did you mean 'resid_pdrop'?)"]),
        ("llama", '{"rms_norm_ep": 1e-5}', ["unknown key 'rms_norm_ep' (did you mean 'rms_norm_eps'?)"]),
        ("llama", '{"zzz_unheard_of": 1}', ["unknown key 'zzz_unheard_of' (no from_pretrained argument"]),
        ("llama", '{"use_safetensors": false}', ["--model_init_kwargs use_safetensors: always true"]),
        ("tiny", '{"rms_norm_eps": 1e-5}', ["--model_init_kwargs go to from_pretrained; tiny is built"]),
    ],
    ids=["from_pretrained-typo", "gpt2-config-typo", "llama-config-typo", "unknown", "use_safetensors", "tiny"],
)
def test_a_model_init_kwargs_key_nothing_takes_stops_before_the_rows(
    model, kwargs, needles, folders, rows_never_read, tmp_path, capsys
):
    name = str(folders[model]) if model in folders else model
    argv = ["--model_name_or_path", name, "--model_init_kwargs", kwargs]
    line, out = check_train_error(argv, ["--model_init_kwargs", *needles], tmp_path, capsys)
    assert "data:" not in out


def test_keys_from_pretrained_takes_are_read_from_transformers():
    taken, ignored = from_pretrained_keys()
    assert {"device_map", "quantization_config", "subfolder", "variant", "revision", "cache_dir"} <= taken
    assert "low_cpu_mem_usage" in ignored and "low_cpu_mem_usage" in taken  # transformers 5 drops it unused


def test_accepted_keys_pass_and_an_ignored_one_is_said(folders):
    folder = str(folders["llama"])
    assert check_model_options(folder, None, False, {"rms_norm_eps": 1e-5, "device_map": "cpu"}) == []
    notes = check_model_options(folder, None, False, {"low_cpu_mem_usage": True})
    assert notes == ["--model_init_kwargs low_cpu_mem_usage: transformers no longer uses it (ignored)"]


def test_a_model_type_without_a_sequence_classification_class(folders, rows_never_read, tmp_path, capsys):
    folder = str(folders["vit"])
    check_train_error(
        ["--model_name_or_path", folder], [folder, "no sequence-classification model", "'vit'"], tmp_path, capsys
    )


def test_load_model_keeps_a_backstop_for_init_kwargs_and_attention(folders):
    tokenizer = build_tiny_tokenizer()
    with pytest.raises(UserError, match="--model_init_kwargs: .* does not take 'low_cpu_mem_usag'"):
        load_model(str(folders["llama"]), tokenizer, init_kwargs={"low_cpu_mem_usag": True})
    with pytest.raises(UserError, match="--attn_implementation bogus: Specified `attn_implementation=.bogus.`"):
        load_model("tiny", tokenizer, config=tiny_config(tokenizer), attn_implementation="bogus")


# --- --attn_implementation, --dtype: with the other options, before anything ---------------------
@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--attn_implementation", "bogus"], ["--attn_implementation bogus: not one of eager,", "sdpa", "org/repo"]),
        (["--dtype", "float16"], ["--dtype float16: float16 weights make AdamW's moments underflow", "--fp16"]),
        (["--dtype", "int8"], ["--dtype must be one of float32, bfloat16, auto, got 'int8'"]),
    ],
    ids=["attention", "float16", "int8"],
)
def test_attention_and_dtype_are_refused_before_anything(argv, needles, tmp_path, capsys):
    code, out, err = invoke(train.cli, [*argv, "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, needles)
    assert out == "" and not (tmp_path / "o").exists()


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="checks the message without flash_attn")
def test_flash_attention_without_its_package_is_one_line():
    """Whether its package is installed stays transformers' check, at load time: one line all the same."""
    tokenizer = build_tiny_tokenizer()
    with pytest.raises(UserError, match="--attn_implementation flash_attention_2: .*FlashAttention2"):
        load_model("tiny", tokenizer, config=tiny_config(tokenizer), attn_implementation="flash_attention_2")


# --- the data source: readable, and holding rows, before anything loads --------------------------
def write_parquet(path: Path, rows: list[dict]) -> Path:
    columns = ("prompt", "chosen", "rejected")
    pq.write_table(pa.table({c: pa.array([r[c] for r in rows], pa.string()) for c in columns}), path)
    return path


@pytest.mark.parametrize("case", ["empty-parquet", "not-parquet", "folder-with-an-empty-file", "empty-folder"])
def test_a_data_source_without_rows_names_the_file(case, tmp_path, capsys):
    source = tmp_path / "data"
    if case == "empty-parquet":
        culprit = source = write_parquet(tmp_path / "pairs.parquet", [])
        message = "the file is empty (no preference rows)"
    elif case == "not-parquet":
        culprit = source = tmp_path / "pairs.parquet"
        source.write_text("prompt,chosen,rejected\n")
        message = "not a parquet file (Parquet magic bytes not found"
    elif case == "folder-with-an-empty-file":
        source.mkdir()
        write_parquet(source / "train.parquet", pairs(4))
        culprit = write_parquet(source / "test.parquet", [])
        message = "the file is empty"
    else:
        (source / "sub").mkdir(parents=True)
        culprit, message = source, "folder has no .jsonl/.json/.csv/.parquet files"
    code, out, err = invoke(train.cli, ["--dataset_name", str(source), "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, [f"{culprit}: {message}"])
    assert "data:" not in out


def test_a_parquet_file_with_rows_still_trains(tmp_path, capsys):
    source = write_parquet(tmp_path / "pairs.parquet", pairs(24))
    argv = ["--dataset_name", str(source), "--max_steps", "1", "--disable_tqdm", "--output_dir", str(tmp_path / "o")]
    code, out, err = invoke(train.cli, argv, capsys)
    assert code in (0, 4), err[-3000:]
    assert f"data: {source} | format: explicit prompt | train 21 pairs" in out


def test_the_data_source_is_checked_before_the_model_loads(folders, tmp_path, capsys, monkeypatch):
    """A missing data file is named before the tokenizer or the model's config is read."""
    monkeypatch.setattr(recipe, "ready_tokenizer", lambda *a: pytest.fail("the tokenizer loaded first"))
    missing = str(tmp_path / "nope.jsonl")
    argv = ["--dataset_name", missing, "--model_name_or_path", str(folders["gpt2"])]
    code, _, err = invoke(train.cli, [*argv, "--output_dir", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, [f"{missing}: no such file or folder"])


def test_a_data_file_that_would_fail_later_is_not_read_before_a_bad_option(folders, tmp_path, capsys):
    """The rows' own problem (no rejected column) is not what a run with a bad loading option reports."""
    data = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c"}] * 4)
    template = tmp_path / "chat.jinja"
    template.write_text("{% if %}")
    argv = ["--dataset_name", str(data), "--chat_template_path", str(template), "--output_dir", str(tmp_path / "o")]
    code, _, err = invoke(train.cli, argv, capsys)
    assert_clean_error(code, err, ["--chat_template_path", "does not compile"])


def test_hidden_files_in_a_data_folder_are_not_checked_since_datasets_does_not_read_them(tmp_path):
    from reward.data import load_preferences
    from reward.sources import data_files

    folder = tmp_path / "data"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / "__cache__").mkdir()
    write_jsonl(folder / "train.jsonl", pairs(8))
    (folder / ".ipynb_checkpoints" / "train-checkpoint.jsonl").write_text("")  # empty: would be refused
    (folder / "__cache__" / "old.jsonl").write_text("")
    assert data_files(str(folder)) == [folder / "train.jsonl"]
    assert len(load_preferences(str(folder), eval_split_size=0).train) == 8
