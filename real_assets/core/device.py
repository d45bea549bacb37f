"""Device choice for every torch step: CUDA when present (half precision), else CPU (float32)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a step runs, not where the code location loads
    import torch


@dataclass(frozen=True)
class DeviceChoice:
    device: str
    dtype: torch.dtype

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def pick_device(prefer: str = "auto", half_precision: bool = True) -> DeviceChoice:
    """`auto` picks CUDA when available; half precision (bf16 where supported, else fp16) only on CUDA."""
    import torch

    if prefer not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, not {prefer!r}")
    use_cuda = prefer == "cuda" or (prefer == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    if not use_cuda:
        return DeviceChoice("cpu", torch.float32)
    if not half_precision:
        return DeviceChoice("cuda", torch.float32)
    return DeviceChoice("cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def release_cuda_memory() -> None:
    """Free cached CUDA blocks after a step drops its model, so the next GPU step starts clean. A process
    that never imported torch has none (and does not import it here)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class OnDevice:
    """An argument built where a step runs, once its device is known: `factory(*args, device=...,
    **kwargs)` (a scorer model, say), so that a step sent to another machine loads it there."""

    def __init__(self, factory, *args, **kwargs):
        self.factory, self.args, self.kwargs = factory, args, kwargs

    def build(self, device: DeviceChoice):
        return self.factory(*self.args, device=device, **self.kwargs)


def on_device(values, device: DeviceChoice):
    """`values` (a list or dict) with each `OnDevice` built for `device`."""
    if isinstance(values, dict):
        return {k: v.build(device) if isinstance(v, OnDevice) else v for k, v in values.items()}
    return [v.build(device) if isinstance(v, OnDevice) else v for v in values]
