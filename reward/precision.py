"""Device and numeric precision: fp32, bf16 autocast (CPU or GPU), or fp16 autocast + GradScaler (GPU).

Weights and optimizer state stay float32 in every mode (mixed precision, not half-precision
training): autocast runs the matmuls in 16 bits, and the loss is always computed in float32
(`reward/loss.py`). fp16 needs loss scaling because its small exponent range flushes tiny gradients
to zero; bf16 has float32's exponent range and does not.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from reward.errors import UserError


@dataclass
class Precision:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None: plain float32
    scaler: torch.amp.GradScaler | None  # fp16 only

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}[
            self.autocast_dtype
        ]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def pick_device(use_cpu: bool = False) -> torch.device:
    """CUDA when present (unless `use_cpu`): this process's GPU under torchrun (LOCAL_RANK), else CPU."""
    if torch.cuda.is_available() and not use_cpu:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def resolve_precision(bf16: bool, fp16: bool, device: torch.device) -> Precision:
    if bf16 and fp16:
        raise UserError("--bf16 and --fp16 are mutually exclusive; pick one")
    if fp16:
        if device.type != "cuda":
            raise UserError("--fp16 needs a CUDA GPU (fp16 autocast + gradient scaler); on CPU use --bf16 or fp32")
        return Precision(device, torch.float16, torch.amp.GradScaler("cuda"))
    if bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--bf16: this GPU does not support bfloat16; use --fp16")
        return Precision(device, torch.bfloat16, None)
    return Precision(device, None, None)
