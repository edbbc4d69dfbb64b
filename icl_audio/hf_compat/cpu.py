"""What the CPU can do, from torch's private CPU-capability queries.

Contact points (torch 2.13.0): ``torch.cpu._is_avx512_bf16_supported``, ``torch.cpu._is_amx_tile_supported``,
``torch.ops.mkldnn._is_mkldnn_bf16_supported``. Plain path when none answers: "no native bf16" (fp32,
always correct, slower).
"""

from __future__ import annotations


def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX), where bf16 beats fp32 ~4x."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # private API; absent on some builds -> play safe with fp32
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except Exception:
            return False
