"""reward/export.py: the pipeline-ready folder, what it records about training, and its model card."""

import json
import re
import subprocess
import sys
from functools import partial

import pytest
import torch
from safetensors import safe_open
from transformers import pipeline

from reward.eval.model_card import example_of, render_model_card
from reward.export import STATS_KEY, record_format, record_statistics, save_reward_model
from reward.formatting import FORMAT_KEY, SequenceFormat
from reward.presets.tiny import tiny_model


@pytest.mark.slow
def test_model_card_snippet_runs_and_returns_the_raw_reward(tiny_tokenizer, tmp_path):
    model = tiny_model(tiny_tokenizer, seed=5)
    out = tmp_path / "rm"
    options = {"model_name_or_path": "tiny"}
    card = partial(render_model_card, cfg=options, card={"metrics": {"x": 1.0}})
    save_reward_model(model, tiny_tokenizer, out, options, card=card)
    card = (out / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    # the card names the folder as published (no absolute local path): run it beside the folder
    proc = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = float(proc.stdout.strip().splitlines()[-1])
    prompt, response = example_of(None)  # the card's example when it is given none
    ids = tiny_tokenizer(prompt + response + tiny_tokenizer.eos_token, return_tensors="pt")
    with torch.no_grad():
        assert printed == pytest.approx(model(**ids).logits.item(), abs=1e-5)  # raw: no sigmoid applied


def test_the_folder_holds_what_the_pipeline_loads_and_what_training_says_about_itself(tiny_tokenizer, tmp_path):
    model = tiny_model(tiny_tokenizer, seed=5)
    record_format(model, tiny_tokenizer, SequenceFormat(), "explicit prompt")
    record_statistics(model, {"mean": 0.5, "std": 2.0, "count": 8, "source": "held-out split, 4 pairs"})
    card = partial(render_model_card, cfg={"learning_rate": 1e-4}, card={"format": "explicit prompt"})
    out = save_reward_model(model, tiny_tokenizer, tmp_path / "rm", {"learning_rate": 1e-4, "seed": 3}, card=card)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_config.json", "README.md"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config[STATS_KEY]["std"] == 2.0 and config[FORMAT_KEY]["append_eos"] is True
    assert config["id2label"] == {"0": "reward"} and config["problem_type"] == "regression"
    assert json.loads((out / "training_config.json").read_text()) == {"learning_rate": 1e-4, "seed": 3}
    assert "# Reward model: rm" in (out / "README.md").read_text()
    rm = pipeline("text-classification", model=str(out), device="cpu")
    text = "Name a fruit. mango" + tiny_tokenizer.eos_token
    ids = tiny_tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        want = model(**ids).logits[0, 0].item()
    assert rm(text, function_to_apply="none")[0]["score"] == pytest.approx(want, abs=1e-5)  # the raw reward


def test_a_folder_without_a_card_writer_has_no_readme_and_given_weights_replace_the_models(tiny_tokenizer, tmp_path):
    model = tiny_model(tiny_tokenizer, seed=5)
    zeros = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    out = save_reward_model(model, tiny_tokenizer, tmp_path / "rm", {}, state_dict=zeros)  # FSDP's gathered weights
    assert not (out / "README.md").exists()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert all(not f.get_tensor(k).any() for k in f.keys())


def test_a_new_run_drops_the_statistics_of_the_reward_model_it_starts_from(tiny_tokenizer):
    model = tiny_model(tiny_tokenizer, seed=5)
    record_statistics(model, {"mean": 9.0, "std": 1.0, "count": 2, "source": "an earlier run"})
    record_format(model, tiny_tokenizer, SequenceFormat(append_eos=False), "explicit prompt")
    assert not hasattr(model.config, STATS_KEY)
    assert getattr(model.config, FORMAT_KEY)["append_eos"] is False
    assert "the last text token (no EOS appended)" in getattr(model.config, FORMAT_KEY)["reward_token"]
