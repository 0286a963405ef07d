"""Packing and the shared prefix read exactly the rewards (and gradients) of the padded path.

Tiny random Llama / Qwen2 / GPT-2 reward models in fp32; the padded reference is `compute_rewards` on
the `PairwiseCollator` batch, i.e. the model's own forward and its own reward-token rule.
"""

import random
import warnings

import pytest
import torch
from conftest import build_arch_model
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

from reward.collate import PairwiseCollator
from reward.fast import layout, packed_forward, packing
from reward.fast.layout import PackingFallbackWarning, common_prefix_length, reward_token_index
from reward.fast.packed_forward import forward_counts, supports_packing
from reward.fast.packing import pack_pairs, packed_rewards
from reward.fast.segment_attention import segment_attention
from reward.loss import bradley_terry_loss
from reward.model import compute_rewards

VOCAB = 96
TOL = 1e-5
LAYOUTS = {  # name -> (max_tokens_per_row, share_prefix)
    "packing": (48, False),
    "prefix": (None, True),
    "both": (64, True),
    "one-row": ("all", True),  # the training default
    "one-row-unshared": ("all", False),
}


def build(arch: str, attn: str = "sdpa") -> tuple[torch.nn.Module, int, int]:
    """(model, pad_token_id, eos_token_id): Llama and Qwen2 with a dedicated pad, GPT-2 with pad == eos."""
    return build_arch_model(arch, VOCAB, attn=attn)


def random_pairs(n: int, eos: int, pad: int, seed: int = 0) -> tuple[list[dict], list[int]]:
    """Pairs sharing a prompt (with an EOS inside it, as chat templates do), both sides ending in EOS.

    Returns (pairs, prompt lengths). Includes the edge cases: a response that is all prefix, identical
    sides, and responses that share their first tokens (so the common prefix outgrows the prompt).
    """
    rng = random.Random(seed)
    words = [t for t in range(3, VOCAB - 1) if t not in (pad, eos)]

    def draw(k: int) -> list[int]:
        return [rng.choice(words) for _ in range(k)]

    pairs, prompt_lengths = [], []
    for i in range(n):
        prompt = draw(rng.randint(2, 10)) + [eos] + draw(rng.randint(1, 4))
        chosen, rejected = draw(rng.randint(1, 12)), draw(rng.randint(1, 12))
        if i % 4 == 1:
            rejected = chosen[:2] + rejected  # shared response start
        if i == 2:
            chosen = []  # chosen = prompt + EOS: with pad == eos its reward sits inside the prefix
        if i == 3:
            rejected = list(chosen)
        pairs.append({"chosen_ids": prompt + chosen + [eos], "rejected_ids": prompt + rejected + [eos], "margin": 0.1})
        prompt_lengths.append(len(prompt))
    return pairs, prompt_lengths


def padded_reference(model, pairs, pad):
    batch = PairwiseCollator(pad)(pairs)
    rewards = compute_rewards(model, batch.input_ids, batch.attention_mask)  # (2B,)
    return rewards[: len(pairs)], rewards[len(pairs) :]


def rewards_and_grads(model, reward_fn, margin):
    model.zero_grad(set_to_none=True)
    r_c, r_r = reward_fn()
    bradley_terry_loss(r_c, r_r, margin, center_rewards_coefficient=0.01).loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return torch.cat([r_c, r_r]).detach(), grads


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(layout, "_WARNED", set())


