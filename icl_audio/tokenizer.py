"""Llasa's exact tokenizer, built offline from Llama-3's BPE ranks (shipped in the llama-models wheel).

Layout (193,800 entries, the real Llasa-1B tokenizer):

=================  ==========================================================================
ids                tokens
=================  ==========================================================================
0..127999          Llama-3 byte-level BPE text tokens (``llama_models/llama3/tokenizer.model``)
128000..128255     Llama-3.2's 256 special tokens, named as the Hugging Face Llama-3.2 tokenizer
                   names them (``<|begin_of_text|>``, ..., ``<|eot_id|>``, ``<|python_tag|>``,
                   ``<|reserved_special_token_3|>`` .. ``<|reserved_special_token_247|>``)
128256..128263     Llasa's eight markup tokens (:data:`icl_audio.constants.LLASA_SPECIAL_TOKENS`)
128264..193799     ``<|s_0|>`` .. ``<|s_65535|>``, ordinary (non-special) added tokens
=================  ==========================================================================

bos ``<|begin_of_text|>`` (added by ``tokenizer(text)`` as Llama-3.2's post-processor does), eos and pad
``<|eot_id|>`` (Llasa's training set ``pad_token = eos_token``). The conversion takes seconds, so the
result is built once per machine into ``paths.models_dir()/llasa-tokenizer-v<N>`` (a temporary folder
renamed into place) and loaded from there.
"""

from __future__ import annotations

import base64
import binascii
import importlib.metadata
import importlib.util
import shutil
from pathlib import Path
from typing import Any

from icl_audio import paths
from icl_audio.constants import LLASA_SPECIAL_TOKENS, speech_token
from icl_audio.errors import ModelError

# Llama-3's pre-tokenizer split pattern (llama_models/llama3/tokenizer.py, ``Tokenizer.pat_str``).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

N_TEXT = 128_000
# Llama-3.1/3.2's special tokens as the Hugging Face release names them (transformers'
# convert_llama_weights_to_hf.py, version "3.2"), which Llasa's tokenizer inherits. llama_models'
# own list agrees on every named token's id; it calls 128005 <|step_id|> and 128011 <|image|>
# (Llama-3.2-Vision) and numbers its reserved tokens from there, which the HF tokenizer does not.
LLAMA32_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
) + tuple(f"<|reserved_special_token_{i}|>" for i in range(3, 256 - 8))
N_SPEECH = 65_536
FIRST_SPEECH_ID = N_TEXT + len(LLAMA32_SPECIAL_TOKENS) + len(LLASA_SPECIAL_TOKENS)  # 128264
VOCAB_SIZE = FIRST_SPEECH_ID + N_SPEECH  # 193800

BOS, EOS, PAD = "<|begin_of_text|>", "<|eot_id|>", "<|eot_id|>"
# Bump when anything below changes what is written: an older cached build is then rebuilt.
TOKENIZER_VERSION = 1
_DIRNAME = f"llasa-tokenizer-v{TOKENIZER_VERSION}"
_MARKER = "icl_audio_tokenizer.json"
_FILES = ("tokenizer.json", "tokenizer_config.json")

assert len(LLAMA32_SPECIAL_TOKENS) == 256 and FIRST_SPEECH_ID == 128_264 and VOCAB_SIZE == 193_800


def llama3_ranks_file() -> Path:
    """Path of Llama-3's BPE ranks (``llama_models/llama3/tokenizer.model``), found WITHOUT importing
    llama_models (its ``__init__`` pulls in heavy modules). ModelError when llama-models is absent."""
    spec = importlib.util.find_spec("llama_models")
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / "llama3" / "tokenizer.model"
        if path.is_file():
            return path
    if roots:
        raise ModelError(f"llama-models is installed but has no llama3/tokenizer.model under {roots[0]}: "
                         "pip install --force-reinstall llama-models")
    raise ModelError("Llama-3's tokenizer ranks are missing: pip install llama-models")


def read_ranks(path: Path) -> dict[bytes, int]:
    """Llama-3's ranks from a tiktoken file (one ``base64-token rank`` per line), checked: exactly the
    ranks 0..127999, each once. Read here rather than by tiktoken's loader, which copies the file
    into a cache under /tmp keyed by path alone and would later trust a stale copy."""
    ranks: dict[bytes, int] = {}
    try:
        lines = Path(path).read_bytes().splitlines()
        for line in lines:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
    except (OSError, ValueError, binascii.Error) as exc:
        raise ModelError(f"Llama-3's tokenizer ranks {path} are unreadable ({type(exc).__name__}): "
                         "pip install --force-reinstall llama-models") from None
    if sorted(ranks.values()) != list(range(N_TEXT)):
        raise ModelError(f"Llama-3's tokenizer ranks {path} hold {len(ranks)} tokens, not ranks 0..{N_TEXT - 1}: "
                         "pip install --force-reinstall llama-models")
    return ranks


