"""Shared fixtures: an isolated cache root, the tiny debug models, synthetic audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SR = 16_000


def pytest_configure(config):
    # Every test run gets its own cache root, so nothing of the user's cache is read or written.
    # Set before any icl_audio import looks at it; subprocess CLI tests inherit it.
    if "ICL_AUDIO_HOME" not in os.environ or not os.environ.get("ICL_AUDIO_TEST_KEEP_HOME"):
        import tempfile

        os.environ["ICL_AUDIO_HOME"] = tempfile.mkdtemp(prefix="icl-audio-test-home-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tone(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.3, phase: float = 0.0) -> np.ndarray:
    """A float32 sine tone."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(seconds: float = 1.0, sr: int = SR, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    """Float32 white noise, reproducible by seed."""
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    """Write samples to a sound file (format from the suffix), creating parent folders."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sr, subtype=subtype)
    return path


@pytest.fixture(scope="session")
def debug_codec():
    from icl_audio.codec import load_codec

    return load_codec("debug", device="cpu")


@pytest.fixture(scope="session")
def debug_lm():
    from icl_audio.llm import load_lm

    return load_lm("debug", device="cpu")


@pytest.fixture
def support_folder(tmp_path: Path) -> Path:
    """A tiny support folder: two labels ("low hum", "high beep") with three clips each."""
    root = tmp_path / "support"
    for i, f in enumerate((110, 130, 150)):
        write_wav(root / "low hum" / f"low_{i}.wav", tone(f, 0.6, phase=i))
    for i, f in enumerate((2000, 2500, 3000)):
        write_wav(root / "high beep" / f"high_{i}.wav", tone(f, 0.6, phase=i))
    return root