SEEDS = {"llama": 11, "qwen2": 12, "gpt2": 13}  # fixed: hash(str) changes with every process
# measured max |packed - padded| over the 4 cases x 2 modes x 5 layouts: rewards 6.0e-8, gradients
# 2.3e-7 (gradients up to 0.6); the tolerances are ~4x above
REWARD_TOL = dict(rtol=1e-6, atol=3e-7)
GRAD_TOL = dict(rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch,attn", [("llama", "sdpa"), ("qwen2", "sdpa"), ("gpt2", "sdpa"), ("llama", "eager")])
def test_packed_rewards_and_grads_equal_padded(arch, attn):
    """The reference is a second model, built alike and never packed: the packed call switches its
    model's attention to `reward_segments` for good, so the reference still runs `attn`."""
    model, pad, eos = build(arch, attn)
    reference, _, _ = build(arch, attn)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), reference.parameters()))
    assert supports_packing(model)
    pairs, _ = random_pairs(10, eos, pad, seed=SEEDS[arch])
    margin = torch.full((len(pairs),), 0.1)
    for mode in ("eval", "train"):  # dropout is off, so train mode must not change a bit of it
        model.train(mode == "train")
        reference.train(mode == "train")
        want, want_grads = rewards_and_grads(reference, lambda: padded_reference(reference, pairs, pad), margin)
        for name, (budget, share) in LAYOUTS.items():
            batch = pack_pairs(pairs, pad, max_tokens_per_row=budget, share_prefix=share)
            got, grads = rewards_and_grads(model, lambda b=batch: packed_rewards(model, b), margin)
            assert got.dtype == torch.float32
            torch.testing.assert_close(got, want, **REWARD_TOL, msg=lambda m, w=f"{mode} {name}": f"{w}: {m}")
            assert grads.keys() == want_grads.keys()
            for n in grads:
                torch.testing.assert_close(
                    grads[n], want_grads[n], **GRAD_TOL, msg=lambda m, w=f"{mode} {name} {n}": f"{w}: {m}"
                )
    assert reference.config._attn_implementation == attn  # the reference really ran `attn`
    assert model.config._attn_implementation == "reward_segments"
    assert forward_counts(model) == {"packed": 2 * len(LAYOUTS), "padded": 0}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_reward_token_is_the_heads_token(arch):
    """The (row, column) the packer picks is the token the HF head itself reads: each sequence is run
    alone through `AutoModelForSequenceClassification`'s forward, and the position whose `score`
    equals the head's logit must be the packed token's position (and the same token)."""
    model, pad, eos = build(arch)
    pairs, _ = random_pairs(6, eos, pad, seed=5)
    batch = pack_pairs(pairs, pad, max_tokens_per_row=64, share_prefix=True)
    with torch.no_grad():
        for side, index in (("chosen_ids", batch.chosen_index), ("rejected_ids", batch.rejected_index)):
            for pair, (row, col) in zip(pairs, index.tolist()):
                ids = torch.tensor([pair[side]])  # (1, T): alone, no padding
                head = model(input_ids=ids).logits[0, 0]  # the head's own choice of token
                per_position = model.score(model.base_model(input_ids=ids).last_hidden_state[0]).squeeze(-1)  # (T,)
                distance = (per_position - head).abs()
                k = int(distance.argmin())
                assert distance[k] <= 1e-7 and (distance > 1e-6).sum() == len(distance) - 1, distance  # one match
                assert batch.position_ids[row, col] == k and batch.input_ids[row, col] == ids[0, k]
                if arch == "gpt2":  # pad == eos: the head reads the token before the trailing EOS
                    assert k == ids.shape[1] - 2


def test_docstring_example_exactly():
    b = pack_pairs(
        [{"chosen_ids": [5, 6, 7], "rejected_ids": [5, 6, 8, 9]}, {"chosen_ids": [3, 4], "rejected_ids": [3]}],
        pad_token_id=0,
        max_tokens_per_row=8,
    )
    assert b.input_ids.tolist() == [[5, 6, 7, 8, 9, 3, 4]]
    assert b.position_ids.tolist() == [[0, 1, 2, 2, 3, 0, 1]]
    assert b.segments == [(0, 0, 2, 1, 2), (0, 5, 1, 1, 0)]
    mask = b.dense_mask()
    assert mask.shape == (1, 1, 7, 7) and mask.dtype == torch.bool
    assert mask[0, 0].long().tolist() == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 1, 0, 0, 0],
        [1, 1, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 1, 1],
    ]
    assert b.chosen_index.tolist() == [[0, 2], [0, 6]] and b.rejected_index.tolist() == [[0, 4], [0, 5]]
    assert (b.num_tokens, b.sequence_tokens, b.num_positions) == (7, 10, 7)
    assert common_prefix_length([1, 5, 6, 7], [1, 5, 8]) == 2 and reward_token_index([1, 7, 8, 2], 2) == 2


