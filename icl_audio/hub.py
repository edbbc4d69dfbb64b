"""Where models come from: the torch device, local folders vs hub ids, quiet transformers loading;
and the process's CPU allocator setting.

Shared by the codec and the LLM loaders, so that `--device`, `--model` and `--codec` read their
values by the same rules.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from icl_audio.errors import ModelError

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


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a folder rather than a hub id ("name" or "org/name")."""
    # Hub ids are "name" or "org/name"; anything else with a separator or a leading ./~ is a path.
    return name.startswith((".", "/", "~", "\\")) or name.count("/") > 1 or "\\" in name or name.endswith("/")


class quiet_transformers:
    """Silence transformers' progress bars and info chatter while loading (stderr is for our progress)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.bars = hf_logging.is_progress_bar_enabled()
        self.level = hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self.level)
        if self.bars:
            hf_logging.enable_progress_bar()
        return False


# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of handing it back to the OS.

    A CPU forward pass allocates and frees hundreds of tensors of megabytes. By default glibc maps
    each large one fresh from the OS and unmaps it when freed, so every pass page-faults its whole
    working set in again: measured at the Llasa-1B shape, 240,000-320,000 page faults and 0.6-0.8 s
    of kernel time per 1,300-token forward (about 10% of it), for the codec too. With large blocks
    kept on the heap there are none. Peak memory is unchanged; memory freed after the peak stays
    with the process until it exits. Called by the CLI; API users may call it once at start-up.
    Only on Linux with glibc; ``ICL_AUDIO_MALLOC=system`` leaves the allocator alone. Returns
    whether the setting took effect.
    """
    if sys.platform != "linux" or os.environ.get("ICL_AUDIO_MALLOC", "").strip().lower() == "system":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # another C library (musl): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # Largest values glibc accepts on 64-bit: blocks below 32 MB come from the heap (the largest
    # activations of a 1,300-token Llasa pass are ~22 MB), and the heap top is never trimmed.
    mmap_ok = mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024) == 1
    trim_ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    return mmap_ok and trim_ok
