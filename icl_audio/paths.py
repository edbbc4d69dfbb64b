"""Where icl-audio keeps what it builds: one cache root, movable with ICL_AUDIO_HOME."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root: ``$ICL_AUDIO_HOME`` if set, else the platform's user cache dir."""
    env = os.environ.get("ICL_AUDIO_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("icl-audio", appauthor=False))


def models_dir() -> Path:
    """Locally built models (the tiny ``debug`` LLM and codec)."""
    return home() / "models"


def code_cache_dir() -> Path:
    """Codec codes keyed by audio content and codec fingerprint."""
    return home() / "codes"


def support_dir() -> Path:
    """Named support sets, one folder each."""
    return home() / "support"
