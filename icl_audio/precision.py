"""Floating-point precision per device: which CUDA devices compute bf16 natively, and torch's fp32
precision flags set for a block of work and restored.

Two stages need a given fp32 precision whatever the rest of the process chose: the codec's faithful
path (true fp32 on CUDA: no TF32 in its convolutions and matmuls) and the engine's fp32 LM head
(TF32 on CUDA, bf16 arithmetic on CPU, where both operands hold bf16 values and every product is
exact; see :mod:`icl_audio.engine`). :class:`fp32_precision` is the one place in icl-audio that sets
these process-wide flags. It uses torch's ``fp32_precision`` API (``torch.backends.cuda.matmul``,
``torch.backends.cudnn.conv``, ``torch.backends.mkldnn.matmul``), never the legacy ``allow_tf32``
flags: from torch 2.9 on, reading a legacy flag raises once anything in the process has used the new
API (transformers' ``enable_tf32`` does), and mixing the two leaves the effective setting unclear.
"""

from __future__ import annotations

import threading
from typing import Any

# Flag name -> (torch.backends submodule, its attribute holding ``fp32_precision``), and the values
# accepted for it ("ieee": true fp32; "tf32": TensorFloat-32 on CUDA; "bf16": bf16 arithmetic with
# fp32 accumulation on CPUs that have it).
FLAGS = {
    "cuda_matmul": ("cuda", "matmul", ("ieee", "tf32")),
    "cudnn_conv": ("cudnn", "conv", ("ieee", "tf32")),
    "cpu_matmul": ("mkldnn", "matmul", ("ieee", "bf16")),
}

# The flags are process-wide: a block that sets them holds this lock, so that two threads each
# setting and restoring them can never restore each other's value halfway through the other's block.
_LOCK = threading.RLock()


def cuda_native_bf16(device: Any) -> bool:
    """Whether the CUDA ``device`` computes bf16 natively: compute capability 8.0 or later (Ampere on).

    ``device``: a torch device or its name ("cuda" means the current CUDA device); any other device
    type gives False. ``torch.cuda.is_bf16_supported()`` is not the test: by default it also counts
    emulated bf16 (T4, V100: slower than fp16), and it asks about the current device, not the one chosen.
    """
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return False
    return tuple(torch.cuda.get_device_capability(dev)) >= (8, 0)


class fp32_precision:
    """Context manager: torch's fp32 precision flags set for a block, then restored exactly.

    Keywords (each optional; ``None`` leaves a flag alone): ``cuda_matmul`` and ``cudnn_conv``:
    "ieee" or "tf32"; ``cpu_matmul`` (oneDNN): "ieee" or "bf16". With no flag to set it does
    nothing at all (no lock either). Blocks are serialised by a process-wide lock, so threads that
    set the flags never see each other's values; work started in other threads from inside a block
    (the codec's acoustic branch) runs under the block's settings.
    """

    def __init__(self, **settings: str | None) -> None:
        unknown = set(settings) - set(FLAGS)
        if unknown:
            raise ValueError(f"unknown precision flag(s): {', '.join(sorted(unknown))}")
        for name, value in settings.items():
            if value is not None and value not in FLAGS[name][2]:
                raise ValueError(f"{name} precision must be one of {', '.join(FLAGS[name][2])}, got {value!r}")
        self.settings = {name: value for name, value in settings.items() if value is not None}
        self.saved: list[tuple[Any, str]] = []

    def __enter__(self) -> "fp32_precision":
        if not self.settings:
            return self
        import torch

        _LOCK.acquire()
        try:
            for name, value in self.settings.items():
                backend, op, _ = FLAGS[name]
                flags = getattr(getattr(torch.backends, backend), op)
                self.saved.append((flags, flags.fp32_precision))
                flags.fp32_precision = value
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        if self.settings:
            self._restore()
        return False

    def _restore(self) -> None:
        try:
            for flags, value in reversed(self.saved):
                flags.fp32_precision = value
        finally:
            self.saved = []
            _LOCK.release()
