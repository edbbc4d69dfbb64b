"""The language model stage: load a Llasa LLM (hub id, local folder or "debug") and read its speech-token layout."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from icl_audio import paths
from icl_audio.constants import DEFAULT_LLM, LLASA_SPECIAL_TOKENS, LLM_ALIASES, speech_token
from icl_audio.errors import ModelError
from icl_audio.hub import quiet_transformers, resolve_device, resolve_model

# Llama-3's named special tokens (the rest of 128000..128255 are reserved). Looked up by name, never by id.
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|finetune_right_pad_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)

# Bump whenever anything below changes what the debug build writes: an older build is then rebuilt.
# v2: Llasa's real tokenizer (icl_audio.tokenizer), vocabulary 193,800.
_DEBUG_BUILD_VERSION = 2
_DEBUG_DIRNAME = "debug-llasa"
_DEBUG_MARKER = "icl_audio_debug.json"
_DEBUG_SEED = 1234


@dataclass(frozen=True)
class SpeechLayout:
    """Where a Llasa tokenizer keeps its speech tokens and its special markup tokens.

    ``first_speech_id`` is the id of ``<|s_0|>``; codec code ``c`` is the token ``first_speech_id + c``
    for ``0 <= c < n_speech``. ``special_ids`` maps each known markup token (the eight Llasa specials and
    the Llama-3 specials the tokenizer has) to its id.
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


@dataclass
class LanguageModel:
    """A loaded Llasa model: the HF causal LM, its tokenizer and its speech layout.

    ``model_id`` is the name it was loaded by (hub id, folder or "debug"); ``revision`` identifies the
    exact weights (hub commit, a hash of a local folder's files, or the debug build version).
    """

    model: Any
    tokenizer: Any
    layout: SpeechLayout
    model_id: str
    revision: str
    device: Any
    dtype: Any
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


# --------------------------------------------------------------------------------------------
# layout


