"""The FlexAttention prototype (reward/fast/flex_attention.py, off by default): its forward is the
per-segment loop's on CPU; its backward is not available on CPU in this torch (what docs/gpu.md says),
so its gradients are checked on CUDA only (benchmarks/gpu_check.sh runs those tests)."""

from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch

from reward.collate import PairwiseCollator
from reward.fast.flex_attention import flex_segment_attention, token_layout
from reward.fast.packed_forward import supports_packing
from reward.fast.packing import pack_pairs, packed_rewards
from reward.fast.segment_attention import NAME, segment_attention
from reward.model import compute_rewards
from reward.presets.tiny import tiny_model

pytest.importorskip("torch.nn.attention.flex_attention")

# row 0: a pair [P|C'|R'], an unshared sequence, a pair whose R' is empty; row 1: a ranking of K = 3
# [P|R1'|R2'|R3'], a pair without a common prefix, then 5 columns of trailing padding
SEGMENTS = [(0, 0, 5, 3, 4), (0, 12, 6, 0, 0), (0, 18, 4, 2, 0), (1, 0, 3, 2, 4, 1), (1, 10, 0, 6, 3)]
ROWS, WIDTH = 2, 24


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():  # eager FlexAttention warns that it is not compiled
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_one_flex_call_equals_the_per_segment_loop(kv_heads):
    torch.manual_seed(0)
    q = torch.randn(ROWS, 4, WIDTH, 8)
    k, v = torch.randn(ROWS, kv_heads, WIDTH, 8), torch.randn(ROWS, kv_heads, WIDTH, 8)
    want, _ = segment_attention(None, q, k, v, None, scaling=0.3, reward_segments=SEGMENTS)  # (R, T, H, d)
    got, _ = quiet(flex_segment_attention, None, q, k, v, None, scaling=0.3, reward_segments=SEGMENTS)
    assert got.shape == want.shape == (ROWS, WIDTH, 4, 8)
    assert (got - want).abs().max().item() < 1e-5
    assert got[1, 19:].abs().max().item() == 0  # trailing padding: zero, as the loop gives


def test_the_layout_marks_segments_and_branches():
    seg, branch = token_layout(SEGMENTS, ROWS, WIDTH)
    assert seg[0, :12].unique().tolist() == [0] and branch[0, :12].tolist() == [0] * 5 + [1] * 3 + [2] * 4
    assert branch[1, :10].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    assert branch[1, 10:19].tolist() == [1] * 6 + [2] * 3 and seg[1, 19:].eq(-1).all()


@pytest.fixture
def flex_calls(monkeypatch) -> list[int]:
    """For one test, `use_segment_attention` registers the prototype (counting its calls) under the
    segment attention's name; afterwards the loop is registered again."""
    from transformers import AttentionInterface

    import reward.fast.segment_attention as module

    calls: list[int] = []

    def counted(*args, **kwargs):
        if kwargs.get("reward_segments") is not None:  # a packed call (padded ones go to sdpa)
            calls.append(1)
        return flex_segment_attention(*args, **kwargs)

    monkeypatch.setattr(module, "segment_attention", counted)  # what register_segment_attention registers
    yield calls
    AttentionInterface.register(NAME, segment_attention)


def test_a_packed_model_forward_through_flex_gives_the_padded_rewards(tiny_tokenizer, flex_calls):
    from reward.presets.synthetic import generate_pairs

    model = tiny_model(tiny_tokenizer, seed=0).eval()
    pairs = [
        {"chosen_ids": tiny_tokenizer(r["prompt"] + r["chosen"])["input_ids"],
         "rejected_ids": tiny_tokenizer(r["prompt"] + r["rejected"])["input_ids"]}
        for r in generate_pairs(4, seed=1)
    ]  # fmt: skip
    pad = model.config.pad_token_id
    with torch.no_grad():
        assert quiet(supports_packing, model)  # its self-check ran packed through flex, too
        r_c, r_r = quiet(packed_rewards, model, pack_pairs(pairs, pad))
        ids = [p["chosen_ids"] for p in pairs] + [p["rejected_ids"] for p in pairs]
        width = max(map(len, ids))
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in ids])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
        want = compute_rewards(model, input_ids, mask)
    assert (torch.cat([r_c, r_r]) - want).abs().max().item() < 1e-5
    layers = model.config.num_hidden_layers
    assert len(flex_calls) == 3 * layers  # self-check: 2 packed forwards, then ours: one call per layer


