"""``trainer.precision``: which matmul dtype the batched linear / MLP trainer uses.

"fp32" and "bf16" are taken as given; "auto" (the shipped jobs' choice; a spec without the field means "fp32") picks bf16 only
where this machine runs bfloat16 matmuls natively, and fp32 elsewhere:

- a CUDA device that supports bf16 (``torch.cuda.is_bf16_supported``);
- an x86 CPU with AVX512-BF16 or AMX-BF16, or an Arm CPU with the BF16
  extension (read from ``/proc/cpuinfo``).

Without native support PyTorch emulates bf16 matmuls: measured on an AVX2-only
AMD EPYC, ``torch.bmm`` of 250x32x65 by 65x64 ran 18x slower in bf16 than in
fp32, while on an AVX512-BF16 Xeon bf16 trained the demo MLPs 2.2x faster with
the same accuracy and run-to-run noise. A model trained by autograd (a user's
``model.name``, the CNN) always runs in fp32 under "auto".

"auto" is resolved where a block is trained, so rows of one run trained on
different machines may differ in precision; set "fp32" or "bf16" to pin it.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

from ..spec import PRECISIONS  # noqa: F401  (the names resolve_precision takes)

COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_CPU_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 "flags" / Arm "Features" names


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU's feature list names a native bfloat16 matmul extension (False where unknown)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: Apple silicon's bf16 is not used by PyTorch's CPU matmuls either
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return bool(_CPU_FLAGS & set(value.split()))
    return False


def resolve_precision(precision: str, device: torch.device | str = "cpu", by_hand: bool = True) -> str:
    """"fp32" or "bf16" for ``trainer.precision`` on ``device`` (``by_hand``: the hand-written linear / MLP path)."""
    if precision != "auto":
        return precision
    if not by_hand:
        return "fp32"
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64"):
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"
