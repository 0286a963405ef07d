"""The consumer check reports ~0 where a consumer formats text as training did and a large gap where
it does not, with the fix that applies (tests/test_grpo.py checks the GRPO reproduction against a
real GRPOTrainer)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import pytest
from conftest import save_encoder, train_tiny
from datasets import Dataset

import score
from reward.eval.consumer_check import check_consumers, format_report, rows_within
from reward.eval.consumers import TOLERANCE, Sequences, Skip, trl_grpo_path, within_positions
from reward.eval.score_cli import parse_score_config
from reward.eval.scoring import RewardScorer, load_rows
from reward.export import save_reward_model
from reward.presets.tiny import CHAT_TEMPLATE, build_tiny_tokenizer, tiny_model

HAS_TRL = importlib.util.find_spec("trl") is not None
PADDED, PACKED = "training forward, padded", "training forward, packed"
PIPELINE, FUNCTION, GRPO = "pipeline(", "reward.RewardFunction", "TRL GRPO"
RB_DEFAULT, RB_HF = "RewardBench, default", "RewardBench, HF"
PPO_EOS, PPO_CUT = "PPO-style get_reward, rollout ends", "PPO-style get_reward, rollout cut"


def results_of(folder, rows_file=None):
    rows, kind = load_rows(str(rows_file or folder / "heldout_pairs.jsonl"))
    scorer = RewardScorer(folder, device="cpu", show_progress=False)
    results = check_consumers(scorer, rows, kind)
    return {r.name: r for r in results}, scorer, results


def find(by_name: dict, prefix: str):
    return next(r for name, r in by_name.items() if name.startswith(prefix))


def trl_missing(r) -> bool:
    """Without the bench extra the GRPO row is skipped, with its reason, and not compared."""
    if HAS_TRL:
        return False
    assert r.skipped == "trl is not installed (pip install trl)"
    return True


def assert_agree(by_name, *prefixes):
    for prefix in prefixes:
        r = find(by_name, prefix)
        if prefix == GRPO and trl_missing(r):
            continue
        assert r.skipped is None and r.max_diff <= TOLERANCE and r.fix is None, (prefix, r)


def assert_differ(by_name, *prefixes, hint: str = ""):
    for prefix in prefixes:
        r = find(by_name, prefix)
        if prefix == GRPO and trl_missing(r):
            continue
        assert r.skipped is None and r.max_diff > 0.05 and r.fix, (prefix, r)
        assert hint in r.fix, (prefix, r.fix)


@pytest.fixture(scope="module")
def trl_model(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("trl") / "rm")


def test_a_default_run_differs_for_grpo_rewardbench_and_cut_rollouts(trl_model):
    by_name, _, _ = results_of(trl_model)
    assert find(by_name, PADDED).max_diff == 0.0
    assert_agree(by_name, PACKED, PIPELINE, FUNCTION, PPO_EOS)
    assert_differ(by_name, GRPO, hint="--append_eos false --add_special_tokens false")
    assert not HAS_TRL or "RewardFunction(DIR)" in find(by_name, GRPO).fix
    assert_differ(by_name, RB_DEFAULT, RB_HF, hint="--text_as_chat true")
    assert_differ(by_name, PPO_CUT, hint="--append_eos false")
    accuracies = {r.accuracy for r in by_name.values() if r.max_diff is not None and r.max_diff <= TOLERANCE}
    assert len(accuracies) == 1  # every consumer that agrees gets the same pairwise accuracy


def test_a_model_trained_in_grpos_format_matches_grpo(tmp_path):
    folder = train_tiny(tmp_path / "rm", append_eos=False, add_special_tokens=False)
    by_name, _, _ = results_of(folder)
    assert_agree(by_name, PACKED, PIPELINE, FUNCTION, GRPO, PPO_CUT)
    assert_differ(by_name, PPO_EOS, hint="strip the EOS")


def test_text_as_chat_matches_rewardbench_default_pipeline(tmp_path):
    folder = train_tiny(tmp_path / "rm", text_as_chat=True)
    by_name, _, _ = results_of(folder)
    # RewardBench masks the doubled BOS, shifting every position by one: RoPE attention depends on
    # relative positions only, so the Llama model's rewards are unchanged
    assert_agree(by_name, PACKED, PIPELINE, FUNCTION, RB_DEFAULT, PPO_EOS)
    assert_differ(by_name, RB_HF, hint="gets it twice")
    assert_differ(by_name, GRPO, hint="--text_as_chat false")


def polite_pairs(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        question = [{"role": "user", "content": f"Can you help with task {i}?"}]
        rows.append(
            {
                "prompt": question,
                "chosen": [{"role": "assistant", "content": "Of course, with pleasure."}],
                "rejected": [{"role": "assistant", "content": f"No. Figure out task {i} yourself."}],
            }
        )
    return rows


def test_conversational_training_matches_grpo_and_rewardbench(tmp_path):
    folder = train_tiny(tmp_path / "rm", dataset=Dataset.from_list(polite_pairs(64)), max_steps=3)
    by_name, _, _ = results_of(folder)
    assert_agree(by_name, PACKED, PIPELINE, FUNCTION, GRPO, RB_DEFAULT, PPO_EOS)


def test_responses_rows_are_checked_without_accuracy(trl_model, tmp_path):
    path = tmp_path / "responses.jsonl"
    rows = [json.loads(line) for line in (trl_model / "heldout_pairs.jsonl").read_text().splitlines()[:6]]
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "response": r["chosen"]}) + "\n" for r in rows))
    by_name, _, results = results_of(trl_model, path)
    assert all(r.accuracy is None for r in results)
    assert find(by_name, PACKED).skipped == "needs pairs (chosen/rejected rows)"
    assert_agree(by_name, PIPELINE, FUNCTION, PPO_EOS)
    assert_differ(by_name, GRPO)


def test_the_cli_prints_the_table_and_the_fixes(trl_model, tmp_path, capsys):
    out = tmp_path / "consumers.jsonl"
    heldout = trl_model / "heldout_pairs.jsonl"
    argv = ["--model", str(trl_model), "--input", str(heldout), "--check_consumers", "--output", str(out)]
    summary = score.main(parse_score_config(argv))
    printed = capsys.readouterr().out
    assert "consumer check:" in printed and "what to change:" in printed
    assert "TRL GRPO, reward_funcs=DIR (trl " in printed
    assert HAS_TRL or "trl not installed" in printed
    lines = printed.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("consumer ") and line.endswith("verdict"))
    table = lines[header + 1 : lines.index("what to change:")]
    assert len(table) == len(summary["consumers"]) == 9
    for line in table:
        assert line.endswith("same as training") or "DIFFERS (fix" in line or "skipped:" in line, line
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [w["name"] for w in written] == [c["name"] for c in summary["consumers"]]
    assert all("rewards" not in w for w in written)


def test_the_check_scores_the_first_rows_and_says_each_consumer_as_it_finishes(trl_model, capsys, quiet_datasets):
    """Nine scoring passes over a whole file looked hung: the check caps its rows by default (--check_rows,
    said in its first line) and prints a line, with rows and seconds, as each consumer finishes."""
    heldout = trl_model / "heldout_pairs.jsonl"
    total = len(heldout.read_text().splitlines())
    assert parse_score_config(["--model", "m", "--input", "i"]).check_rows == 200
    argv = ["--model", str(trl_model), "--input", str(heldout), "--check_consumers", "--check_rows", "3"]
    score.main(parse_score_config(argv))
    lines = capsys.readouterr().out.splitlines()
    check = [line for line in lines if line.startswith("consumer check:")]
    assert check[0] == f"consumer check: first 3 of {total} rows (--check_rows 0 for all)"
    done = [line for line in lines if line.startswith("consumer ") and "/9 " in line]
    assert [line.split("/")[0] for line in done] == [f"consumer {k}" for k in range(1, 10)]
    assert all(line.endswith(": skipped") or ": 3 rows, " in line and line.endswith(" s") for line in done)
    assert lines.index(done[-1]) < lines.index(check[1])  # before the table, as they finish
    assert check[1].startswith("consumer check: 3 rows, ")  # the report's: the rows compared
    argv[-1] = "0"
    score.main(parse_score_config(argv))
    assert f"consumer check: all {total} rows" in capsys.readouterr().out
    assert score.cli([*argv[:-1], "-1"]) == 2
    assert "--check_rows must be >= 0" in capsys.readouterr().err


def test_a_missing_consumer_library_is_skipped_with_one_line(trl_model, monkeypatch):
    real_version = importlib.metadata.version

    def version(package: str) -> str:  # trl's distribution is not there: as after `pip uninstall trl`
        if package == "trl":
            raise importlib.metadata.PackageNotFoundError(package)
        return real_version(package)

    monkeypatch.setattr(importlib.metadata, "version", version)
    by_name, scorer, results = results_of(trl_model)
    grpo = find(by_name, GRPO)
    assert grpo.skipped == "trl is not installed (pip install trl)"
    assert "skipped: trl is not installed" in format_report(scorer, results, 1)


def test_other_row_kinds_are_a_clean_error(trl_model, tmp_path, capsys, quiet_datasets):
    path = tmp_path / "texts.jsonl"
    path.write_text(json.dumps({"text": "Name a fruit. mango"}) + "\n")
    assert score.cli(["--model", str(trl_model), "--input", str(path), "--check_consumers"]) == 2
    assert "needs pairs (chosen/rejected), prompt/response or rated (completion/score) rows" in capsys.readouterr().err


def test_a_template_that_writes_past_its_eos_is_flagged_for_ppo(tmp_path):
    """ChatML-style templates end a turn with EOS + newline: a PPO rollout stops at the EOS."""
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE.replace("{{ eos_token }}", "{{ eos_token }}\n")
    base = tmp_path / "base"
    save_reward_model(tiny_model(tokenizer, seed=0), tokenizer, base, {"model_name_or_path": "tiny"})
    folder = train_tiny(tmp_path / "rm", model_name_or_path=str(base), dataset=Dataset.from_list(polite_pairs(64)))
    by_name, _, _ = results_of(folder)
    assert_agree(by_name, PACKED, PIPELINE, FUNCTION, GRPO, RB_DEFAULT)
    assert_differ(by_name, PPO_EOS, hint="the chat template writes tokens after it")
    assert_differ(by_name, PPO_CUT, hint="penalise unfinished rollouts")


def test_grpo_sees_a_completion_without_the_eos_its_decoding_drops(trl_model):
    pytest.importorskip("trl", reason="needs the bench extra: pip install -e '.[bench]'")
    scorer = RewardScorer(trl_model, device="cpu", show_progress=False)
    eos = scorer.tokenizer.eos_token
    with_eos = trl_grpo_path(scorer, Sequences(["Name a fruit."], [" mango" + eos]))
    assert with_eos == trl_grpo_path(scorer, Sequences(["Name a fruit."], [" mango"]))


def test_rows_past_the_positions_are_left_out_and_said(tmp_path, capsys, quiet_datasets):
    """A BERT with 16 positions and rows of 20+ tokens (a 595-token row for a 512-position BERT): the check
    compares the rows that fit, where every consumer's forward would fail in the embedding on the others,
    and says which rows it left out."""
    folder = save_encoder(tmp_path / "bert16", "bert", max_positions=16)
    rows = [{"prompt": "Q: ", "chosen": "yes", "rejected": "no"} for _ in range(4)]
    rows[1]["chosen"] += " and then it went on and on, saying much more than it needed to"
    rows[3]["rejected"] += " and then it went on and on, saying much more than it needed to"
    scorer = RewardScorer(folder, device="cpu", show_progress=False)

    kept, said = rows_within(scorer, rows, "pairs")
    results = {r.name: r for r in check_consumers(scorer, rows, "pairs")}

    assert kept == [rows[0], rows[2]] and said[0].startswith("left out of the consumer check: skipped 2 of 8")
    assert "row 2, row 4" in said[0]
    assert len(find(results, PIPELINE).rewards) == 4 and len(find(results, PADDED).rewards) == 4  # 2 pairs
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert score.cli(["--model", str(folder), "--input", str(path), "--check_consumers"]) == 0
    printed = capsys.readouterr().out
    assert "consumer check: 2 rows" in printed and "left out of the consumer check: skipped 2 of 8" in printed
    within_positions(scorer, [16])  # a consumer whose own format runs past the positions is skipped, with why
    with pytest.raises(Skip, match="17 tokens, more than the model's 16 positions"):
        within_positions(scorer, [3, 17])
