"""How training turned text into tokens is part of the model: train.py records it in config.json
(`reward_format`), every scorer reads it back, and the reward statistics travel with the model."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from conftest import train_tiny
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import score
from reward import RewardFunction
from reward.eval.score_cli import parse_score_config
from reward.eval.scoring import RewardScorer
from reward.formatting import TRL_FORMAT, SequenceFormat, chat_template_hash, describe_format, read_format
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import build_tiny_tokenizer


@pytest.fixture(scope="module")
def trl_model(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("trl") / "rm")


@pytest.fixture(scope="module")
def grpo_model(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("grpo") / "rm", append_eos=False, add_special_tokens=False)


def config_of(folder) -> dict:
    return json.loads((folder / "config.json").read_text())


def direct_reward(folder, ids: list[int]) -> float:
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_default_run_records_trls_format(trl_model):
    record = config_of(trl_model)["reward_format"]
    assert (record["append_eos"], record["add_special_tokens"], record["text_as_chat"]) == (True, True, False)
    assert record["eos_token"] == "</s>"
    assert record["special_tokens"] == {"before": ["<s>"], "after": []}
    assert record["chat_template_sha256"] == chat_template_hash(build_tiny_tokenizer())
    assert record["data_format"] == "explicit prompt"
    assert "the appended EOS" in record["reward_token"]
    sequence_format, read = read_format(AutoModelForSequenceClassification.from_pretrained(trl_model).config)
    assert sequence_format == TRL_FORMAT and read == record


def test_grpo_format_is_recorded_and_scored_as_recorded(grpo_model, tmp_path):
    record = config_of(grpo_model)["reward_format"]
    assert (record["append_eos"], record["add_special_tokens"]) == (False, False)
    assert record["special_tokens"] == {"before": [], "after": []}
    assert "no EOS appended" in record["reward_token"]

    tokenizer = AutoTokenizer.from_pretrained(grpo_model)
    row = generate_pairs(1, seed=11)[0]
    bare = tokenizer(row["prompt"] + row["chosen"], add_special_tokens=False)["input_ids"]
    with_bos_eos = tokenizer(row["prompt"] + row["chosen"] + tokenizer.eos_token)["input_ids"]
    assert bare[0] != tokenizer.bos_token_id and bare[-1] != tokenizer.eos_token_id

    path = write_jsonl(tmp_path / "responses.jsonl", [{"prompt": row["prompt"], "response": row["chosen"]}])
    score.main(
        parse_score_config(["--model", str(grpo_model), "--input", str(path), "--output", str(tmp_path / "o.jsonl")])
    )
    got = json.loads((tmp_path / "o.jsonl").read_text())["reward"]
    assert got == pytest.approx(direct_reward(grpo_model, bare), abs=1e-5)
    assert abs(got - direct_reward(grpo_model, with_bos_eos)) > 1e-3  # the format matters for this model


def test_the_formatting_line_is_printed_by_both_entry_points(grpo_model, tmp_path, capsys):
    rows = write_jsonl(tmp_path / "pairs.jsonl", generate_pairs(4, seed=2))
    score.main(parse_score_config(["--model", str(grpo_model), "--input", str(rows)]))
    assert "formatting: no EOS appended, no special tokens added" in capsys.readouterr().out


def test_text_as_chat_trains_on_the_chat_template(tmp_path):
    folder = train_tiny(tmp_path / "rm", text_as_chat=True, max_steps=2)
    record = config_of(folder)["reward_format"]
    assert record["text_as_chat"] is True and "chat template's last token" in record["reward_token"]
    scorer = RewardScorer(folder, device="cpu", show_progress=False)
    ids = scorer.encode("Name a fruit.", " mango")
    messages = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": " mango"}]
    assert ids == scorer.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert "<|user|>" in scorer.tokenizer.decode(ids)


def test_text_as_chat_needs_a_prompt_column(tmp_path, capsys, quiet_datasets):
    import train

    rows = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in generate_pairs(8)]
    path = write_jsonl(tmp_path / "implicit.jsonl", rows)
    code = train.cli(["--dataset_name", str(path), "--text_as_chat", "true", "--output_dir", str(tmp_path / "o")])
    assert code == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: --text_as_chat needs a prompt column (it renders the prompt as the user turn)"
    )


def test_a_model_without_a_record_is_scored_in_trls_format(tiny_model_dir):
    scorer = RewardScorer(tiny_model_dir, device="cpu", show_progress=False)
    assert scorer.format == TRL_FORMAT and scorer.format_record is None
    assert describe_format(scorer.format, None).startswith("TRL's RewardTrainer format assumed")
    ids = scorer.encode("Q?", " A.")
    assert ids[0] == scorer.tokenizer.bos_token_id and ids[-1] == scorer.tokenizer.eos_token_id


def test_a_different_chat_template_at_scoring_time_warns(trl_model, tmp_path):
    copy = tmp_path / "rm"
    shutil.copytree(trl_model, copy)
    tokenizer = AutoTokenizer.from_pretrained(copy)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tokenizer.save_pretrained(copy)
    with pytest.warns(UserWarning, match="chat template is not the one training used"):
        RewardScorer(copy, device="cpu", show_progress=False)


def test_format_options_reach_the_tokenized_training_data():
    from datasets import Dataset

    from reward.formatting import tokenize_pairs

    tok = build_tiny_tokenizer()
    ds = Dataset.from_list(generate_pairs(4, seed=1))
    plain, _ = tokenize_pairs(ds, tok, "explicit prompt", None)
    bare, _ = tokenize_pairs(ds, tok, "explicit prompt", None, sequence_format=SequenceFormat(False, False))
    for a, b in zip(plain["chosen_ids"], bare["chosen_ids"]):
        assert a == [tok.bos_token_id, *b, tok.eos_token_id]


# --- reward statistics --------------------------------------------------------------------------------
def test_reward_statistics_are_those_of_the_held_out_rewards(trl_model, tmp_path):
    stats = config_of(trl_model)["reward_stats"]
    out = tmp_path / "scored.jsonl"
    heldout = trl_model / "heldout_pairs.jsonl"
    score.main(parse_score_config(["--model", str(trl_model), "--input", str(heldout), "--output", str(out)]))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rewards = torch.tensor([r["r_chosen"] for r in rows] + [r["r_rejected"] for r in rows], dtype=torch.float64)
    assert stats["count"] == len(rewards) == 2 * len(rows)
    assert stats["mean"] == pytest.approx(rewards.mean().item(), abs=1e-5)
    assert stats["std"] == pytest.approx(rewards.std(correction=0).item(), abs=1e-5)
    assert stats["source"] == f"held-out split, {len(rows)} pairs"
    card = (trl_model / "README.md").read_text()
    assert f"mean {stats['mean']:.4f}, std {stats['std']:.4f}" in card


def test_normalize_maps_rewards_to_standard_units(trl_model, tmp_path):
    stats = config_of(trl_model)["reward_stats"]
    rows = [{"prompt": r["prompt"], "response": r["chosen"]} for r in generate_pairs(5, seed=4)]
    path = write_jsonl(tmp_path / "responses.jsonl", rows)
    raw, normalized = tmp_path / "raw.jsonl", tmp_path / "normalized.jsonl"
    score.main(parse_score_config(["--model", str(trl_model), "--input", str(path), "--output", str(raw)]))
    score.main(
        parse_score_config(
            ["--model", str(trl_model), "--input", str(path), "--output", str(normalized), "--normalize"]
        )
    )
    r = [json.loads(line)["reward"] for line in raw.read_text().splitlines()]
    z = [json.loads(line)["reward"] for line in normalized.read_text().splitlines()]
    assert z == pytest.approx([(x - stats["mean"]) / stats["std"] for x in r], abs=1e-5)
    fn = RewardFunction(str(trl_model), device="cpu", normalize=True)
    assert fn([row["prompt"] for row in rows], [row["response"] for row in rows]) == pytest.approx(z, abs=1e-5)


def test_without_a_held_out_split_statistics_come_from_training_pairs_and_not_from_the_init(trl_model, tmp_path):
    folder = train_tiny(tmp_path / "rm", model_name_or_path=str(trl_model), eval_split_size=0.0, max_steps=2)
    stats = config_of(folder)["reward_stats"]
    assert stats["source"] == "training split sample, 240 pairs" and stats["count"] == 480
    assert stats != config_of(trl_model)["reward_stats"]
    assert math.isfinite(stats["mean"]) and stats["std"] > 0


def test_normalize_without_statistics_is_a_one_line_error(tiny_model_dir, tmp_path, capsys, quiet_datasets):
    path = write_jsonl(tmp_path / "texts.jsonl", [{"text": "Name a fruit. mango"}])
    assert score.cli(["--model", str(tiny_model_dir), "--input", str(path), "--normalize"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' loading bar
    assert err.startswith("error: ") and "reward statistics" in err


def test_normalize_on_pairs_is_refused(trl_model, capsys, quiet_datasets):
    heldout = trl_model / "heldout_pairs.jsonl"
    assert score.cli(["--model", str(trl_model), "--input", str(heldout), "--normalize"]) == 2
    assert "pair metrics use raw rewards" in capsys.readouterr().err


@pytest.mark.parametrize(
    "options",
    [{}, {"append_eos": False, "add_special_tokens": False}, {"text_as_chat": True}],
    ids=["trl", "grpo", "chat"],
)
def test_scorers_build_the_ids_training_built_and_see_its_rewards(options, tmp_path):
    """Not the scorer against itself: against the ids tokenize_pairs gave training and the final
    evaluation train.py logged."""
    from datasets import Dataset

    from reward.formatting import tokenize_pairs

    folder = train_tiny(tmp_path / "rm", **options)
    rows = [json.loads(line) for line in (folder / "heldout_pairs.jsonl").read_text().splitlines()]
    scorer = RewardScorer(folder, device="cpu", show_progress=False)
    sequence_format = SequenceFormat(**options)
    trained, _ = tokenize_pairs(
        Dataset.from_list(rows), scorer.tokenizer, "explicit prompt", None, sequence_format=sequence_format
    )
    assert [scorer.encode(r["prompt"], r["chosen"]) for r in rows] == trained["chosen_ids"]
    assert [scorer.encode(r["prompt"], r["rejected"]) for r in rows] == trained["rejected_ids"]
    final = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()][-1]
    rewards = scorer.rewards(
        [r["prompt"] for r in rows] * 2, [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    )
    assert sum(rewards) / len(rewards) == pytest.approx(final["eval_reward_mean"], abs=1e-5)


def test_resuming_with_other_formatting_options_is_refused(tmp_path, capsys, quiet_datasets):
    import train

    out = tmp_path / "rm"
    train_tiny(out, max_steps=4, save_steps=2)
    # without its options record (train.py would refuse the flag itself: tests/test_resume_refusals.py), the
    # checkpoint's config.json reward_format still refuses it
    (out / "checkpoint-4" / "training_config.json").unlink()
    argv = [
        "--output_dir",
        str(out),
        "--synthetic_num_pairs",
        "240",
        "--max_steps",
        "6",
        "--resume_from_checkpoint",
        "latest",
        "--per_device_train_batch_size",
        "16",  # train_tiny's: the data order options must match (they are checked first)
    ]
    assert train.cli([*argv, "--append_eos", "false", "--disable_tqdm"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "error: --append_eos: the checkpoint was trained with true; "
        "resume with the same formatting options (or start a new run)"
    )
