"""Tokenizer internals: transformers' tiktoken conversion hook and a fast reader of plain fast tokenizers.

Contact points (tested with transformers 5.13.0 and 5.25.0):

* ``transformers.convert_slow_tokenizer.TikTokenConverter``: its ``load_tiktoken_bpe`` static method
  (present in 5.25, absent in 5.13) is the hook through which :func:`tiktoken_bpe` hands over ranks
  already read and checked, instead of tiktoken's file reader (which copies the file into a cache
  under /tmp keyed by path alone, and would later trust a stale copy). Plain path: the converter
  reading the file through tiktoken. Either way the converted vocabulary is checked against the
  ranks, so a stale tiktoken copy is refused instead of used.
* ``PreTrainedTokenizerFast(tokenizer_file=...)`` plus the settings of ``tokenizer_config.json`` and
  ``special_tokens_map.json`` (:func:`read_tokenizer`): a re-implementation of what
  ``AutoTokenizer.from_pretrained`` does for a plain fast tokenizer (``tokenizer_class``
  PreTrainedTokenizerFast or TokenizersBackend), 1 s for Llasa's 193,800 tokens where
  AutoTokenizer takes 3-4 s (7-15 s with transformers 4.x's AddedToken dicts). Plain path:
  ``AutoTokenizer.from_pretrained``. The fast reader proves itself once per tokenizer (the bytes of
  its files and the transformers/tokenizers versions) against the plain path; the verdict is kept in
  ``paths.models_dir()/tokenizer-proofs.json``, so each tokenizer is proven once per cache, and a
  disagreement falls back to AutoTokenizer with one warning.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from icl_audio.errors import ModelError

# Tokenizer classes that are nothing but a tokenizer.json plus a few settings (Llama-3.2's, Llasa's).
PLAIN_FAST_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
_PLAIN_SETTINGS = ("model_max_length", "clean_up_tokenization_spaces", "model_input_names", "padding_side",
                   "add_bos_token", "add_eos_token")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_PROOFS_FILE = "tokenizer-proofs.json"
_PROOFS_MAX = 256
# Texts the fast reader must tokenise exactly as AutoTokenizer does: plain text, markup, non-ASCII.
_PROBES = ("Convert the text to speech:", "dog<|s_3|><|eot_id|> rain, heavy", "héllo 42 — ünïcode\n\tend",
           "a , b . c ? it ' s n't",
           "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n")


# --------------------------------------------------------------------------------------------
# tiktoken ranks -> tokenizers.Tokenizer


def tiktoken_bpe(ranks: dict[bytes, int], path: Path, pattern: str):
    """A byte-level BPE ``tokenizers.Tokenizer`` of tiktoken ``ranks`` (read from ``path``), split by
    ``pattern``, through transformers' ``TikTokenConverter``. ModelError if the result's vocabulary
    is not exactly ``ranks``."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter: Any = TikTokenConverter
    if isinstance(TikTokenConverter.__dict__.get("load_tiktoken_bpe"), staticmethod):

        class _GivenRanks(TikTokenConverter):
            @staticmethod
            def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
                return ranks

        converter = _GivenRanks
    tk = converter(vocab_file=str(path), pattern=pattern).converted()
    if tk.get_vocab(with_added_tokens=False) != _byte_level_vocab(ranks):
        raise ModelError(f"converting {path} gave other tokens than the file holds (a stale copy in tiktoken's "
                         "cache?): remove the data-gym-cache folder under your temporary folder and retry")
    return tk


def _byte_level_vocab(ranks: dict[bytes, int]) -> dict[str, int]:
    # GPT-2's byte-to-unicode table: how byte-level BPE writes each byte as a printable character.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return {"".join(table[b] for b in token): rank for token, rank in ranks.items()}


# --------------------------------------------------------------------------------------------
# model folder -> tokenizer


def read_tokenizer(folder: str | Path):
    """The tokenizer of a model folder, as ``AutoTokenizer.from_pretrained(folder, local_files_only=True)``
    gives it; a plain fast tokenizer is read directly (see the module docstring), once proven equal.
    transformers' advisory log lines while reading are kept quiet."""
    from icl_audio.hub import quiet_transformers

    with quiet_transformers():
        return _read_tokenizer(Path(folder))


