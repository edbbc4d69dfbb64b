"""The language model wrapper: a loaded codec-token LLM, its tokenizer and its speech layout, and
plain-text token ids that can never become markup.

Loading lives in :mod:`icl_audio.models`, the Llasa specifics (layout rule, config, debug and random
builds) in :mod:`icl_audio.families.llasa`, device and dtype rules in :mod:`icl_audio.devices`;
their public names are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from icl_audio.errors import ModelError
from icl_audio.layout import SpeechLayout

# Names that moved to the modules above, still importable from icl_audio.llm (resolved on first use,
# so importing this module stays light).
_MOVED = {
    "load_lm": "icl_audio.models",
    "build_random_lm": "icl_audio.families.llasa",
    "ensure_debug_model": "icl_audio.families.llasa",
    "llasa_config": "icl_audio.families.llasa",
    "read_layout": "icl_audio.families.llasa",
    "LLAMA3_SPECIAL_TOKENS": "icl_audio.families.llasa",
    "read_tokenizer": "icl_audio.hf_compat.tokenizers",
    "cpu_has_fast_bf16": "icl_audio.devices",
    "resolve_dtype": "icl_audio.devices",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LanguageModel", "SpeechLayout", *_MOVED]


@dataclass
class LanguageModel:
    """A loaded Llasa model: the HF causal LM, its tokenizer and its speech layout.

    ``model_id`` is the name it was loaded by (hub id, folder, "debug" or a random model's name);
    ``revision`` identifies the exact weights (hub commit, a hash of a local folder's files, or the
    debug or random build's version: ``random-...`` for random weights). ``family``: the
    :class:`~icl_audio.families.ModelFamily` name; ``origin``: "hub", "folder", "debug" or "random".
    Loaded by :func:`icl_audio.models.load_lm`.
    """

    model: Any
    tokenizer: Any
    layout: SpeechLayout
    model_id: str
    revision: str
    device: Any
    dtype: Any
    family: str = "llasa"
    origin: str = "hub"
    _forbidden: frozenset = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        # Ids a label must never produce: every added/special token and the whole speech range.
        forbidden = set(int(i) for i in getattr(self.tokenizer, "added_tokens_decoder", {}).keys())
        forbidden.update(self.layout.special_ids.values())
        for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
            value = getattr(self.tokenizer, name, None)
            if isinstance(value, int):
                forbidden.add(value)
        self._forbidden = frozenset(forbidden)

    @property
    def forbidden_text_ids(self) -> frozenset:
        """Ids :meth:`text_ids` never returns (added, special and speech tokens)."""
        return self._forbidden

    def is_text_id(self, token_id: int) -> bool:
        """True when ``token_id`` is an ordinary text token (not markup, not speech)."""
        f = self.layout.first_speech_id
        return token_id not in self._forbidden and not (f <= token_id < f + self.layout.n_speech)

    def markup_id(self, token: str) -> int:
        """The id of a markup token such as ``<|TEXT_UNDERSTANDING_START|>``; unknown -> ModelError."""
        try:
            return self.layout.special_ids[token]
        except KeyError:
            raise ModelError(
                f"{token} is not a special token of {self.model_id} (known: {', '.join(self.layout.special_ids)})"
            ) from None

    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` as PLAIN TEXT, never markup.

        Accepts any str. HF tokenizers match added tokens anywhere inside the text (``<|s_5|>`` would
        become speech token 5, ``<|SPEECH_GENERATION_END|>`` a special), so the text goes through the
        normaliser, pre-tokenizer and BPE model of the backend directly, which know nothing of added
        tokens. Any piece that still yields a forbidden id (a vocabulary that holds such a string as a
        merge) is re-tokenised one character at a time. No BOS is added.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if not text:
            return []
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return self._text_ids_slow(text)
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
        if backend.pre_tokenizer is not None:
            pieces = [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]
        else:
            pieces = [normalized]
        ids: list[int] = []
        for piece in pieces:
            piece_ids = [t.id for t in backend.model.tokenize(piece)]
            if any(not self.is_text_id(i) for i in piece_ids):
                piece_ids = [t.id for ch in piece for t in backend.model.tokenize(ch)]
            ids.extend(piece_ids)
        if any(not self.is_text_id(i) for i in ids):
            raise ModelError(f"the tokenizer of {self.model_id} cannot write {text!r} as plain text")
        return ids

    def _text_ids_slow(self, text: str) -> list[int]:
        # Tokenizers without a Rust backend: break every added-token string between its first two
        # characters so it can no longer match, tokenising the parts separately.
        added = sorted((t for t in self.tokenizer.get_vocab() if self.tokenizer.convert_tokens_to_ids(t) in self._forbidden),
                       key=len, reverse=True)
        parts = [text]
        for tok in added:
            if len(tok) < 2:
                continue
            new_parts = []
            for part in parts:
                chunks = part.split(tok)
                for i, chunk in enumerate(chunks):
                    if i:
                        new_parts.extend([tok[0], tok[1:]])
                    new_parts.append(chunk)
            parts = [p for p in new_parts if p]
        ids = [i for p in parts for i in self.tokenizer.encode(p, add_special_tokens=False)]
        if any(not self.is_text_id(i) for i in ids):
            raise ModelError(f"the tokenizer of {self.model_id} cannot write {text!r} as plain text")
        return ids
