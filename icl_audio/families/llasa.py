"""The Llasa family: Llasa LLMs (Llama-3.2 + 65,536 XCodec2 speech tokens) and the XCodec2 codec.

Everything Llasa-specific about a model pair lives here: hub ids and aliases, the default codec and
prompt template, how the tokenizer lays out ``<|s_N|>`` speech tokens, the Llama config of Llasa-1B,
and the locally built models: the tiny ``debug`` model and random models at Llasa-1B's real shape
(``random-llasa-1b``), both with Llasa's exact tokenizer (:mod:`icl_audio.tokenizer`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from icl_audio import paths
from icl_audio.constants import DEBUG_NAME, DEFAULT_CODEC, DEFAULT_LLM, LLASA_SPECIAL_TOKENS, LLM_ALIASES, speech_token
from icl_audio.errors import ModelError
from icl_audio.families import LocalBuild, ModelFamily

if TYPE_CHECKING:
    from icl_audio.layout import SpeechLayout
    from icl_audio.llm import LanguageModel

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

TEMPLATE = "llasa"  # prompts/llasa.toml: Llasa's training format

# Llasa-1B's architecture (config.json of HKUSTAudio/Llasa-1B): the real shape of random-llasa-1b.
LLASA_1B_SHAPE: Mapping[str, Any] = MappingProxyType({
    "hidden_size": 2048, "num_layers": 16, "num_heads": 32, "num_kv_heads": 8, "intermediate_size": 8192,
    "head_dim": 64, "tie_word_embeddings": True,
})
# Names a user can give for random-weight models (memory and speed at the real size, no download).
RANDOM_LLMS: dict[str, Mapping[str, Any]] = {"random-llasa-1b": LLASA_1B_SHAPE}


# --------------------------------------------------------------------------------------------
# layout


def read_layout(tokenizer: Any, where: str) -> "SpeechLayout":
    """Derive the :class:`~icl_audio.layout.SpeechLayout` from a tokenizer; ModelError (naming
    ``where``) if it is not Llasa's.

    Checks: ``<|s_0|>`` exists, every ``<|s_N|>`` id is ``id(<|s_0|>) + N`` with no gap, and the eight
    Llasa special tokens are present.
    """
    from icl_audio.layout import SpeechLayout

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
# config and random weights


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


def random_model(config, *, seed: int, dtype):
    """A random-weight causal LM of ``config`` (transformers' own initialisation), seeded: two calls
    give the same weights, and the caller's torch RNG is left as it was."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    model.requires_grad_(False)
    return model


def _shape_config(tokenizer, shape: Mapping[str, Any], vocab_size: int | None = None):
    return llasa_config(tokenizer, vocab_size=vocab_size, **dict(shape))


def build_random_lm(*, hidden_size: int = 2048, num_layers: int = 16, num_heads: int = 32, num_kv_heads: int = 8,
                    intermediate_size: int = 8192, head_dim: int | None = 64, vocab_size: int | None = None,
                    dtype: Any = "bfloat16", seed: int = 0, tie_word_embeddings: bool = True) -> "LanguageModel":
    """A random-weight Llama carrying Llasa's exact tokenizer, in memory, on CPU (defaults: the real
    Llasa-1B shape). Prompt lengths, label tokenisation and special ids are the real model's.

    ``vocab_size``: embedding rows, None = the tokenizer's 193,800; more is allowed (padded rows), fewer
    is a ValueError. Used by the speed bench and by tests; its predictions are meaningless. To load
    one the way a checkpoint loads (``from_pretrained``, quantisation), see
    :func:`icl_audio.models.load_random_lm` and the name ``random-llasa-1b``.
    """
    import torch

    from icl_audio.devices import resolve_dtype
    from icl_audio.llm import LanguageModel
    from icl_audio.tokenizer import load_tokenizer

    tokenizer = load_tokenizer()
    if vocab_size is not None and vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than Llasa's tokenizer ({len(tokenizer)} tokens)")
    shape = dict(hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads, num_kv_heads=num_kv_heads,
                 intermediate_size=intermediate_size, head_dim=head_dim, tie_word_embeddings=tie_word_embeddings)
    torch_dtype = resolve_dtype(dtype, torch.device("cpu"))
    model = random_model(_shape_config(tokenizer, shape, vocab_size), seed=seed, dtype=torch_dtype)
    layout = read_layout(tokenizer, "random model")
    return LanguageModel(model=model, tokenizer=tokenizer, layout=layout, model_id="random-llasa",
                         revision=f"seed-{seed}", device=torch.device("cpu"), dtype=torch_dtype, family=LLASA.name,
                         origin="random")


# --------------------------------------------------------------------------------------------
# local builds: the debug model and the random models, saved once into the cache


# Bump whenever anything below changes what the debug build writes: an older build is then rebuilt.
# v2: Llasa's real tokenizer (icl_audio.tokenizer), vocabulary 193,800.
_DEBUG_BUILD_VERSION = 2
_DEBUG_DIRNAME = "debug-llasa"
_DEBUG_MARKER = "icl_audio_debug.json"
_DEBUG_SEED = 1234
_DEBUG_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
DEBUG_REVISION = f"debug-v{_DEBUG_BUILD_VERSION}"

# Bump when the random builds change (their revision names the version).
_RANDOM_BUILD_VERSION = 1
_RANDOM_MARKER = "icl_audio_random.json"
_RANDOM_DTYPE = "bfloat16"  # Llasa's checkpoints are bf16


def _debug_marker() -> dict:
    import transformers

    from icl_audio.tokenizer import TOKENIZER_VERSION

    return {"builder": "icl_audio.llm", "version": _DEBUG_BUILD_VERSION, "seed": _DEBUG_SEED,
            "tokenizer_version": TOKENIZER_VERSION, "transformers": transformers.__version__}


def _save_random(folder: Path, shape: Mapping[str, Any], *, seed: int, dtype) -> None:
    from icl_audio.hf_compat.tokenizers import read_plain_fast
    from icl_audio.hub import quiet_transformers
    from icl_audio.tokenizer import copy_tokenizer_files, ensure_tokenizer

    # Only the ids of a few named tokens and the vocabulary size are read here (the loaded model's
    # layout is checked when it loads), so the tokenizer is read directly, without its proof.
    with quiet_transformers():
        tokenizer = read_plain_fast(ensure_tokenizer())  # builds the cached tokenizer first when needed
    model = random_model(_shape_config(tokenizer, shape), seed=seed, dtype=dtype)
    with quiet_transformers():
        model.save_pretrained(folder)
    copy_tokenizer_files(folder)


def ensure_debug_model() -> Path:
    """Build the tiny debug Llasa into ``paths.models_dir()/"debug-llasa"`` unless a valid build is there.

    A random Llama (hidden 64, 2 layers, 4 heads, 2 key/value heads, tied embeddings) with Llasa's exact
    tokenizer (193,800 tokens, :mod:`icl_audio.tokenizer`); seeded, so two builds are byte-identical.
    Built through :func:`icl_audio.fsutil.build_once` (a crashed or concurrent build never leaves a
    half-written model behind). Loaded by :func:`icl_audio.models.load_lm` like any model folder.
    """
    import torch

    from icl_audio.fsutil import build_once

    shape = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
    return build_once(paths.models_dir() / _DEBUG_DIRNAME,
                      lambda folder: _save_random(folder, shape, seed=_DEBUG_SEED, dtype=torch.float32),
                      marker=_DEBUG_MARKER, stamp=_debug_marker(), required=_DEBUG_REQUIRED)


def _shape_key(shape: Mapping[str, Any], seed: int) -> str:
    return hashlib.sha256(json.dumps({"shape": dict(shape), "seed": seed}, sort_keys=True).encode()).hexdigest()[:10]


def random_revision(name: str | None, shape: Mapping[str, Any], seed: int = 0) -> str:
    """What a random build reports as its revision: says "random", the build version and the seed
    (and, for a shape without a name, a hash of the shape)."""
    suffix = "" if name in RANDOM_LLMS and dict(RANDOM_LLMS[name]) == dict(shape) else f"-{_shape_key(shape, seed)}"
    return f"random-v{_RANDOM_BUILD_VERSION}-seed{seed}{suffix}"


def ensure_random_lm(name: str | None = "random-llasa-1b", *, seed: int = 0, **shape: Any) -> Path:
    """The folder of a random-weight Llasa saved once into ``paths.models_dir()`` (built when missing).

    ``name``: a key of :data:`RANDOM_LLMS` (``random-llasa-1b``: Llasa-1B's exact config, 2.7 GB of
    bf16 weights), or None with ``shape`` (keywords of :func:`llasa_config`: hidden_size, num_layers,
    num_heads, num_kv_heads, intermediate_size, head_dim, tie_word_embeddings) for any other shape,
    saved under a name made of the shape's hash. Carries Llasa's exact tokenizer. Saved, not kept in
    memory, so it loads through ``from_pretrained`` like a downloaded checkpoint: the same weight
    check, dtype, device placement and quantisation as a real run (docs/models.md).
    """
    import torch

    from icl_audio.fsutil import build_once
    from icl_audio.tokenizer import TOKENIZER_VERSION

    if name is not None:
        if name not in RANDOM_LLMS:
            raise ModelError(f"unknown random model {name!r} (known: {', '.join(RANDOM_LLMS)})")
        shape = dict(RANDOM_LLMS[name])
    folder_name = name or f"random-llasa-{_shape_key(shape, seed)}"
    stamp = {"builder": "icl_audio.families.llasa", "version": _RANDOM_BUILD_VERSION, "seed": seed,
             "shape": dict(shape), "dtype": _RANDOM_DTYPE, "tokenizer_version": TOKENIZER_VERSION}
    try:
        return build_once(paths.models_dir() / folder_name,
                          lambda folder: _save_random(folder, shape, seed=seed, dtype=getattr(torch, _RANDOM_DTYPE)),
                          marker=_RANDOM_MARKER, stamp=stamp, required=("config.json", "model.safetensors", "tokenizer.json"))
    except OSError as exc:
        raise ModelError(f"could not write the random model {folder_name} into {paths.models_dir()}: {exc}") from None


def _local_llms() -> Mapping[str, LocalBuild]:
    builds = {DEBUG_NAME: LocalBuild(ensure_debug_model, DEBUG_REVISION, "debug")}
    for name, shape in RANDOM_LLMS.items():
        builds[name] = LocalBuild(lambda name=name: ensure_random_lm(name), random_revision(name, shape), "random")
    return builds


LLASA = ModelFamily(
    name="llasa",
    default_llm=DEFAULT_LLM,
    aliases=MappingProxyType(dict(LLM_ALIASES)),
    default_codec=DEFAULT_CODEC,
    template=TEMPLATE,
    read_layout=read_layout,
    local_llms=_local_llms,
    gated=frozenset({DEFAULT_LLM}),
)
