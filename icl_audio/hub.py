"""Where models come from: the torch device, local folders vs hub ids, quiet transformers loading.

Shared by the codec and the LLM loaders, so that `--device`, `--model` and `--codec` read their
values by the same rules.
"""

from __future__ import annotations

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
