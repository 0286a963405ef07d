"""`--torch_compile`: every decoder layer compiled on its own, shapes dynamic, the attention left eager.

What compiling buys here is fusion: eager PyTorch runs a Llama layer's element-wise work one op at a
time (RMSNorm's scaling, RoPE's rotations of q and k, SiLU x up, the residual adds: each a pass over
a (T, hidden) activation, again in backward), and inductor turns runs of them into single loops.
Measured on the ~20M model, packed long-prompt batches, 2 CPU threads: 11-14 % less time over the
same 20 steps in three alternating pairs of runs (true utilisation 63 % vs 56 %), losses equal to
eager to 1e-6 (benchmarks/README.md, "Where the packed step's time goes").

Why layer by layer, and not the whole backbone as before:

- The packed forward's rows change width with every micro-batch. `dynamic=True` traces the width as
  a symbol, so one graph serves every width (a recompile only when a size crosses a threshold a
  kernel specialises on, or grad mode changes between training and evaluation).
- The per-segment attention (reward/fast/segment_attention.py) is a Python loop over the layout.
  Traced, it would be specialised on every segment length, a new graph per micro-batch; it is
  marked `torch.compiler.disable`, so each layer compiles as two graphs around it (projections +
  RoPE, then the output projection, residuals, norm and MLP) and the loop runs eagerly between them.
- The embedding lookup, the mask construction and the score head stay eager: little work, and the
  mask code branches on the batch.

Parameter names are unchanged (`nn.Module.compile` compiles in place), so checkpoints and resume
are as without it. On CPU inductor writes C++: a compiler must be installed (`require_compiler`).
"""

from __future__ import annotations

import shutil

import torch
from torch import nn

from reward.errors import UserError
from reward.model import decoder_layers, unwrap


def require_compiler(torch_compile: bool, device: torch.device) -> None:
    """--torch_compile on CPU: inductor compiles C++, so fail in preflight, in one line, without a compiler."""
    if torch_compile and device.type == "cpu" and not any(shutil.which(n) for n in ("g++", "c++", "clang++")):
        raise UserError("--torch_compile on CPU needs a C++ compiler (g++ or clang++): install one or drop the flag")


def compile_layers(model: nn.Module) -> str:
    """Compile each decoder layer of `model` in place (dynamic shapes); returns the line to print.

    A model without listed decoder layers (`_no_split_modules` empty) gets its backbone compiled whole.
    `require_compiler` has run in preflight."""
    layers = decoder_layers(model)
    for layer in layers or [unwrap(model).base_model]:
        layer.compile(dynamic=True)
    what = f"{len(layers)} decoder layers one by one" if layers else "the backbone"
    return f"torch.compile: {what}, dynamic shapes, attention eager; the first steps compile (slower)"
