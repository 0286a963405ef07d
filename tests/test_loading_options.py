"""Loading options: --dtype (and how it meets --bf16 / --fp16), --attn_implementation, --model_revision,
--model_init_kwargs and TRL's --chat_template_path, each checked by what the run loaded and saved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import train
from reward.config import parse_config
from reward.errors import UserError
from reward.model import compute_rewards, load_model, weights_dtype
from reward.presets.tiny import build_tiny_tokenizer, tiny_model

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--synthetic_num_pairs", "120", "--max_steps", "3", "--disable_tqdm", "--logging_steps", "1"]


def saved_dtypes(folder: Path) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return {str(f.get_tensor(k).dtype).removeprefix("torch.") for k in f.keys()}


@pytest.fixture(scope="module")
def bf16_folder(tmp_path_factory) -> Path:
    """A model folder stored in bfloat16, as most Hub checkpoints of 1B+ models are."""
    out = tmp_path_factory.mktemp("bf16")
    tokenizer = build_tiny_tokenizer()
    tiny_model(tokenizer, seed=3, dtype="bfloat16").save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_dtype_float32_is_the_default_and_auto_keeps_the_checkpoints(bf16_folder):
    tokenizer = build_tiny_tokenizer()
    assert weights_dtype(load_model(str(bf16_folder), tokenizer)) == "float32"  # TRL's default for a name
    assert weights_dtype(load_model(str(bf16_folder), tokenizer, dtype="auto")) == "bfloat16"
    assert weights_dtype(load_model(str(bf16_folder), tokenizer, dtype="float16")) == "float16"


def test_bf16_weights_still_give_float32_rewards_for_the_loss():
    tokenizer = build_tiny_tokenizer()
    model = tiny_model(tokenizer, dtype="bfloat16")
    batch = tokenizer(["a b c", "d e"], return_tensors="pt", padding=True)
    r = compute_rewards(model, batch["input_ids"], batch["attention_mask"])  # (2,)
    assert r.dtype == torch.float32


def test_training_bf16_weights_keeps_weights_and_adamw_state_in_bf16(tmp_path, capsys):
    out = tmp_path / "run"
    code = train.cli([*SMALL, "--output_dir", str(out), "--dtype", "bfloat16", "--save_steps", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "bfloat16 weights) | device cpu | fp32" in printed  # no autocast: the weights are bf16 already
    assert saved_dtypes(out) == {"bfloat16"}
    state = torch.load(out / "checkpoint-3" / "training_state.pt", weights_only=False)
    moments = [s["exp_avg"].dtype for s in state["optimizer"]["state"].values()]
    assert moments and set(moments) == {torch.bfloat16}  # torch AdamW keeps its moments in the weights' dtype
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < loss < 5 for loss in losses)


def test_float32_weights_with_bf16_autocast_stay_float32(tmp_path, capsys):
    out = tmp_path / "run"
    assert train.cli([*SMALL, "--output_dir", str(out), "--bf16"]) == 0
    assert "float32 weights) | device cpu | bf16 autocast" in capsys.readouterr().out
    assert saved_dtypes(out) == {"float32"}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dtype", "int8"], "--dtype must be one of"),
        (["--dtype", "float16"], "--dtype float16: float16 weights make AdamW's moments underflow; use --fp16"),
        (["--fp16", "--dtype", "bfloat16"], "pick one half precision"),
        (["--model_init_kwargs", "{not json"], "--model_init_kwargs: not valid JSON"),
        (["--model_init_kwargs", '["a"]'], "must be a JSON object"),
        (["--model_init_kwargs", '{"num_labels": 2}'], "num_labels=1"),
        (["--model_init_kwargs", '{"dtype": "bfloat16"}', "--dtype", "float16"], "contradicts --dtype"),
    ],
)
def test_bad_loading_options_are_one_line_errors(flags, message):
    with pytest.raises(UserError, match=message):
        parse_config(flags)


def test_trl_style_init_kwargs_move_onto_our_options():
    cfg = parse_config(
        ["--model_init_kwargs", '{"torch_dtype": "bfloat16", "revision": "v2", "low_cpu_mem_usage": true}']
    )
    assert (cfg.dtype, cfg.model_revision, cfg.model_init_kwargs) == ("bfloat16", "v2", {"low_cpu_mem_usage": True})


def test_model_init_kwargs_reach_from_pretrained(bf16_folder, tmp_path):
    out = tmp_path / "run"
    args = [*SMALL, "--model_name_or_path", str(bf16_folder), "--output_dir", str(out)]
    assert train.cli([*args, "--model_init_kwargs", '{"rms_norm_eps": 0.001}']) == 0
    assert json.loads((out / "config.json").read_text())["rms_norm_eps"] == 0.001  # a config override loaded


def test_attn_implementation_is_the_one_the_padded_path_runs(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--attn_implementation", "eager", "--padding_free", "false", "--share_prefix", "false"]
    result = train.main(parse_config([*SMALL, "--output_dir", str(out), *flags]))
    assert result.model.config._attn_implementation == "eager"
    assert "eager attention (reward/collate.py)" in capsys.readouterr().out


def write_cache_snapshot(cache: Path, repo: str, ref: str, commit: str, seed: int) -> dict[str, torch.Tensor]:
    """One revision of a Hub repo as huggingface_hub caches it (refs/<ref> -> snapshots/<commit>/)."""
    base = cache / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True, exist_ok=True)
    (base / "refs" / ref).write_text(commit)
    snapshot = base / "snapshots" / commit
    tokenizer = build_tiny_tokenizer()
    model = tiny_model(tokenizer, seed=seed)
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_model_revision_loads_that_revision_from_the_hub_cache(tmp_path):
    cache = tmp_path / "hub"
    write_cache_snapshot(cache, "local/tiny-rm", "main", "a" * 40, seed=1)
    wanted = write_cache_snapshot(cache, "local/tiny-rm", "v2", "b" * 40, seed=2)
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    args = [*SMALL, "--model_name_or_path", "local/tiny-rm", "--model_revision", "v2", "--output_dir", str(out)]
    args += ["--learning_rate", "0", "--max_steps", "1"]  # lr 0: the saved weights are the loaded ones
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode in (0, 4), proc.stderr[-2000:]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert all(torch.equal(f.get_tensor(k), wanted[k]) for k in f.keys())


def test_chat_template_path_from_a_jinja_file(tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}")
    out = tmp_path / "run"
    assert train.cli([*SMALL, "--output_dir", str(out), "--chat_template_path", str(template)]) == 0
    saved = (out / "chat_template.jinja").read_text()
    assert saved.strip() == template.read_text().strip()


def test_chat_template_path_from_a_tokenizer_folder_brings_its_tokens_and_eos(tmp_path):
    source = build_tiny_tokenizer()
    source.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    source.chat_template = "{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}"
    source.eos_token = "<|im_end|>"
    source.save_pretrained(tmp_path / "source")
    out = tmp_path / "run"
    result = train.main(
        parse_config([*SMALL, "--output_dir", str(out), "--chat_template_path", str(tmp_path / "source")])
    )
    tokenizer = result.tokenizer
    assert tokenizer.chat_template == source.chat_template and tokenizer.eos_token == "<|im_end|>"
    assert result.model.get_input_embeddings().num_embeddings >= len(tokenizer)  # room for the added token
    assert result.model.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_chat_template_path_that_is_not_a_template_is_one_line(tmp_path):
    bad = tmp_path / "t.txt"
    bad.write_text("x")
    code = train.cli([*SMALL, "--output_dir", str(tmp_path / "run"), "--chat_template_path", str(bad)])
    assert code == 2


def test_float16_weights_are_refused_before_training(tmp_path):
    """AdamW keeps its moments in the weights' dtype: in float16 g² underflows and the update is inf, so a
    checkpoint stored in float16 and loaded with --dtype auto stops with one line."""
    folder = tmp_path / "fp16"
    tokenizer = build_tiny_tokenizer()
    tiny_model(tokenizer, seed=0, dtype="float16").save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = str(tmp_path / "run")
    with pytest.raises(UserError, match="float16 weights: AdamW's moments underflow"):
        train.main(parse_config([*SMALL, "--model_name_or_path", str(folder), "--dtype", "auto", "--output_dir", out]))
    assert train.cli([*SMALL, "--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "fp32")]) == 0


@pytest.mark.slow
def test_chat_template_tokens_under_lora_are_refused(tmp_path):
    pytest.importorskip("peft")
    source = build_tiny_tokenizer()
    source.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    source.chat_template = "{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}"
    source.save_pretrained(tmp_path / "source")
    args = [*SMALL, "--output_dir", str(tmp_path / "run"), "--chat_template_path", str(tmp_path / "source")]
    with pytest.raises(UserError, match="added 1 token.s.: under LoRA their embedding rows would stay untrained"):
        train.main(parse_config([*args, "--use_peft"]))
