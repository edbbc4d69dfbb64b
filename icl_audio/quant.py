"""Quantised LLM weights with bitsandbytes: ``--quant int8`` (LLM.int8()) and ``--quant nf4`` (4-bit NF4).

Both go through ``from_pretrained`` with a ``BitsAndBytesConfig``: the linear layers of the decoder
are quantised as the weights load; the embeddings and the LM head stay in the compute dtype (the
scorer reads the head's weight to compute label log-probabilities in fp32).

The compute dtype (what the quantised layers receive and return) is chosen here, not left to a cast:

* int8: float16 on every device. LLM.int8() quantises each activation row from float16 (its
  ``MatMul8bitLt`` casts any other input to float16 first, with a warning per call), so float16
  activations are what the algorithm consumes: no cast, no extra copy.
* nf4: the model's own compute dtype (:func:`icl_audio.devices.resolve_dtype`: bf16 on CUDA with
  bf16 and on CPUs with native bf16, where bitsandbytes' CPU 4-bit kernel runs; fp16 on other GPUs;
  fp32 on other CPUs). NF4 weights are dequantised to this dtype block by block.

An explicit ``dtype`` overrides either choice.

Requirements checked at load, one line each (docs/quantization.md): bitsandbytes and accelerate
installed (the ``int8`` extra); the device is a CPU or a CUDA GPU; on CUDA, compute capability
>= 7.5 for int8 (LLM.int8()'s integer tensor-core kernels) and >= 6.0 for nf4, and a bitsandbytes
binary built for torch's CUDA version.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icl_audio.constants import QUANT_MODES  # re-exported
from icl_audio.errors import ModelError

if TYPE_CHECKING:
    import torch

# bitsandbytes 0.50's documented minimum compute capability per feature.
MIN_CAPABILITY = {"int8": (7, 5), "nf4": (6, 0)}
INSTALL_HINT = 'pip install "icl-audio[int8]"'


def quant_mode(quant: str | None = None, int8: bool = False) -> str | None:
    """The quantisation asked for: None, "int8" or "nf4". ``int8=True`` is the short form of
    ``quant="int8"``; asking for both int8 and another mode is a ModelError."""
    name = None if quant is None else str(quant).strip().lower()
    if name in (None, "", "none", "off"):
        name = None
    elif name not in QUANT_MODES:
        raise ModelError(f"unknown quantisation {quant!r}: use int8 or nf4")
    if int8:
        if name not in (None, "int8"):
            raise ModelError(f"int8 and {name} quantisation both asked for (--int8 is --quant int8): give one")
        name = "int8"
    return name


def check_support(quant: str, device: "torch.device") -> None:
    """ModelError (one line) when ``quant`` cannot run on ``device`` here, before anything loads."""
    import torch

    missing = [m for m in ("bitsandbytes", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"{quant} quantisation needs {' and '.join(missing)}: {INSTALL_HINT}")
    if device.type == "cpu":
        return
    if device.type != "cuda":
        raise ModelError(f"{quant} quantisation runs on CPU and CUDA GPUs, not on {device.type}")
    if torch.version.hip:
        return  # ROCm: bitsandbytes ships ROCm binaries; its own checks apply
    index = device.index if device.index is not None else torch.cuda.current_device()
    capability = tuple(torch.cuda.get_device_capability(index))
    needed = MIN_CAPABILITY[quant]
    if capability < needed:
        name = torch.cuda.get_device_name(index)
        other = " (nf4 needs 6.0)" if quant == "int8" and capability >= MIN_CAPABILITY["nf4"] else ""
        raise ModelError(f"{quant} quantisation needs a GPU of compute capability {needed[0]}.{needed[1]} or newer; "
                         f"{name} ({device}) has {capability[0]}.{capability[1]}{other}")
    cuda = torch.version.cuda or ""
    major_minor = "".join(cuda.split(".")[:2])
    binary = _bitsandbytes_dir() / f"libbitsandbytes_cuda{major_minor}.so"
    if not binary.is_file():
        shipped = sorted(p.name[len("libbitsandbytes_cuda"):-3] for p in _bitsandbytes_dir().glob("libbitsandbytes_cuda*.so"))
        raise ModelError(f"bitsandbytes has no binary for CUDA {cuda} (torch {torch.__version__}); it ships CUDA "
                         f"{', '.join(_dotted(v) for v in shipped) or 'none'}: install a torch built for one of them")


def _dotted(version: str) -> str:
    return f"{version[:-1]}.{version[-1]}" if len(version) >= 2 else version


def _bitsandbytes_dir() -> Path:
    spec = importlib.util.find_spec("bitsandbytes")
    return Path(spec.origin).parent if spec is not None and spec.origin else Path("/nonexistent")


def compute_dtype(quant: str, device: "torch.device", dtype: Any = None):
    """The dtype the quantised layers compute in (module docstring): ``dtype`` when given."""
    import torch

    from icl_audio.devices import resolve_dtype

    if dtype is not None:
        return resolve_dtype(dtype, device)
    if quant == "int8":
        return torch.float16
    return resolve_dtype(None, device)


def from_pretrained_kwargs(quant: str, device: "torch.device", dtype) -> dict[str, Any]:
    """``from_pretrained`` keywords that load the weights quantised onto ``device`` computing in ``dtype``.
    Imports bitsandbytes first, without its hub kernels (:mod:`icl_audio.hf_compat.bitsandbytes`)."""
    from transformers import BitsAndBytesConfig

    from icl_audio.hf_compat.bitsandbytes import import_bitsandbytes

    import_bitsandbytes()
    if quant == "int8":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return {"quantization_config": config, "device_map": {"": str(device)}, "dtype": dtype}