def read_layout(tokenizer: Any, where: str) -> SpeechLayout:
    """Derive the :class:`SpeechLayout` from a tokenizer; ModelError (naming ``where``) if it is not Llasa's.

    Checks: ``<|s_0|>`` exists, every ``<|s_N|>`` id is ``id(<|s_0|>) + N`` with no gap, and the eight
    Llasa special tokens are present.
    """
    vocab = tokenizer.get_vocab()
    first = vocab.get(speech_token(0))
    if first is None:
        raise ModelError(f"{where} is not a Llasa model: no <|s_0|> speech tokens in its tokenizer")
    pattern = re.compile(r"<\|s_(\d+)\|>")
    n = 0
    for tok in vocab:
        m = pattern.fullmatch(tok)
        if m is not None and str(int(m.group(1))) == m.group(1):
            n += 1
    # Every one is checked (a dict lookup each, fast even for 65,536): one gap would shift codes.
    for c in range(n):
        if vocab.get(speech_token(c)) != first + c:
            raise ModelError(
                f"{where} is not a Llasa model: speech token <|s_{c}|> is missing or not contiguous with <|s_0|>"
            )
    missing = [t for t in LLASA_SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ModelError(f"{where} is not a Llasa model: its tokenizer lacks {', '.join(missing)}")
    specials = {t: int(vocab[t]) for t in LLAMA3_SPECIAL_TOKENS if t in vocab}
    specials.update({t: int(vocab[t]) for t in LLASA_SPECIAL_TOKENS})
    return SpeechLayout(first_speech_id=int(first), n_speech=n, special_ids=MappingProxyType(specials))


# --------------------------------------------------------------------------------------------
# device and dtype


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


_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def resolve_dtype(dtype: Any, device: Any):
    """The torch dtype to run in: ``dtype`` if given (torch dtype or name like "bf16", "fp32"), else
    bf16 on CUDA devices of compute capability 8.0 or later (fp16 on older ones, which only emulate
    bf16) and on CPUs with native bf16, fp32 otherwise."""
    import torch

    if dtype is None:
        if device.type == "cuda":
            from icl_audio.precision import cuda_native_bf16

            return torch.bfloat16 if cuda_native_bf16(device) else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_NAMES.get(str(dtype).lower().replace("torch.", ""))
    if name is None:
        raise ModelError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return getattr(torch, name)


# --------------------------------------------------------------------------------------------
# tiny and random models with Llasa's exact tokenizer (debug model, speed bench)


def llasa_config(tokenizer, *, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int,
                 intermediate_size: int, head_dim: int | None = None, vocab_size: int | None = None,
                 tie_word_embeddings: bool = True):
    """A LlamaConfig of the given shape with Llasa's rope (theta 500000, llama3 scaling factor 32) and
    special ids read from ``tokenizer`` (pad = eos = ``<|eot_id|>``, as Llasa's training set it)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size if vocab_size is not None else len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim if head_dim is not None else hidden_size // num_heads,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )


def _random_model(config, *, seed: int, dtype):
    import torch
    from transformers import LlamaForCausalLM

    # A private RNG stream: the build is reproducible and the caller's torch RNG is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    model.requires_grad_(False)
    return model


def build_random_lm(*, hidden_size: int = 2048, num_layers: int = 16, num_heads: int = 32, num_kv_heads: int = 8,
                    intermediate_size: int = 8192, head_dim: int | None = 64, vocab_size: int | None = None,
                    dtype: Any = "bfloat16", seed: int = 0, tie_word_embeddings: bool = True) -> LanguageModel:
    """A random-weight Llama carrying Llasa's exact tokenizer, in memory, on CPU (defaults: the real
    Llasa-1B shape). Prompt lengths, label tokenisation and special ids are the real model's.

    ``vocab_size``: embedding rows, None = the tokenizer's 193,800; more is allowed (padded rows), fewer
    is a ValueError. Used by the speed bench and by tests; its predictions are meaningless.
    """
    import torch

    from icl_audio.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than Llasa's tokenizer ({len(tokenizer)} tokens)")
    config = llasa_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                          num_kv_heads=num_kv_heads, intermediate_size=intermediate_size, head_dim=head_dim,
                          vocab_size=vocab_size, tie_word_embeddings=tie_word_embeddings)
    torch_dtype = resolve_dtype(dtype, torch.device("cpu"))
    model = _random_model(config, seed=seed, dtype=torch_dtype)
    layout = read_layout(tokenizer, "random model")
    return LanguageModel(model=model, tokenizer=tokenizer, layout=layout, model_id="random-llasa",
                         revision=f"seed-{seed}", device=torch.device("cpu"), dtype=torch_dtype)


def _debug_marker() -> dict:
    import transformers

    from icl_audio.tokenizer import TOKENIZER_VERSION

    return {"builder": "icl_audio.llm", "version": _DEBUG_BUILD_VERSION, "seed": _DEBUG_SEED,
            "tokenizer_version": TOKENIZER_VERSION, "transformers": transformers.__version__}


_DEBUG_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def ensure_debug_model() -> Path:
    """Build the tiny debug Llasa into ``paths.models_dir()/"debug-llasa"`` unless a valid build is there.

    A random Llama (hidden 64, 2 layers, 4 heads, 2 key/value heads, tied embeddings) with Llasa's exact
    tokenizer (193,800 tokens, :mod:`icl_audio.tokenizer`); seeded, so two builds are byte-identical.
    Built through :func:`icl_audio.fsutil.build_once` (a crashed or concurrent build never leaves a
    half-written model behind). Loaded by :func:`load_lm` like any model folder.
    """
    import torch

    from icl_audio.fsutil import build_once
    from icl_audio.tokenizer import copy_tokenizer_files, load_tokenizer

    def build(folder: Path) -> None:
        tokenizer = load_tokenizer()  # builds the cached tokenizer first when needed
        config = llasa_config(tokenizer, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                              intermediate_size=128)
        model = _random_model(config, seed=_DEBUG_SEED, dtype=torch.float32)
        with quiet_transformers():
            model.save_pretrained(folder)
        copy_tokenizer_files(folder)

    return build_once(paths.models_dir() / _DEBUG_DIRNAME, build, marker=_DEBUG_MARKER, stamp=_debug_marker(),
                      required=_DEBUG_REQUIRED)


# --------------------------------------------------------------------------------------------
# loading


# Tokenizer classes that are nothing but a tokenizer.json plus a few settings (Llama-3.2's, Llasa's).
_PLAIN_FAST_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
_PLAIN_SETTINGS = ("model_max_length", "clean_up_tokenization_spaces", "model_input_names", "padding_side",
                   "add_bos_token", "add_eos_token")


def read_tokenizer(folder: Path):
    """The tokenizer of a model folder.

    A plain fast tokenizer (``tokenizer_class`` PreTrainedTokenizerFast, as Llama-3.2's and Llasa's) is
    read from its ``tokenizer.json`` plus the special tokens and settings of ``tokenizer_config.json``
    and ``special_tokens_map.json``: 1-2 s for Llasa's 193,800 tokens, where
    ``AutoTokenizer.from_pretrained`` spends 7-15 s on this CPU copying the 65,800 added tokens around
    (the same tokenizer either way: tested). Any other folder goes through ``AutoTokenizer``.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(folder)
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        config = None
    if (not isinstance(config, dict) or config.get("tokenizer_class") not in _PLAIN_FAST_CLASSES
            or not (folder / "tokenizer.json").is_file()):
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    try:
        token_map = json.loads((folder / "special_tokens_map.json").read_text())
    except (OSError, ValueError):
        token_map = {}
    kwargs: dict[str, Any] = {k: config[k] for k in _PLAIN_SETTINGS if config.get(k) is not None}
    for key in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(key) if config.get(key) is not None else token_map.get(key)
        if isinstance(value, dict):  # an AddedToken as transformers 4.x serialised it
            value = value.get("content")
        if isinstance(value, str):
            kwargs[key] = value
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), **kwargs)