def test_flex_attention_has_no_cpu_backward_in_this_torch():
    """The reason the prototype stays off: if this starts failing, torch gained a CPU backward and the
    gradients can be checked here (update docs/gpu.md)."""
    from torch.nn.attention.flex_attention import flex_attention

    q = torch.randn(1, 2, 16, 8, requires_grad=True)
    with pytest.raises(NotImplementedError, match="backward on CPU"):
        quiet(flex_attention, q, q.detach(), q.detach())


# --- its gradients: CUDA only ------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward needs CUDA here")
GPU_TOL = dict(rtol=1e-4, atol=1e-5)  # fp32 on both sides; the fused kernel sums in its own order


@needs_cuda
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_flex_gradients_equal_the_per_segment_loop_on_cuda(kv_heads):
    """The compiled kernel (what the prototype runs on CUDA) against the loop on the same CUDA tensors,
    forward and d/dq, d/dk, d/dv: the first check docs/gpu.md asks for before the prototype is used."""
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(ROWS, 4, WIDTH, 16, device="cuda", generator=g, requires_grad=True)  # d 16: the kernel's least
    k, v = (torch.randn(ROWS, kv_heads, WIDTH, 16, device="cuda", generator=g, requires_grad=True) for _ in range(2))
    got, _ = flex_segment_attention(None, q, k, v, None, scaling=0.3, reward_segments=SEGMENTS)  # (R, T, H, d)
    want, _ = segment_attention(None, q, k, v, None, scaling=0.3, reward_segments=SEGMENTS)
    torch.testing.assert_close(got, want, **GPU_TOL)
    weight = torch.randn(got.shape, device="cuda", generator=g)  # a loss that reaches every output
    grads = torch.autograd.grad((got * weight).sum(), (q, k, v))
    want_grads = torch.autograd.grad((want * weight).sum(), (q, k, v))
    for name, a, b in zip("qkv", grads, want_grads):
        torch.testing.assert_close(a, b, **GPU_TOL, msg=lambda m, n=name: f"d{n}: {m}")


@needs_cuda
def test_a_packed_model_through_flex_has_the_padded_gradients_on_cuda(flex_calls):
    """The second check: a whole packed model (2-layer Llama, grouped KV heads, head dim 16) through
    the prototype; rewards and every parameter's gradient equal the padded forward's on the same GPU."""
    from tests.conftest import build_arch_model
    from tests.test_compiled import random_pairs

    model, pad, _ = build_arch_model("llama", vocab=64, seed=3)
    reference = copy.deepcopy(model).cuda()  # never packed: padded (2B, T) batches through sdpa
    model = model.cuda()
    pairs = random_pairs(6, random.Random(5), 64)
    r_c, r_r = quiet(packed_rewards, model, pack_pairs(pairs, pad))  # (B,), (B,)
    (-torch.nn.functional.logsigmoid(r_c - r_r).mean()).backward()
    batch = PairwiseCollator(pad)(pairs)
    want = compute_rewards(reference, batch.input_ids.cuda(), batch.attention_mask.cuda())  # (2B,)
    (-torch.nn.functional.logsigmoid(want[:6] - want[6:]).mean()).backward()
    torch.testing.assert_close(torch.cat([r_c, r_r]), want, **GPU_TOL)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, **GPU_TOL, msg=lambda m, n=name: f"{n}: {m}")
    assert len(flex_calls) == 3 * model.config.num_hidden_layers  # the self-check's 2 forwards, then ours