def _read_tokenizer(folder: Path):
    config = _json(folder / "tokenizer_config.json")
    if (not isinstance(config, dict) or config.get("tokenizer_class") not in PLAIN_FAST_CLASSES
            or not (folder / "tokenizer.json").is_file()):
        return auto_tokenizer(folder)
    key = _proof_key(folder)
    verdict = _proofs().get(key)
    if verdict is False:
        return auto_tokenizer(folder)  # warned when it was proven
    try:
        fast = read_plain_fast(folder, config)
    except Exception as exc:  # a file the fast reader does not understand: the plain path decides
        _warn(exc)
        return auto_tokenizer(folder)
    if verdict is True:
        return fast
    plain = auto_tokenizer(folder)
    difference = tokenizer_difference(fast, plain)
    _record(key, difference is None)
    if difference is not None:
        _warn(AssertionError(difference))
        return plain
    return fast


def auto_tokenizer(folder: Path):
    """The plain path: ``AutoTokenizer.from_pretrained`` on the local folder (never remote code)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def read_plain_fast(folder: Path, config: dict | None = None):
    """``PreTrainedTokenizerFast`` from ``tokenizer.json`` plus the special tokens and settings of
    ``tokenizer_config.json`` / ``special_tokens_map.json`` (transformers 4.x AddedToken dicts read too)."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    config = config if config is not None else (_json(folder / "tokenizer_config.json") or {})
    token_map = _json(folder / "special_tokens_map.json") or {}
    kwargs: dict[str, Any] = {k: config[k] for k in _PLAIN_SETTINGS if config.get(k) is not None}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(key) if config.get(key) is not None else token_map.get(key)
        if isinstance(value, dict):  # an AddedToken as transformers 4.x serialised it
            value = value.get("content")
        if isinstance(value, str):
            kwargs[key] = value
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **kwargs)


def tokenizer_difference(fast: Any, plain: Any) -> str | None:
    """None when the two tokenizers agree on everything icl-audio uses (vocabulary, special ids,
    added tokens and their special flags, the encoding and decoding of probe texts), else what differs."""
    if fast.get_vocab() != plain.get_vocab():
        return "the vocabularies differ"
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "model_max_length"):
        if getattr(fast, name, None) != getattr(plain, name, None):
            return f"{name} differs ({getattr(fast, name, None)!r} vs {getattr(plain, name, None)!r})"
    added = {i: (t.content, t.special) for i, t in fast.added_tokens_decoder.items()}
    if added != {i: (t.content, t.special) for i, t in plain.added_tokens_decoder.items()}:
        return "the added tokens differ"
    for text in _PROBES:
        ids = fast(text)["input_ids"]
        if ids != plain(text)["input_ids"]:
            return f"{text!r} is tokenised differently"
        if fast.decode(ids, skip_special_tokens=True) != plain.decode(ids, skip_special_tokens=True):
            return f"{text!r} is decoded differently"
    return None


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _proof_key(folder: Path) -> str:
    digest = hashlib.sha256()
    for dist in ("transformers", "tokenizers"):
        digest.update(f"{dist}={importlib.metadata.version(dist)}\0".encode())
    for name in _TOKENIZER_FILES:
        path = folder / name
        digest.update(f"{name}\0".encode())
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _proofs_path() -> Path:
    from icl_audio import paths

    return paths.models_dir() / _PROOFS_FILE


def _proofs() -> dict:
    memo = _json(_proofs_path())
    return memo if isinstance(memo, dict) else {}


def _record(key: str, ok: bool) -> None:
    from icl_audio.fsutil import atomic_write

    memo = _proofs()
    memo.pop(key, None)
    memo[key] = ok
    try:
        atomic_write(_proofs_path(), json.dumps(dict(list(memo.items())[-_PROOFS_MAX:])), durable=False)
    except OSError:
        pass  # only saves the next load a proof


def _warn(exc: BaseException) -> None:
    from icl_audio.hf_compat import warn_fallback

    warn_fallback("the fast tokenizer reader", exc, "AutoTokenizer, 2-3 s more per load")
