"""The torch device and dtype a model runs in: ``--device`` and ``dtype`` read by one set of rules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from icl_audio.errors import ModelError
from icl_audio.hf_compat.cpu import cpu_has_fast_bf16  # noqa: F401 (public here: the dtype rule's input)

if TYPE_CHECKING:
    import torch


def resolve_device(device: str = "auto") -> "torch.device":
    """The torch device for ``device``: "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:N".

    Raises ModelError when CUDA is asked for and not available, or for an unknown name.
    """
    import torch

    name = str(device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r} was asked for but CUDA is not available (torch {torch.__version__}); use --device cpu")
        try:
            dev = torch.device(name)
        except RuntimeError as exc:
            raise ModelError(f"invalid device {device!r}: {exc}") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return dev
    raise ModelError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def resolve_dtype(dtype: Any, device: Any):
    """The torch dtype to run in: ``dtype`` if given (torch dtype or name like "bf16", "fp32"), else
    bf16 on CUDA devices of compute capability 8.0 or later (fp16 on older ones, which only emulate
    bf16) and on CPUs with native bf16, fp32 otherwise."""
    import torch

    if dtype is None:
        if device.type == "cuda":
            from icl_audio.precision import cuda_native_bf16

            return torch.bfloat16 if cuda_native_bf16(device) else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = DTYPE_NAMES.get(str(dtype).lower().replace("torch.", ""))
    if name is None:
        raise ModelError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return getattr(torch, name)
