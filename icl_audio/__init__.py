"""icl-audio: classify audio by in-context learning with a frozen speech LLM (Llasa) over XCodec2 codes."""

from __future__ import annotations

__version__ = "0.3.1"

__all__ = ["ICLClassifier", "__version__"]


def __getattr__(name: str):
    # Lazy: `import icl_audio` (and so `icl-audio --help`) must not import torch.
    if name == "ICLClassifier":
        from icl_audio.classifier import ICLClassifier

        return ICLClassifier
    raise AttributeError(f"module 'icl_audio' has no attribute {name!r}")
