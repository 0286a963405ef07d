"""Ranked rows (prompt + K completions + scores or ranking) train as their comparisons: detected, validated,
expanded with ties skipped and counted, held out by whole prompts, and exactly all-pairs Bradley–Terry."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset

import train
from reward.data import CONVERSATIONAL, EXPLICIT, RANKED, PreferenceData, load_preferences
from reward.errors import UserError
from reward.loss import bradley_terry_loss
from reward.ranked.loss import all_comparisons, all_pairs_loss
from reward.ranked.rows import expand_preferences, expand_rankings, ranked_scores


def ranked_rows(n: int, k: int = 4) -> list[dict]:
    """n prompts of k completions; completion j of prompt i has score (i + j) % k, so orders differ."""
    return [
        {
            "prompt": f"Question {i}:",
            "completions": [f" answer {i}-{j}" for j in range(k)],
            "scores": [float((i + j) % k) for j in range(k)],
        }
        for i in range(n)
    ]


def load_as_pairs(rows: Dataset, **options) -> PreferenceData:
    """Ranked rows as train.py reads them: loaded and validated (reward/data.py), then expanded into pairs."""
    data = load_preferences(rows, **options)
    assert data.format == RANKED
    return expand_preferences(data)


def test_a_ranking_is_its_comparisons_best_as_chosen_ties_skipped():
    row = {"prompt": "Q:", "completions": [" a", " b", " c", " d"], "scores": [3, 1, 2, 1]}
    pairs, stats = expand_rankings(Dataset.from_list([row]), ["prompt"])
    got = [(p["chosen"], p["rejected"]) for p in pairs]
    assert got == [(" a", " b"), (" a", " c"), (" a", " d"), (" c", " b"), (" c", " d")]  # b ~ d: a tie
    assert stats == {"prompts": 1, "k": {4: 1}, "pairs": 5, "ties": 1, "ties_trained": False}
    assert all(p["prompt"] == "Q:" for p in pairs)


def test_a_ranking_column_means_the_same_order_as_scores():
    assert ranked_scores({"ranking": [2, 0, 1]}) == [1.0, 0.0, 2.0]  # 2 best, then 0, then 1
    by_scores = expand_rankings(Dataset.from_list([{"completions": ["x", "y", "z"], "scores": [1, 0, 2]}]))[0]
    by_ranking = expand_rankings(Dataset.from_list([{"completions": ["x", "y", "z"], "ranking": [2, 0, 1]}]))[0]
    assert by_scores.to_list() == by_ranking.to_list()


def test_k_2_rankings_are_the_pair_rows():
    pairs = [{"prompt": f"Q{i}:", "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(6)]
    ranked = [{"prompt": p["prompt"], "completions": [p["rejected"], p["chosen"]], "scores": [0, 1]} for p in pairs]
    got = load_as_pairs(Dataset.from_list(ranked), eval_split_size=0)
    assert got.format == EXPLICIT
    assert [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in got.train] == pairs


def test_held_out_split_takes_whole_prompts():
    data = load_as_pairs(Dataset.from_list(ranked_rows(40)), eval_split_size=0.25, seed=3)
    train_prompts, test_prompts = set(data.train["prompt"]), set(data.test["prompt"])
    assert len(test_prompts) == 10 and not train_prompts & test_prompts
    assert len(data.test) == 10 * 6  # every comparison of a held-out prompt is held out with it
    assert data.rankings["train"] == {"prompts": 30, "k": {4: 30}, "pairs": 180, "ties": 0, "ties_trained": False}


def test_conversational_rankings_become_conversational_pairs():
    user = [{"role": "user", "content": "Hi?"}]
    row = {"prompt": user, "completions": [[{"role": "assistant", "content": c}] for c in "ab"], "ranking": [1, 0]}
    data = load_as_pairs(Dataset.from_list([row, row]), eval_split_size=0)
    assert data.format == CONVERSATIONAL and data.train[0]["chosen"][0]["content"] == "b"


def test_training_on_the_expansion_is_all_pairs_bradley_terry():
    """Rewards per completion, gathered onto the expanded pairs: the pair loss over them equals the
    ranking loss over the rankings ("comparison" normalisation), value and gradient."""
    rows = ranked_rows(5, k=4) + [{"prompt": "Tie:", "completions": [" p", " q", " r"], "scores": [1.0, 1.0, 0.0]}]
    pairs, _ = expand_rankings(Dataset.from_list(rows), ["prompt"])
    torch.manual_seed(0)
    rewards = torch.randn(sum(len(r["completions"]) for r in rows), requires_grad=True)  # (R,)
    starts = [sum(len(r["completions"]) for r in rows[:i]) for i in range(len(rows))]  # each prompt's first reward

    def position(pair: dict, side: str) -> int:
        row = pair["ranking_id"]
        return starts[row] + rows[row]["completions"].index(pair[side])

    r_c = rewards[[position(p, "chosen") for p in pairs]]  # (M,)
    r_r = rewards[[position(p, "rejected") for p in pairs]]  # (M,)
    pair_loss = bradley_terry_loss(r_c, r_r).loss
    ranking = all_pairs_loss(rewards, all_comparisons([ranked_scores(r) for r in rows])).loss
    assert pair_loss.item() == pytest.approx(ranking.item(), abs=1e-6)
    (g_pairs,) = torch.autograd.grad(pair_loss, rewards)
    (g_ranking,) = torch.autograd.grad(ranking, rewards)
    assert torch.allclose(g_pairs, g_ranking, atol=1e-7)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "Q:", "completions": [" a", " b"], "scores": [1]}, "'scores' must be a list of 2 finite numbers"),
        ({"prompt": "Q:", "completions": [" a", " b"], "ranking": [0, 0]}, "'ranking' must list the indices 0..1"),
        ({"prompt": "Q:", "completions": [" a"], "scores": [1]}, "must hold 2 or more responses"),
        ({"prompt": "", "completions": [" a", "  "], "scores": [1, 0]}, "field 'completions' is empty"),
    ],
)
def test_bad_ranked_rows_name_the_row_and_field(row, message):
    with pytest.raises(UserError, match=message):
        load_preferences(Dataset.from_list([row]), eval_split_size=0)


def test_ranked_rows_need_scores_or_a_ranking():
    with pytest.raises(UserError, match="need a scores or a ranking column"):
        load_preferences(Dataset.from_list([{"prompt": "Q:", "completions": [" a", " b"], "best": 0}]))
    with pytest.raises(UserError, match=r"<Dataset> \[train\]: every comparison in its 1 ranked row\(s\) is a tie"):
        load_as_pairs(Dataset.from_list([{"completions": [" a", " b"], "scores": [1, 1]}]), eval_split_size=0)


def test_a_ranked_file_trains_and_says_what_it_expanded(tmp_path, capsys):
    data = tmp_path / "ranked.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ranked_rows(40)))
    out = tmp_path / "run"
    args = ["--dataset_name", str(data), "--output_dir", str(out), "--max_steps", "3", "--disable_tqdm"]
    assert train.cli(args) == 0
    printed = capsys.readouterr().out
    assert "format: explicit prompt | train 216 pairs | held-out 24" in printed  # 36 prompts x 6 | 4 x 6
    assert "rankings: 36 prompts (K=4: 36) -> 216 comparisons, 0 ties skipped | held-out 4 prompts -> 24" in printed
    assert "rankings: grouped, 36 prompts (216 comparisons) | all-pairs Bradley–Terry" in printed


def test_ranked_held_out_reports_best_of_k_and_kendall_tau_as_scoring_the_rankings_would(tmp_path):
    """The held-out metrics put each prompt's ranking back together from its expanded pairs: they equal
    scoring the held-out rankings with the saved model (score.py's path) and computing best-of-K and
    τ from those rewards by hand (distinct scores: τ = (concordant − discordant) / C(K, 2))."""
    from reward.eval.scoring import RewardScorer

    rows = ranked_rows(40)
    data = tmp_path / "ranked.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    args = ["--dataset_name", str(data), "--output_dir", str(out), "--max_steps", "6", "--disable_tqdm"]
    assert train.cli([*args, "--learning_rate", "1e-3", "--per_device_eval_batch_size", "5"]) == 0
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    held_prompts = set(load_preferences(str(data), eval_split_size=0.1, seed=42).test["prompt"])
    held = [r for r in rows if r["prompt"] in held_prompts]
    scored, summary = RewardScorer(str(out), device="cpu").score_rankings(held)
    best, taus = 0, []
    for row in scored:
        r, s = row["rewards"], row["scores"]
        best += s[max(range(4), key=r.__getitem__)] == max(s)
        signs = [(r[i] - r[j]) * (s[i] - s[j]) for i in range(4) for j in range(i + 1, 4)]
        taus.append((sum(x > 0 for x in signs) - sum(x < 0 for x in signs)) / 6)
    assert last["eval_ranked_prompts"] == len(held) == 4
    assert last["eval_best_of_k_accuracy"] == pytest.approx(best / len(held))
    assert last["eval_kendall_tau"] == pytest.approx(sum(taus) / len(taus), abs=1e-6)
    # score.py's ranking summary is the same held-out evaluation: every comparison, then τ per prompt
    assert summary["comparisons"] == last["eval_pairs"] == 4 * 6 and summary["ties"] == 0
    assert summary["comparison_accuracy"] == pytest.approx(last["eval_accuracy"], abs=1e-9)
    assert summary["kendall_tau"] == pytest.approx(last["eval_kendall_tau"], abs=1e-6)


def test_the_generated_ranked_task_has_a_total_order_that_length_does_not_give():
    from collections import Counter

    from reward.presets.synthetic import CATEGORIES, generate_rankings, ranked_length_correlation

    rows = generate_rankings(2000, seed=0)
    assert rows == generate_rankings(2000, seed=0)  # deterministic
    assert all(sorted(r["scores"]) == [0, 1, 2, 3] for r in rows)  # four distinct scores: a total order
    assert abs(ranked_length_correlation(rows)) < 0.05
    # a completion's score is the number of items it names from the asked category
    category_of = {item: cat for cat, items in CATEGORIES.items() for item in items}
    for row in rows[:50]:
        asked = next(cat for cat in CATEGORIES if f" {cat}s" in row["prompt"] or f"a {cat}." in row["prompt"])
        for text, score in zip(row["completions"], row["scores"]):
            named = [w.strip(".,:") for w in text.split() if w.strip(".,:") in category_of]
            assert len(named) == 3 and sum(category_of[w] == asked for w in named) == score
    # no item word says anything alone: over all completions, its mean score is the overall mean
    seen = Counter()
    totals = Counter()
    for row in rows:
        for text, score in zip(row["completions"], row["scores"]):
            for w in {w.strip(".,:") for w in text.split()} & set(category_of):
                seen[w] += 1
                totals[w] += score
    assert all(abs(totals[w] / seen[w] - 1.5) < 0.25 for w in seen)


def test_synthetic_ranked_trains_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dataset_name", "synthetic-ranked", "--synthetic_num_pairs", "50", "--max_steps", "2"]
    assert train.cli([*args, "--output_dir", str(out), "--disable_tqdm"]) == 0
    assert "rankings: 45 prompts (K=4: 45) -> 270 comparisons, 0 ties skipped" in capsys.readouterr().out


# --- hostile rankings (docs/reliability.md): bounded work per row, ties that decide nothing -------------
def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = train.cli(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_row_of_10000_completions_is_one_error_line_naming_row_field_and_the_bound(tmp_path, capsys, quiet_datasets):
    """The expansion is C(K, 2) pairs of texts (~50M dicts for K = 10,000: a MemoryError after ~30 s):
    the row is refused while validating, before the model loads; --skip_bad_rows drops it instead."""
    from reward.data import MAX_RANKED_COMPLETIONS

    huge = {"prompt": "Q:", "completions": [f" answer {j}" for j in range(10_000)], "scores": list(range(10_000))}
    data = tmp_path / "ranked.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [*ranked_rows(20), huge]))
    base = ["--dataset_name", str(data), "--max_steps", "1", "--disable_tqdm", "--eval_strategy", "no"]
    code, _, err = run_cli([*base, "--output_dir", str(tmp_path / "a")], capsys)
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert last.startswith("error: ") and "row 21" in last and "'completions' holds 10000 responses" in last
    assert f"at most {MAX_RANKED_COMPLETIONS} per prompt" in last
    assert not (tmp_path / "a" / "metrics.jsonl").exists()  # stopped before training
    code, out, _ = run_cli([*base, "--output_dir", str(tmp_path / "b"), "--skip_bad_rows"], capsys)
    assert code == 0 and "rankings: 18 prompts (K=4: 18)" in out  # the 20 good rows, 2 held out
    assert f"(at most K={MAX_RANKED_COMPLETIONS} per prompt)" in out  # said at start-up


def all_tied(n: int) -> list[dict]:
    return [{"prompt": f"Q{i}:", "completions": [f" a{i}", f" b{i}", f" c{i}"], "scores": [1, 1, 1]} for i in range(n)]


def test_a_held_out_split_of_ties_only_trains_without_evaluation_and_says_which_split_and_file(
    tmp_path, capsys, quiet_datasets
):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ranked_rows(12)))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in all_tied(2)))
    out = tmp_path / "run"
    code, printed, err = run_cli(["--dataset_name", str(folder), "--output_dir", str(out), "--max_steps", "2",
                                  "--eval_steps", "1", "--disable_tqdm"], capsys)  # fmt: skip
    assert code == 0, err[-2000:]
    assert f"WARNING: {folder} [the test split]: every comparison in its 2 ranked row(s) is a tie" in err
    assert "training without evaluation" in err
    assert "held-out 2 prompts -> 0 comparisons, 6 ties skipped (all ties: not evaluated)" in printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records and not any(k.startswith("eval_") for r in records for k in r)


def test_training_rows_of_ties_only_are_refused_naming_the_file_and_split(tmp_path, capsys, quiet_datasets):
    data = tmp_path / "ties.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in all_tied(6)))
    code, _, err = run_cli(["--dataset_name", str(data), "--output_dir", str(tmp_path / "run"),
                            "--eval_split_size", "0"], capsys)  # fmt: skip
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err
    assert last == (f"error: {data} [train]: every comparison in its 6 ranked row(s) is a tie (equal scores within "
                    "each row): nothing to train on")  # fmt: skip


def test_an_evaluation_set_of_ties_only_is_refused_as_an_evaluation_set():
    from reward.config import TrainConfig
    from reward.run.rows import read_eval_set

    with pytest.raises(UserError, match=r"\[the evaluation set\]: every comparison .* nothing to evaluate on"):
        read_eval_set(TrainConfig(), Dataset.from_list(all_tied(2)))


def test_pair_counts_match_the_pairs_listed_one_by_one():
    """The chunked count (memory O(chunk·K)) against every comparison listed, ties in both on purpose."""
    from reward.ranked.rows import pair_counts

    gen = torch.Generator().manual_seed(0)
    for k in (2, 3, 7, 40):
        x = torch.randint(0, 4, (k,), generator=gen).double().tolist()
        y = torch.randint(0, 4, (k,), generator=gen).double().tolist()
        pairs = [(x[i] - x[j], y[i] - y[j]) for i in range(k) for j in range(i + 1, k)]
        expected = (
            len(pairs),
            sum(a * b > 0 for a, b in pairs),
            sum(a * b < 0 for a, b in pairs),
            sum(a == 0 for a, _ in pairs),
            sum(b == 0 for _, b in pairs),
        )
        assert pair_counts(x, y, chunk=3) == pair_counts(x, y) == expected