def load_lm(name: str = DEFAULT_LLM, *, device: str = "auto", int8: bool = False, dtype: Any = None) -> LanguageModel:
    """Load a Llasa language model.

    ``name``: a hub id (default ``HKUSTAudio/Llasa-1B-Multilingual``; the alias ``llasa-1b`` means
    ``HKUSTAudio/Llasa-1B``), a local folder, or ``"debug"`` (a tiny random Llama with Llasa's exact
    tokenizer, built once into the cache and loaded back through this same path). Names are resolved
    by :func:`icl_audio.hub.resolve_model`.
    ``device``: "auto" (CUDA if present), "cpu", "cuda" or "cuda:N".
    ``int8``: 8-bit weights via bitsandbytes (``pip install "icl-audio[int8]"``).
    ``dtype``: None (bf16 on CUDA and on CPUs with native bf16, else fp32; fp32 for "debug"), or a
    torch dtype / "float32" / "bfloat16" / "float16".
    Raises ModelError (one line) when weights are missing, offline, or the model lacks the Llasa layout.
    Nothing is ever loaded with ``trust_remote_code``.
    """
    import torch

    torch_device = resolve_device(device)
    if int8:
        import importlib.util

        # transformers needs both for 8-bit loading; the [int8] extra installs them.
        if importlib.util.find_spec("bitsandbytes") is None or importlib.util.find_spec("accelerate") is None:
            raise ModelError('--int8 needs bitsandbytes: pip install "icl-audio[int8]"')
    source = resolve_model(name, kind="LLM", flag="--model", aliases=LLM_ALIASES, debug_build=ensure_debug_model,
                           debug_revision=f"debug-v{_DEBUG_BUILD_VERSION}")
    folder, model_id, revision = source.folder, source.model_id, source.revision
    if dtype is None and source.origin == "debug":
        dtype = torch.float32  # tiny: speed is irrelevant, exact scores are not
    torch_dtype = resolve_dtype(dtype, torch_device)

    from transformers import AutoModelForCausalLM

    try:
        tokenizer = read_tokenizer(folder)
    except Exception as exc:
        raise ModelError(f"the tokenizer of {model_id} could not be read from {folder} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    # The layout is checked before the (large) weights are read: a wrong model fails fast.
    layout = read_layout(tokenizer, model_id)

    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True, "attn_implementation": "sdpa"}
    if int8:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": str(torch_device)}
    try:
        with quiet_transformers() if source.origin == "debug" else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelError(f"the weights of {model_id} could not be loaded from {folder} "
                         f"({type(exc).__name__}: {first})") from None
    if not int8:
        model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    rows = model.get_input_embeddings().num_embeddings
    if layout.first_speech_id + layout.n_speech > rows:
        raise ModelError(f"{model_id} has {rows} embedding rows but its tokenizer's speech tokens reach id "
                         f"{layout.first_speech_id + layout.n_speech - 1}: tokenizer and weights do not match")
    return LanguageModel(model=model, tokenizer=tokenizer, layout=layout, model_id=model_id, revision=revision,
                         device=torch_device, dtype=torch_dtype)