def test_rows_respect_the_budget_and_padding_attends_only_to_itself():
    pairs = [{"chosen_ids": list(range(3, 3 + n)), "rejected_ids": [9] * (n + 1)} for n in (2, 5, 30)]
    b = pack_pairs(pairs, pad_token_id=0, max_tokens_per_row=12, share_prefix=False)
    real = b.input_ids != 0  # (R, T)
    assert real.sum(-1).tolist() == [31, 30, 6 + 5, 3 + 2]  # over-long segments alone, then first-fit decreasing
    assert [row for row, *_ in b.segments] == [0, 1, 2, 2, 3, 3]
    mask = b.dense_mask()[:, 0]  # (R, T, T)
    assert mask.diagonal(dim1=1, dim2=2).all()  # no query row without a key (sdpa would give NaN)
    assert not (mask & ~real[:, :, None] & real[:, None, :]).any()  # padding sees no real token
    assert not (mask & real[:, :, None] & ~real[:, None, :]).any()  # and no real token sees padding


def test_tokens_computed_per_pair_at_most_prompt_plus_both_responses():
    model, pad, eos = build("llama")
    pairs, prompt_lengths = random_pairs(8, eos, pad, seed=3)
    padded = PairwiseCollator(pad)(pairs).input_ids  # (2B, T)
    shared = pack_pairs(pairs, pad, max_tokens_per_row=None, share_prefix=True)
    both = pack_pairs(pairs, pad, max_tokens_per_row=64, share_prefix=True)
    one_row = pack_pairs(pairs, pad, share_prefix=True)  # the default, "all": no padding at all
    assert one_row.input_ids.shape[0] == 1 and one_row.num_positions == one_row.num_tokens
    bound = sum(len(p["chosen_ids"]) + len(p["rejected_ids"]) - n for p, n in zip(pairs, prompt_lengths))  # P+C+R
    exact = sum(
        len(p["chosen_ids"]) + len(p["rejected_ids"]) - common_prefix_length(p["chosen_ids"], p["rejected_ids"])
        for p in pairs
    )
    assert shared.num_tokens == both.num_tokens == one_row.num_tokens == exact <= bound < shared.sequence_tokens
    assert one_row.num_positions <= both.num_positions < shared.num_positions < padded.numel()


@pytest.mark.parametrize("kv_heads", [4, 1])
def test_segment_attention_equals_sdpa_with_the_dense_mask(kv_heads):
    """The per-segment kernel is the dense-mask rule of `dense_mask()`, also for grouped KV heads;
    positions outside every segment (a row's padding) come out as zeros."""
    pairs, _ = random_pairs(7, eos=2, pad=0, seed=9)
    batch = pack_pairs(pairs, 0, max_tokens_per_row=40, share_prefix=True)
    rows, width = batch.input_ids.shape
    g = torch.Generator().manual_seed(0)
    q = torch.randn(rows, 4, width, 8, generator=g, requires_grad=True)  # (R, H, T, d)
    k, v = (torch.randn(rows, kv_heads, width, 8, generator=g, requires_grad=True) for _ in range(2))
    module = torch.nn.Module()
    got, _ = segment_attention(module, q, k, v, None, scaling=0.3, reward_segments=batch.segments)  # (R, T, H, d)
    expand = 4 // kv_heads
    mask = batch.dense_mask()  # (R, 1, T, T)
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(expand, 1), v.repeat_interleave(expand, 1), attn_mask=mask, scale=0.3
    ).transpose(1, 2)  # (R, T, H, d)
    real = (batch.input_ids != 0)[:, :, None, None]  # (R, T, 1, 1)
    assert (got - want * real).abs().max() <= TOL
    assert got[~real.expand_as(got)].abs().max() == 0
    grads = torch.autograd.grad((got * real).square().sum(), (q, k, v))
    want_grads = torch.autograd.grad((want * real).square().sum(), (q, k, v))
    assert max((a - b).abs().max().item() for a, b in zip(grads, want_grads)) <= TOL