def build_tokenizer():
    """Llasa's tokenizer, built in memory from Llama-3's ranks (several seconds; prefer :func:`load_tokenizer`).

    Returns a ``transformers.PreTrainedTokenizerFast`` with the layout in the module docstring.
    """
    from tokenizers import AddedToken, processors
    from transformers import PreTrainedTokenizerFast

    from icl_audio.hf_compat.tokenizers import tiktoken_bpe

    path = llama3_ranks_file()
    tk = tiktoken_bpe(read_ranks(path), path, LLAMA3_PATTERN)
    if tk.get_vocab_size(with_added_tokens=True) != N_TEXT:
        raise ModelError(f"converting {path} gave {tk.get_vocab_size()} text tokens, not {N_TEXT}")
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA32_SPECIAL_TOKENS])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLASA_SPECIAL_TOKENS])
    tk.add_tokens([AddedToken(speech_token(c), special=False, normalized=False) for c in range(N_SPEECH)])
    # As Llama-3.2's tokenizer.json: byte-level offsets, then <|begin_of_text|> before each sequence.
    tk.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, N_TEXT)],
        ),
    ])
    if tk.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE or tk.token_to_id(speech_token(0)) != FIRST_SPEECH_ID:
        raise ModelError(f"the built tokenizer has {tk.get_vocab_size()} tokens, not Llasa's {VOCAB_SIZE}")
    return PreTrainedTokenizerFast(tokenizer_object=tk, **_init_kwargs())


def _init_kwargs() -> dict[str, Any]:
    # Llama-3.2-Instruct's settings (model_max_length, clean-up) with Llasa's training pad token.
    return {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "model_max_length": 131072,
            "clean_up_tokenization_spaces": True, "model_input_names": ["input_ids", "attention_mask"]}


def _marker() -> dict:
    return {"builder": "icl_audio.tokenizer", "version": TOKENIZER_VERSION, "vocab_size": VOCAB_SIZE,
            "llama_models": _version("llama-models"), "tokenizers": _version("tokenizers")}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def ensure_tokenizer() -> Path:
    """The folder holding Llasa's tokenizer files, built first when missing or from an older version
    (through :func:`icl_audio.fsutil.build_once`: a crash or a concurrent build never leaves a
    half-written tokenizer, and two processes building at once both end with a valid one)."""
    from icl_audio.fsutil import build_once

    root = paths.models_dir()
    try:
        return build_once(root / _DIRNAME, lambda folder: build_tokenizer().save_pretrained(str(folder)),
                          marker=_MARKER, stamp=_marker(), required=_FILES)
    except OSError as exc:
        raise ModelError(f"could not write Llasa's tokenizer into {root}: {exc}") from None


def copy_tokenizer_files(folder: Path) -> None:
    """Copy the cached tokenizer's files into a model folder (the debug build), so that
    ``AutoTokenizer.from_pretrained(folder)`` reads Llasa's tokenizer as it would a real model's."""
    source = ensure_tokenizer()
    for name in _FILES:
        shutil.copyfile(source / name, Path(folder) / name)


def load_tokenizer():
    """Llasa's tokenizer (``transformers.PreTrainedTokenizerFast``), from the cache (built on first use).

    Read by :func:`icl_audio.hf_compat.tokenizers.read_tokenizer` like any model folder's tokenizer:
    ~1 s, where ``AutoTokenizer.from_pretrained`` takes 3-4 s copying the 65,800 added tokens around.
    """
    from icl_audio.hf_compat.tokenizers import read_tokenizer

    return read_tokenizer(ensure_tokenizer())


__all__ = [
    "BOS", "EOS", "FIRST_SPEECH_ID", "LLAMA32_SPECIAL_TOKENS", "LLAMA3_PATTERN", "N_SPEECH", "N_TEXT",
    "PAD", "TOKENIZER_VERSION", "VOCAB_SIZE", "build_tokenizer", "copy_tokenizer_files", "ensure_tokenizer",
    "llama3_ranks_file", "load_tokenizer", "read_ranks",
]
