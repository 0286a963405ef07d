"""`--torch_compile` on the packed path (reward/fast/compiled.py): the decoder layers compiled one by one,
the per-segment attention eager between their graphs, the layout passed as a tensor.

Checked: the layout tensor means the same attention as the tuples; compiled rewards and gradients
equal eager ones over micro-batches of changing width and segment count, with no new graph once
the first training batch has compiled (the layout must not be baked into a graph); a missing C++
compiler is one line before training."""

from __future__ import annotations

import copy
import random
import shutil

import pytest
import torch

from reward.errors import UserError
from reward.fast import compiled
from reward.fast.packing import pack_pairs, packed_rewards
from reward.fast.segment_attention import layout_list, layout_tensor, segment_attention
from tests.conftest import build_arch_model

# row 0: a pair (P 3, C' 2, R' 1) then a ranking of three (P 2, 1, 2, 3); row 1: one unshared sequence
SEGMENTS = [(0, 0, 3, 2, 1), (0, 6, 2, 1, 2, 3), (1, 0, 5, 0, 0)]


def test_layout_tensor_is_the_same_layout():
    table = layout_tensor(SEGMENTS)  # (3, 6): the shorter rows end in zero-length suffixes
    assert table.shape == (3, 6) and table.dtype == torch.long
    assert layout_list(table) == [(0, 0, 3, 2, 1, 0), (0, 6, 2, 1, 2, 3), (1, 0, 5, 0, 0, 0)]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 16, 8, generator=g) for _ in range(3))  # (R, H, T, d): 14 + 2 padding in row 0
    want, _ = segment_attention(None, q, k, v, None, scaling=0.3, reward_segments=SEGMENTS)
    got, _ = segment_attention(None, q, k, v, None, scaling=0.3, reward_segments=table)
    assert torch.equal(got, want)


def test_a_missing_cpp_compiler_is_one_line(monkeypatch):
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="--torch_compile on CPU needs a C\\+\\+ compiler"):
        compiled.require_compiler(True, torch.device("cpu"))
    compiled.require_compiler(True, torch.device("cuda"))  # CUDA kernels are Triton's: no C++ compiler needed
    compiled.require_compiler(False, torch.device("cpu"))  # not compiling: nothing needed


def random_pairs(n: int, rng: random.Random, vocab: int) -> list[dict]:
    pairs = []
    for _ in range(n):
        prompt = [rng.randrange(3, vocab - 1) for _ in range(rng.randrange(4, 40))]
        chosen, rejected = ([rng.randrange(3, vocab - 1) for _ in range(rng.randrange(1, 12))] for _ in range(2))
        pairs.append({"chosen_ids": prompt + chosen, "rejected_ids": prompt + rejected})
    return pairs


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="inductor on CPU needs a C++ compiler")
def test_compiled_layers_equal_eager_and_compile_once_for_every_layout():
    """Llama only, to keep CI short (GPT-2's blocks go through the same attention interface; checked
    by hand: it passes the same way)."""
    arch = "llama"
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager, pad, _ = build_arch_model(arch, vocab=64, seed=3)
    model = copy.deepcopy(eager)
    line = compiled.compile_layers(model)
    assert line.startswith("torch.compile: 2 decoder layers one by one")
    eager.train(), model.train()  # dropout is off: train mode only turns on autograd's saved tensors
    rng, frames = random.Random(7), []
    for number, n in enumerate([4, 6, 3, 8, 5, 7]):  # a different width and segment count every time
        batch = pack_pairs(random_pairs(n, rng, 64), pad)
        losses, rewards = [], []
        for m in (eager, model):
            m.zero_grad()
            r_chosen, r_rejected = packed_rewards(m, batch)  # (B,), (B,)
            loss = -torch.nn.functional.logsigmoid(r_chosen - r_rejected).mean()
            loss.backward()
            losses.append(loss.item())
            rewards.append(torch.cat([r_chosen, r_rejected]).detach())
        assert (rewards[1] - rewards[0]).abs().max() <= 1e-5, number
        for (name, a), b in zip(eager.named_parameters(), model.parameters()):
            assert (a.grad - b.grad).abs().max() <= 1e-5, (number, name)
        # frames dynamo has compiled so far, recompiles included (a recompile may reuse a cached graph)
        frames.append(counters["frames"]["total"])
    assert counters["stats"]["unique_graphs"] > 0  # the layers were compiled
    assert frames == [frames[0]] * 6  # after the first batch, nothing recompiled for a new width or segment count
