"""Where an LLM's tokenizer keeps its speech tokens: the :class:`SpeechLayout` every model family reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from icl_audio.errors import ModelError


@dataclass(frozen=True)
class SpeechLayout:
    """Where a codec-token LLM's tokenizer keeps its speech tokens and its special markup tokens.

    ``first_speech_id`` is the id of the token of code 0; codec code ``c`` is the token
    ``first_speech_id + c`` for ``0 <= c < n_speech``. ``special_ids`` maps each known markup token
    to its id. A model family reads it from a tokenizer (:attr:`icl_audio.families.ModelFamily.read_layout`).
    """

    first_speech_id: int
    n_speech: int
    special_ids: Mapping[str, int]

    def to_ids(self, codes: np.ndarray) -> np.ndarray:
        """Token ids (int64) for a 1-D array of codec codes; a code outside the layout raises ModelError."""
        arr = np.asarray(codes)
        if arr.ndim != 1:
            raise ModelError(f"codec codes must be a 1-D array, got shape {arr.shape}")
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ModelError(f"codec codes must be integers, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.n_speech:
            bad = lo if lo < 0 else hi
            raise ModelError(
                f"codec code {bad} is outside the LLM's {self.n_speech} speech tokens: codec and LLM do not match"
            )
        return arr.astype(np.int64) + self.first_speech_id
