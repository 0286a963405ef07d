"""Encoder reward models (BERT, DeBERTa-v2: no EOS token, the head pools [CLS]) train, save, score and
load in the pipeline with the training-time rewards; packing falls back to the padded forward."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import warnings

import pytest
import torch
from conftest import save_encoder, train_tiny
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from reward.collate import PairwiseCollator
from reward.eval.consumer_check import check_consumers
from reward.eval.scoring import RewardScorer, load_rows
from reward.fast.layout import PackingFallbackWarning
from reward.formatting import format_text, read_format, tokenize_pairs
from reward.model import compute_rewards
from reward.presets.synthetic import generate_pairs

PIPELINE_SCRIPT = """
import json, sys
from transformers import pipeline
rm = pipeline("text-classification", model=sys.argv[1], device="cpu")
print(json.dumps([rm(t)[0]["score"] for t in json.loads(sys.stdin.read())]))
"""


@pytest.fixture(scope="module", params=["bert", "deberta-v2"])
def trained(request, tmp_path_factory):
    base = save_encoder(tmp_path_factory.mktemp(f"{request.param}-base") / "m", request.param)
    out = tmp_path_factory.mktemp(request.param) / "rm"
    printed = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(printed):
        warnings.simplefilter("always")
        train_tiny(out, model_name_or_path=str(base), learning_rate=1e-3)
    assert not [w for w in caught if issubclass(w.category, PackingFallbackWarning)]  # nothing was tried
    return request.param, out, printed.getvalue()


def test_an_encoder_trains_and_records_its_format(trained):
    kind, out, printed = trained
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == kind and config["problem_type"] == "regression"
    record = config["reward_format"]
    assert record["append_eos"] is False  # nothing to append: BERT has no EOS, DeBERTa-v2's appends its own
    assert record["eos_token"] == (None if kind == "bert" else "[SEP]")
    assert record["special_tokens"] == {"before": ["[CLS]"], "after": ["[SEP]"]}
    assert record["reward_token"].startswith("the first token ([CLS])")
    assert "batches (an encoder's tokens attend to the whole sequence: nothing can be packed" in printed
    why = "has no EOS token" if kind == "bert" else "appends its own EOS '[SEP]'"
    assert f"tokenizer {why}: nothing more is appended" in printed
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = RewardScorer(out, device="cpu", show_progress=False).encode("Name a fruit.", " mango")
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert ids.count(tokenizer.sep_token_id) == 1  # one separator: TRL would append a second [SEP]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics if "loss" in m)


@pytest.mark.slow
def test_training_rewards_equal_the_pipeline_in_a_fresh_process(trained):
    _, out, _ = trained
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    rows = generate_pairs(8, seed=9)
    recorded, _ = read_format(model.config)  # as training formatted it (no EOS appended for either encoder)
    ds, _ = tokenize_pairs(Dataset.from_list(rows), tokenizer, "explicit prompt", None, sequence_format=recorded)
    batch = PairwiseCollator(tokenizer.pad_token_id)([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        rewards = compute_rewards(model, batch.input_ids, batch.attention_mask).tolist()  # (2B,)
    assert max(rewards) - min(rewards) > 1e-3  # distinct rewards: the comparison is not trivial
    texts = [format_text(r["prompt"] + r[side], tokenizer, recorded) for side in ("chosen", "rejected") for r in rows]
    assert texts[0] == rows[0]["prompt"] + rows[0]["chosen"]
    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE_SCRIPT, str(out)], input=json.dumps(texts), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == pytest.approx(rewards, abs=1e-5)
    scorer = RewardScorer(out, device="cpu", show_progress=False)
    assert scorer.rewards(
        [r["prompt"] for r in rows] * 2, [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    ) == (pytest.approx(rewards, abs=1e-5))


def test_padding_does_not_change_an_encoder_reward(trained):
    _, out, _ = trained
    scorer = RewardScorer(out, device="cpu", show_progress=False, batch_size=4)
    ids = [scorer.encode("Name a fruit.", " mango"), scorer.encode("Name a fruit.", " I would say a banana, yes.")]
    together = scorer.score_ids(ids)
    alone = [scorer.score_ids([i])[0] for i in ids]
    assert together == pytest.approx(alone, abs=1e-5)


def test_the_consumer_check_says_what_an_encoder_cannot_be_given_to(trained):
    _, out, _ = trained
    rows, kind = load_rows(str(out / "heldout_pairs.jsonl"))
    results = {r.name: r for r in check_consumers(RewardScorer(out, device="cpu", show_progress=False), rows, kind)}
    ppo = [r for name, r in results.items() if name.startswith("PPO")]
    assert all("no `score` head on a decoder" in r.skipped for r in ppo)
    assert all("no chat template" in r.skipped for name, r in results.items() if name.startswith("RewardBench"))
    grpo = next(r for name, r in results.items() if name.startswith("TRL GRPO"))
    assert grpo.max_diff > 1e-3 and "[CLS]" in grpo.fix and "RewardFunction" in grpo.fix
    pipeline = next(r for name, r in results.items() if name.startswith("pipeline"))
    assert pipeline.max_diff <= 1e-5


def test_pairs_longer_than_learned_positions_are_dropped_not_crashed(tmp_path):
    base = save_encoder(tmp_path / "base", "bert", max_positions=24)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train_tiny(tmp_path / "rm", model_name_or_path=str(base), max_steps=2)
    dropped = re.search(
        r"train: dropped (\d+) more pairs longer than the 24 positions the model has", printed.getvalue()
    )
    assert dropped and int(dropped.group(1)) > 0, printed.getvalue()
    metrics = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 2
