"""Grouped rankings: a prompt's K responses in one packed segment [P | R1' | ... | RK'] give the rewards
and gradients of K separate padded forwards, and training on them is exactly all-pairs Bradley–Terry
over the expanded pairs (or Plackett–Luce), with exact accumulation."""

import random
import warnings

import pytest
import torch
from datasets import Dataset
from test_packing import build

from reward.batching import BatchPlan, Shuffled, optimizer_steps
from reward.collate import PairwiseCollator, pad_right
from reward.config import TrainConfig, pick
from reward.errors import UserError
from reward.fast.packed_forward import forward_counts, forward_segments
from reward.formatting import tokenize_pairs
from reward.loop import accumulate_gradients
from reward.loss import PairObjective
from reward.metrics import MetricsWriter
from reward.model import compute_rewards, resolve_precision
from reward.presets.synthetic import generate_rankings
from reward.presets.tiny import tiny_model
from reward.ranked.collate import RankedCollator, group_for_training, prompt_lengths, ranked_batch
from reward.ranked.loss import ALL_PAIRS, RankingObjective, plackett_luce_loss
from reward.ranked.rows import RANKING_COLUMNS, expand_rankings, group_rankings
from reward.run.parts import train_with, training_collator

FP32 = resolve_precision(False, False, torch.device("cpu"))
VOCAB = 96
KEEP = (*RANKING_COLUMNS, "tied")  # what tokenizing keeps of pairs made of rankings (reward/ranked/rows.py)


def random_rankings(n: int, eos: int, pad: int, seed: int) -> list[dict]:
    """Grouped rows of K = 2..5 token sequences sharing a prompt (an EOS inside it), with the edge cases:
    a response that is only EOS (pad == eos: its reward token is inside the prefix), responses that
    share their first tokens (the common prefix outgrows the prompt), one response a prefix of another."""
    rng = random.Random(seed)
    words = [t for t in range(3, VOCAB - 1) if t not in (pad, eos)]

    def draw(k: int) -> list[int]:
        return [rng.choice(words) for _ in range(k)]

    rows = []
    for i in range(n):
        prompt = draw(rng.randint(2, 12)) + [eos] + draw(rng.randint(1, 4))
        k = 2 + i % 4
        responses = [draw(rng.randint(1, 10)) for _ in range(k)]
        if i % 3 == 1:
            start = draw(3)
            responses = [start + r for r in responses]  # every response starts alike
        if i == 2:
            responses[1] = []  # prompt + EOS only
        if i == 3:
            responses[2] = responses[0][:1]  # a prefix of another response
        scores = rng.sample(range(10), k)
        rows.append(
            {
                "completion_ids": [prompt + r + [eos] for r in responses],
                "scores": [float(s) for s in scores],
                "better": [a if scores[a] > scores[b] else b for a in range(k) for b in range(a + 1, k)],
                "worse": [b if scores[a] > scores[b] else a for a in range(k) for b in range(a + 1, k)],
                "tied": [False] * (k * (k - 1) // 2),
            }
        )
    return rows


@pytest.mark.parametrize(
    "layout", [("all", True), (40, True), ("all", False)], ids=["one-row", "rows-of-40", "unshared"]
)
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_one_segment_per_prompt_gives_the_rewards_and_gradients_of_separate_padded_forwards(arch, layout):
    """The reference is a model never switched to the segment attention (built twice from one seed), each
    response in its own row of one padded batch; the packed side calls `forward_segments` itself, so no
    fallback can stand in for it."""
    model, pad, eos = build(arch)
    reference, _, _ = build(arch)
    rows = random_rankings(6, eos, pad, seed=11)
    batch = ranked_batch(rows, pad, *layout)
    if layout[1]:
        assert batch.num_tokens < batch.sequence_tokens  # the prompt really is computed once per prompt
    packed = forward_segments(model, batch.rows, pad)  # (S,)
    ids, mask = pad_right(batch.sequences, pad)  # (S, T)
    padded = compute_rewards(reference, ids, mask)  # (S,)
    assert reference.config._attn_implementation != "reward_segments"
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)

    weights = torch.randn(packed.shape, generator=torch.Generator().manual_seed(3))  # (S,)
    (packed * weights).sum().backward()
    (padded * weights).sum().backward()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_segments_tokens_are_its_responses_with_the_prompt_once():
    rows = random_rankings(4, eos=2, pad=0, seed=5)
    batch = ranked_batch(rows, pad_token_id=0, max_tokens_per_row=None)  # one prompt per row, in order
    for prompt, ((row, start, prefix, *suffixes), members) in enumerate(zip(batch.rows.segments, rows)):
        seqs = members["completion_ids"]
        assert sum(suffixes) + prefix == sum(len(s) for s in seqs) - (len(seqs) - 1) * prefix
        assert all(s[:prefix] == seqs[0][:prefix] for s in seqs)  # P is common to all K
        # and the longest such prefix: some response ends there, or two differ at the next token
        assert any(len(s) == prefix for s in seqs) or len({s[prefix] for s in seqs}) > 1
        assert (row, start) == (prompt, 0)


