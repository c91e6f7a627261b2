"""Which floating-point precision a model computes in: one resolver for inference and for training.

``precision='auto'`` means bf16 where the hardware computes it natively and fp32 elsewhere:

* CUDA devices that support bf16;
* CPUs with AVX512-BF16 or AMX-BF16 instructions (recent Intel Xeon, AMD Zen 4 and later), where bf16
  convolutions run at about 1.4x the fp32 speed. On other CPUs bf16 is emulated and far slower (a training
  step took 31 s in bf16 against 3.3 s in fp32 on an AVX2-only machine), so they stay in fp32.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "cpu_computes_bf16", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""The values a ``precision`` setting takes."""

_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


@functools.lru_cache(maxsize=4)
def cpu_computes_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bf16 arithmetic instructions (AVX512-BF16 or AMX-BF16), read from the ``flags``
    line of ``cpuinfo`` (Linux). False where that file does not exist (macOS, Windows): ``'auto'`` keeps fp32.
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_NATIVE_BF16_FLAGS & set(line.partition(":")[2].split()))
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` with ``'auto'`` resolved for ``device``: one of 'fp32', 'bf16', 'fp16'.

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision != "auto":
        return precision
    import torch  # here, not at the top: the command line reads PRECISIONS before torch is needed

    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_computes_bf16() else "fp32"
    return "fp32"


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """An autocast context for ``precision`` (resolved by :func:`resolve_precision`) on ``device``; a no-op
    for fp32."""
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