def test_segment_attention_is_not_saved_and_leaves_the_padded_forward_alone(tmp_path):
    model, pad, eos = build("llama")
    pairs, _ = random_pairs(5, eos, pad, seed=2)
    before = torch.cat(padded_reference(model, pairs, pad))
    packed_rewards(model, pack_pairs(pairs, pad))
    assert model.config._attn_implementation == "reward_segments"
    assert torch.equal(torch.cat(padded_reference(model, pairs, pad)), before)  # calls without segments = sdpa
    model.save_pretrained(tmp_path)
    assert "reward_segments" not in (tmp_path / "config.json").read_text()


def test_no_common_prefix_is_exact_and_reported_once():
    model, pad, eos = build("qwen2")
    pairs = [{"chosen_ids": [5, 6, 7, eos], "rejected_ids": [8, 9, eos]}, {"chosen_ids": [5, 6], "rejected_ids": [5]}]
    want = torch.cat(padded_reference(model, pairs, pad))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            batch = pack_pairs(pairs, pad, max_tokens_per_row=32, share_prefix=True)
            assert (torch.cat(packed_rewards(model, batch)) - want).abs().max() <= TOL
    messages = [str(w.message) for w in caught if issubclass(w.category, PackingFallbackWarning)]
    assert len(messages) == 1 and "no common token prefix" in messages[0]
    assert batch.num_tokens == 4 + 3 + 2  # the first pair is simply two sequences


def test_bert_falls_back_to_the_padded_forward_once():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=1
    )
    model = BertForSequenceClassification(config).eval()
    pairs, _ = random_pairs(4, eos=2, pad=0)
    want = torch.cat(padded_reference(model, pairs, 0))
    with pytest.warns(PackingFallbackWarning, match="a bidirectional encoder") as caught:
        for _ in range(3):
            got = torch.cat(packed_rewards(model, pack_pairs(pairs, 0, max_tokens_per_row=64)))
            assert torch.allclose(got, want, atol=TOL)
    assert sum(issubclass(w.category, PackingFallbackWarning) for w in caught) == 1
    assert not supports_packing(model)


def test_self_check_rejects_a_packed_forward_that_disagrees(monkeypatch):
    model, pad, eos = build("gpt2")
    real = packed_forward._segment_rewards
    monkeypatch.setattr(packed_forward, "_segment_rewards", lambda m, b: real(m, b) + 1e-2)
    with pytest.warns(PackingFallbackWarning, match="self-check"):
        assert not supports_packing(model)
    pairs, _ = random_pairs(3, eos, pad)
    got = packed_rewards(model, packing.PackingCollator(pad, max_tokens_per_row=64)(pairs))  # the padded path
    assert torch.equal(torch.cat(got), torch.cat(padded_reference(model, pairs, pad)))


def test_bad_inputs_are_refused():
    model, pad, eos = build("llama")
    with pytest.raises(ValueError, match="empty token sequence"):
        pack_pairs([{"chosen_ids": [], "rejected_ids": [5]}], pad)
    with pytest.raises(ValueError, match="pad_token_id=7"):
        packed_rewards(model, pack_pairs([{"chosen_ids": [5, 6], "rejected_ids": [5]}], pad_token_id=7))


def test_sliding_window_qwen2_falls_back():
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=0,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=0,
    )
    with pytest.warns(PackingFallbackWarning, match="sliding window"):
        assert not supports_packing(Qwen2ForSequenceClassification(config))


def test_packed_pairs_carry_their_margins():
    """The margin column reaches a packed micro-batch as it reaches the padded one (reward/collate.py `margins`)."""
    pairs = [{"chosen_ids": [5, 6], "rejected_ids": [5, 7], "margin": 1.5}, {"chosen_ids": [3], "rejected_ids": [4]}]
    for budget, share in (("all", True), (8, False), (None, True)):
        assert pack_pairs(pairs, 0, budget, share).margin.tolist() == [1.5, 0.0]