def ranked_pairs(tokenizer, n: int, seed: int = 0, ties: str = "skip") -> Dataset:
    pairs, _ = expand_rankings(Dataset.from_list(generate_rankings(n, seed=seed)), ["prompt"], ties)
    tokenized, _ = tokenize_pairs(pairs, tokenizer, "explicit prompt", 1024, keep=KEEP)
    return tokenized


def test_grouped_comparison_loss_is_the_pair_loss_over_the_expansion(tiny_tokenizer):
    """One micro-batch of 5 prompts (30 comparisons) packed by prompt vs the same 30 comparisons as padded
    pairs: loss, metrics and gradient agree (the tiny Llama, fp32)."""
    pairs = ranked_pairs(tiny_tokenizer, 5)
    grouped = group_rankings(pairs)
    model = tiny_model(tiny_tokenizer, seed=0)
    model.train()
    pad = tiny_tokenizer.pad_token_id
    ranking = RankingObjective(center_rewards_coefficient=0.01, label_smoothing=0.1)
    ours = accumulate_gradients(model, [RankedCollator(pad)(list(grouped))], ranking, FP32)
    g_ours = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    pair = PairObjective(center_rewards_coefficient=0.01, label_smoothing=0.1)
    theirs = accumulate_gradients(model, [PairwiseCollator(pad)(list(pairs))], pair, FP32)
    g_theirs = [p.grad.clone() for p in model.parameters()]
    assert ours.pairs == theirs.pairs == 30
    assert forward_counts(model) == {"packed": 1, "padded": 0}  # the grouped side really ran packed
    for key, value in theirs.summary().items():
        assert ours.summary()[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("normalization", ["comparison", "prompt"])
@pytest.mark.parametrize("loss", ["bradley_terry", "plackett_luce"])
def test_uneven_micro_batches_of_prompts_give_the_big_batch_gradient(tiny_tokenizer, loss, normalization):
    """7 prompts with K = 2..4 (some responses dropped) in micro-batches of 3, 3, 1: the units of each
    micro-batch differ, and the step's divisor (comparisons or prompts of the whole step) keeps it exact."""
    pairs = ranked_pairs(tiny_tokenizer, 7, seed=1)
    dropped = {(1, 3), (4, 3), (5, 2), (5, 3)}  # (prompt, response): as --max_length would drop them
    keep = [
        i
        for i, p in enumerate(pairs)
        if (p["ranking_id"], p["chosen_index"]) not in dropped and (p["ranking_id"], p["rejected_index"]) not in dropped
    ]
    rows = list(group_rankings(pairs.select(keep)))
    assert sorted({len(r["completion_ids"]) for r in rows}) == [2, 3, 4]
    objective = RankingObjective(loss, normalization)
    collate = RankedCollator(tiny_tokenizer.pad_token_id)
    model = tiny_model(tiny_tokenizer, seed=0)
    model.train()
    big = accumulate_gradients(model, [collate(rows)], objective, FP32)
    g_big = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    parts = [collate(rows[:3]), collate(rows[3:6]), collate(rows[6:])]
    small = accumulate_gradients(model, parts, objective, FP32)
    g_small = [p.grad.clone() for p in model.parameters()]
    assert big.summary()["loss"] == pytest.approx(small.summary()["loss"], abs=1e-6)
    for a, b in zip(g_big, g_small):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    # the guard: dividing each micro-batch by its own units (then by k) gives another gradient
    model.zero_grad(set_to_none=True)
    for part in parts:
        accumulate_gradients(model, [part], objective, FP32)
        for p in model.parameters():
            p.grad /= len(parts)
    assert max((a - p.grad).abs().max().item() for a, p in zip(g_big, model.parameters())) > 1e-4


def test_plackett_luce_in_the_loop_is_the_listwise_loss_of_each_order(tiny_tokenizer):
    rows = list(group_rankings(ranked_pairs(tiny_tokenizer, 3)))
    model = tiny_model(tiny_tokenizer, seed=0)
    batch = RankedCollator(tiny_tokenizer.pad_token_id)(rows)
    out = accumulate_gradients(model, [batch], RankingObjective("plackett_luce"), FP32)
    with torch.no_grad():
        rewards = batch.rewards(model)  # (S,)
    by_hand = 0.0
    for order in batch.orders:  # best first: −Σ_t [r_π(t) − log Σ_{u ≥ t} exp r_π(u)]
        r = rewards[order].double()
        by_hand += -sum(r[t] - torch.logsumexp(r[t:], 0) for t in range(len(r) - 1)).item()
    loss_sum = out.summary()["loss"] * out.pairs
    assert loss_sum == pytest.approx(by_hand, rel=1e-5)
    assert out.pairs == 3 * 3  # K − 1 choices per prompt
    assert loss_sum == pytest.approx(plackett_luce_loss(rewards, batch.orders).loss_sum.item(), rel=1e-6)


def test_ties_are_skipped_or_trained_toward_a_half(tiny_tokenizer):
    rows = [{"prompt": "Q: pick", "completions": [" a b", " c", " d e f"], "scores": [1.0, 1.0, 0.0]}]
    skipped, _ = expand_rankings(Dataset.from_list(rows), ["prompt"])
    half, stats = expand_rankings(Dataset.from_list(rows), ["prompt"], ties="half")
    assert (len(skipped), len(half), stats["ties"], sum(half["tied"])) == (2, 3, 1, 1)
    tokenized, _ = tokenize_pairs(half, tiny_tokenizer, "explicit prompt", 1024, keep=KEEP)
    grouped = group_rankings(tokenized)
    assert grouped[0]["tied"] == [True, False, False] and grouped[0]["better"] == [0, 0, 1]
    model = tiny_model(tiny_tokenizer, seed=0)
    batch = RankedCollator(tiny_tokenizer.pad_token_id)(list(grouped))
    out = accumulate_gradients(model, [batch], ALL_PAIRS, FP32)
    with torch.no_grad():
        r = batch.rewards(model).double()  # (3,)
    f = torch.nn.functional.logsigmoid
    by_hand = -(0.5 * f(r[0] - r[1]) + 0.5 * f(r[1] - r[0])) - f(r[0] - r[2]) - f(r[1] - r[2])
    assert out.summary()["loss"] * out.pairs == pytest.approx(by_hand.item(), rel=1e-5)
    decided = [(r[0] > r[2]).item(), (r[1] > r[2]).item()]  # accuracy counts the 2 decided comparisons only
    assert out.pairs == 3 and out.summary()["accuracy"] == sum(decided) / 2


def test_plackett_luce_refuses_tied_scores_and_options_refuse_what_pairs_cannot_do(tiny_tokenizer):
    rows = [{"prompt": "Q:", "completions": [" a", " b", " c"], "scores": [1.0, 1.0, 0.0]}] * 2
    pairs, _ = expand_rankings(Dataset.from_list(rows), ["prompt"])
    tokenized, _ = tokenize_pairs(pairs, tiny_tokenizer, "explicit prompt", 1024, keep=KEEP)
    with pytest.raises(UserError, match="2 of 2 prompts have tied scores"):
        group_for_training(tokenized, RankingObjective("plackett_luce"))
    for options, message in [
        ({"rankings": "pairs", "tie_handling": "half"}, "needs --rankings grouped"),
        ({"rankings": "pairs", "ranking_loss": "plackett_luce"}, "needs --rankings grouped"),
        ({"ranking_loss": "plackett_luce", "label_smoothing": 0.1}, "has no --label_smoothing"),
        ({"ranking_normalization": "per_prompt"}, "'comparison' or 'prompt'"),
    ]:
        with pytest.raises(UserError, match=message):
            TrainConfig(**options)


def test_grouped_lengths_and_row_units(tiny_tokenizer):
    rows = group_rankings(ranked_pairs(tiny_tokenizer, 5))
    assert prompt_lengths(rows) == [sum(map(len, r["completion_ids"])) for r in rows]
    assert prompt_lengths(rows.select([3, 1])) == [sum(map(len, rows[i]["completion_ids"])) for i in (3, 1)]
    cfg = TrainConfig(per_device_train_batch_size=2, gradient_accumulation_steps=2, group_by_length=False)
    units = ALL_PAIRS.row_units(rows)
    assert units == [6] * 5  # comparisons per prompt (K = 4)
    collate, plan = RankedCollator(tiny_tokenizer.pad_token_id), pick(BatchPlan, cfg)
    steps = optimizer_steps(rows, collate, Shuffled(len(rows), cfg.seed), plan, units=units)
    assert [next(steps)[2] for _ in range(2)] == [24, 6]  # 4 prompts, then the epoch's last one


@pytest.mark.parametrize("accumulation", [1, 2])
def test_training_grouped_equals_training_on_the_expanded_pairs_in_one_full_step(
    tiny_tokenizer, tmp_path, accumulation
):
    """One optimizer step over every comparison (the order cannot matter then): grouped by prompt and
    packed, in 1 or 2 micro-batches, vs the expanded pairs through the padded path. Same weights after."""
    pairs = ranked_pairs(tiny_tokenizer, 6)
    grouped, _ = group_for_training(pairs, ALL_PAIRS)
    pad = tiny_tokenizer.pad_token_id
    results = []
    for ds, collate, batch in (
        (grouped, RankedCollator(pad), 6 // accumulation),
        (pairs, PairwiseCollator(pad), len(pairs)),
    ):
        cfg = TrainConfig(
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulation if ds is grouped else 1,
            max_steps=1,
            learning_rate=1e-3,
            # Adam's first step is lr · g / (|g| + eps): with eps 1e-8 an entry whose gradient is ~1e-9 moves by
            # ±lr on float rounding alone; eps 1e-3 keeps such entries linear in g, so rounding stays rounding
            adam_epsilon=1e-3,
            warmup_ratio=0.0,
            group_by_length=False,
            eval_strategy="no",
            disable_tqdm=True,
        )
        model = tiny_model(tiny_tokenizer, seed=0)
        writer = MetricsWriter(tmp_path / f"m{len(results)}.jsonl")
        out = train_with(cfg, model, ds, collate=collate, precision=FP32, writer=writer)
        results.append((model, out))
    (ours, a), (theirs, b) = results
    assert a.train["pairs"] == b.train["pairs"] == 36
    assert a.train["loss"] == pytest.approx(b.train["loss"], rel=1e-6)
    moved = max(
        (p - q).abs().max().item() for p, q in zip(ours.parameters(), tiny_model(tiny_tokenizer, seed=0).parameters())
    )
    assert moved > 1e-4  # the step did something
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_prompts_laid_out_packed_for_a_model_that_cannot_pack_run_padded_and_are_counted():
    """The batch was laid out packed, the model refuses packing (an encoder): its own padded forward runs,
    counted as such in `forward_counts`; a batch laid out with another pad id than the model's is refused."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, num_labels=1, pad_token_id=0)  # fmt: skip
    encoder = BertForSequenceClassification(config).eval()
    batch = ranked_batch(random_rankings(3, eos=2, pad=0, seed=4), 0)
    assert batch.rows is not None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fallback's warning, said once per process (tests/test_packing.py)
        got = batch.rewards(encoder)  # (S,)
        ids, mask = pad_right(batch.sequences, 0)
        torch.testing.assert_close(got, compute_rewards(encoder, ids, mask))
    assert forward_counts(encoder) == {"packed": 0, "padded": 1}
    model, pad, eos = build("llama")
    with pytest.raises(ValueError, match="pad_token_id=7"):
        ranked_batch(random_rankings(2, eos, pad, seed=4), pad_token_id=7).rewards(model)


def test_an_encoder_trains_grouped_rankings_through_the_padded_forward(tmp_path):
    """BERT cannot be packed (every token sees the whole sequence): its collator is the padded one, and the
    rewards are its own padded forward's; the run trains and reports per comparison."""
    from conftest import save_encoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = save_encoder(tmp_path / "bert", "bert")
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForSequenceClassification.from_pretrained(folder)
    cfg = TrainConfig()
    collate = training_collator(cfg, tokenizer.pad_token_id, model, grouped=True)
    assert isinstance(collate, RankedCollator) and not collate.packed
    rows = list(group_rankings(ranked_pairs(tokenizer, 3)))
    batch = collate(rows)
    assert batch.rows is None
    model.eval()
    with torch.no_grad():
        ids, mask = pad_right(batch.sequences, tokenizer.pad_token_id)
        torch.testing.assert_close(batch.rewards(model), model(input_ids=ids, attention_mask=mask).logits[:, 0])
    import train as train_script

    out = train_script.main(
        TrainConfig(
            model_name_or_path=str(folder),
            dataset_name="synthetic-ranked",
            synthetic_num_pairs=40,
            max_steps=2,
            output_dir=str(tmp_path / "run"),
            disable_tqdm=True,
        )
    )
    assert out.train["pairs"] > 0 and out.eval["ranked_prompts"] == 4


def test_a_grouped_run_resumes_exactly_and_its_card_says_how_it_trained(tmp_path):
    import train as train_script

    def options(out, **more):
        base = dict(
            dataset_name="synthetic-ranked",
            synthetic_num_pairs=30,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            max_steps=6,
            save_steps=2,
            learning_rate=1e-3,
            logging_steps=1,
            output_dir=str(out),
            disable_tqdm=True,
            use_cpu=True,
        )
        return TrainConfig(**{**base, **more})

    whole = train_script.main(options(tmp_path / "full"))
    stopped = train_script.main(options(tmp_path / "cut"), should_stop=lambda step: step == 3)  # mid-epoch
    assert stopped.stopped and stopped.steps == 3
    train_script.main(options(tmp_path / "cut", resume_from_checkpoint="latest"))
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole.train["pairs"] > 0
    card = (tmp_path / "full" / "README.md").read_text()
    assert "comparisons of 27 rankings (K=4: 27), trained grouped by prompt" in card
    assert "all-pairs Bradley–Terry, each comparison weighted alike; 0 tied comparisons skipped" in card
