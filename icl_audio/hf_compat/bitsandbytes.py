"""bitsandbytes' import: without fetching or running code from the Hugging Face hub, and quietly.

Contact point (tested with bitsandbytes 0.50.2 and kernels 0.19.1): on CPUs with AVX512-BF16,
importing bitsandbytes (``bitsandbytes/backends/cpu/ops.py``, at import time) calls
``kernels.get_kernel("kernels-community/quantization-bitsandbytes", version=1)``, which downloads
a compiled 4-bit kernel from the hub into the Hugging Face cache and loads it into the process;
when that fails (offline, not cached) it logs two warning lines and uses the CPU kernels bitsandbytes
ships. Neither bitsandbytes nor kernels has a switch to skip the look-up (``USE_HUB_KERNELS`` is
transformers' own and does not reach it; ``LOCAL_KERNELS`` only redirects it), and ``kernels`` is a
dependency of transformers 5, so it is always installed.

:func:`import_bitsandbytes` imports bitsandbytes with ``kernels.get_kernel`` refusing for the
duration of the import (so bitsandbytes takes its own fallback: the kernels shipped in its wheel),
and with bitsandbytes' loggers muted during the import. Set ``ICL_AUDIO_HUB_KERNELS=1`` to let
bitsandbytes fetch and run the hub kernel as it would by itself. Plain path: ``import bitsandbytes``.
Nothing is patched once the import is done.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

HUB_KERNELS_ENV = "ICL_AUDIO_HUB_KERNELS"


def hub_kernels_allowed() -> bool:
    """Whether the user asked for bitsandbytes' hub kernels (``ICL_AUDIO_HUB_KERNELS=1``)."""
    return os.environ.get(HUB_KERNELS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def import_bitsandbytes():
    """``import bitsandbytes``, without its hub-kernel look-up unless allowed (see the module docstring)."""
    if "bitsandbytes" in sys.modules:
        return sys.modules["bitsandbytes"]
    with contextlib.ExitStack() as stack:
        if not hub_kernels_allowed():
            stack.enter_context(_no_hub_kernels())
        stack.enter_context(_muted("bitsandbytes"))
        import bitsandbytes
    return bitsandbytes


@contextlib.contextmanager
def _no_hub_kernels():
    try:
        import kernels
    except ImportError:  # bitsandbytes then cannot reach the hub either
        yield
        return
    original = kernels.get_kernel

    def refuse(repo_id, *args, **kwargs):
        raise RuntimeError(f"icl-audio: hub kernel {repo_id} not requested ({HUB_KERNELS_ENV}=1 allows it)")

    kernels.get_kernel = refuse
    try:
        yield
    finally:
        kernels.get_kernel = original


@contextlib.contextmanager
def _muted(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
