"""Loading the models: the LLM, the codec, and the two as a checked pair (:func:`load_pair`).

Every caller loads through here: the CLI (classify, prompt, support build), the bench, the support
builder and the Python API (``ICLClassifier``'s lazy ``lm`` / ``codec_model`` call :func:`load_lm`,
:func:`load_codec` and :func:`check_pair`). What makes a pair (ids, default codec, layout rule,
template, local builds) is the model family's (:mod:`icl_audio.families`).

Names accepted for the LLM: a hub id, an alias (``llasa-1b``), a local folder, ``debug`` (tiny,
built locally) or ``random-llasa-1b`` (random weights at Llasa-1B's exact shape, built once into the
cache). For the codec: a hub id, a folder, ``debug`` or ``random-xcodec2``. Random models log a
note line: their predictions are meaningless, their memory and time are the real ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from icl_audio.constants import DEFAULT_LLM
from icl_audio.errors import ModelError

if TYPE_CHECKING:
    from icl_audio.codec import Codec
    from icl_audio.llm import LanguageModel

log = logging.getLogger("icl_audio")


@dataclass(frozen=True)
class ModelPair:
    """An LLM and the codec whose codes it reads, checked to fit (:func:`check_pair`)."""

    lm: "LanguageModel"
    codec: "Codec"

    @property
    def random(self) -> bool:
        """True when either model has random weights (predictions meaningless)."""
        return self.lm.origin == "random" or self.codec.revision.startswith("random-")


def load_pair(
    model: str | None = None,
    codec: str | None = None,
    *,
    device: str = "auto",
    quant: str | None = None,
    int8: bool = False,
    dtype: Any = None,
    check_weights: bool = True,
    **codec_options: Any,
) -> ModelPair:
    """Load the LLM ``model`` (default: the default family's LLM), then the codec ``codec`` (default:
    the LLM family's codec), and check that they pair (:func:`check_pair`).

    ``device``: "auto", "cpu", "cuda" or "cuda:N" (both models). ``quant``/``int8``/``dtype``: the
    LLM's weights (:func:`load_lm`). ``check_weights``: refuse checkpoints whose tensors do not fit
    the architecture (False: load them anyway, with a warning listing the keys). ``codec_options``:
    :func:`icl_audio.codec.load_codec`'s keywords (precision, max_seconds, crop, revision).
    Raises ModelError (one line) for anything that cannot be found, loaded or paired.
    """
    lm = load_lm(model or DEFAULT_LLM, device=device, quant=quant, int8=int8, dtype=dtype, check_weights=check_weights)
    codec_model = load_codec(codec or default_codec(lm), device=device, check_weights=check_weights, **codec_options)
    check_pair(lm, codec_model)
    return ModelPair(lm, codec_model)


def default_codec(lm: "LanguageModel") -> str:
    """The codec ``lm``'s family was trained on (its hub id)."""
    from icl_audio.families import families

    return next(f.default_codec for f in families() if f.name == lm.family)


def check_pair(lm: "LanguageModel", codec: "Codec") -> None:
    """ModelError unless every code of ``codec`` has a speech token in ``lm`` (codebook size <= the
    LLM's speech tokens): a code without a token would be read as another token."""
    if codec.codebook_size > lm.layout.n_speech:
        raise ModelError(
            f"codec {codec.model_id} has {codec.codebook_size} codes but model {lm.model_id} only "
            f"{lm.layout.n_speech} speech tokens: use a matching pair"
        )


def load_codec(name: str | None = None, *, device: str = "auto", check_weights: bool = True, **options: Any) -> "Codec":
    """The codec ``name`` (default: the default family's codec): :func:`icl_audio.codec.load_codec`."""
    from icl_audio.codec import load_codec as _load_codec
    from icl_audio.families import default_family

    return _load_codec(name or default_family().default_codec, device=device, check_weights=check_weights, **options)


def load_lm(
    name: str = DEFAULT_LLM,
    *,
    device: str = "auto",
    quant: str | None = None,
    int8: bool = False,
    dtype: Any = None,
    revision: str | None = None,
    check_weights: bool = True,
) -> "LanguageModel":
    """Load a codec-token LLM (a Llasa model) with its tokenizer and speech layout.

    ``name``: a hub id (default ``HKUSTAudio/Llasa-1B-Multilingual``, gated: accept its terms and log
    in; the alias ``llasa-1b`` means ``HKUSTAudio/Llasa-1B``), a local folder, ``"debug"`` (a tiny
    random Llama with Llasa's exact tokenizer, built once into the cache) or ``"random-llasa-1b"``
    (random weights at Llasa-1B's exact shape, built once into the cache). Names are resolved by
    :func:`icl_audio.hub.resolve_model`; ``revision``: hub branch, tag or commit.
    ``device``: "auto" (CUDA if present), "cpu", "cuda" or "cuda:N".
    ``quant``: None, "int8" (LLM.int8()) or "nf4" (4-bit NormalFloat), with bitsandbytes
    (``pip install "icl-audio[int8]"``; :mod:`icl_audio.quant`); ``int8=True`` is ``quant="int8"``.
    ``dtype``: None (bf16 on CUDA and on CPUs with native bf16, else fp32; fp32 for "debug"; the
    quantised compute dtype of :func:`icl_audio.quant.compute_dtype` with ``quant``), or a torch
    dtype / "float32" / "bfloat16" / "float16".
    ``check_weights``: refuse a checkpoint whose tensors do not fit the architecture (one line naming
    the keys); False loads it anyway with a warning.
    Raises ModelError (one line) when weights are missing, offline, gated, mismatched, or the model
    lacks the family's speech layout. Nothing is ever loaded with ``trust_remote_code``.
    """
    from icl_audio.families import family_of
    from icl_audio.hub import resolve_model

    family = family_of(str(name))
    source = resolve_model(name, kind="LLM", flag="--model", aliases=family.aliases, local_builds=family.local_llms(),
                           revision=revision, gated=family.gated)
    return _load_source(source, family, device=device, quant=quant, int8=int8, dtype=dtype, check_weights=check_weights)


def _load_source(source, family, *, device: str, quant: str | None, int8: bool, dtype: Any,
                 check_weights: bool) -> "LanguageModel":
    """Load the LLM of a resolved :class:`~icl_audio.hub.ModelSource` (see :func:`load_lm`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from icl_audio import quant as quantization
    from icl_audio.devices import resolve_device, resolve_dtype
    from icl_audio.families import read_layout
    from icl_audio.hf_compat.tokenizers import read_tokenizer
    from icl_audio.llm import LanguageModel
    from icl_audio.weights import load_pretrained

    torch_device = resolve_device(device)
    mode = quantization.quant_mode(quant, int8)
    if mode is not None:
        quantization.check_support(mode, torch_device)
    folder, model_id = source.folder, source.model_id
    if dtype is None and source.origin == "debug" and mode is None:
        dtype = torch.float32  # tiny: speed is irrelevant, exact scores are not
    if mode is not None:
        torch_dtype = quantization.compute_dtype(mode, torch_device, dtype)
        kwargs = quantization.from_pretrained_kwargs(mode, torch_device, torch_dtype)
    else:
        torch_dtype = resolve_dtype(dtype, torch_device)
        kwargs = {"dtype": torch_dtype}

    try:
        tokenizer = read_tokenizer(folder)
    except Exception as exc:
        raise ModelError(f"the tokenizer of {model_id} could not be read from {folder} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    # The layout is checked before the (large) weights are read: a wrong model fails fast.
    family, layout = read_layout(tokenizer, model_id, family)
    model = load_pretrained(AutoModelForCausalLM, folder, label=f"LLM {model_id}", check_weights=check_weights,
                            attn_implementation="sdpa", **kwargs)
    if mode is None:
        model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    rows = model.get_input_embeddings().num_embeddings
    if layout.first_speech_id + layout.n_speech > rows:
        raise ModelError(f"{model_id} has {rows} embedding rows but its tokenizer's speech tokens reach id "
                         f"{layout.first_speech_id + layout.n_speech - 1}: tokenizer and weights do not match")
    if source.origin == "random":
        log.warning("note: model %s has random weights (revision %s): its predictions are meaningless "
                    "(for measuring memory and speed)", model_id, source.revision)
    return LanguageModel(model=model, tokenizer=tokenizer, layout=layout, model_id=model_id, revision=source.revision,
                         device=torch_device, dtype=torch_dtype, family=family.name, origin=source.origin)


def load_random_lm(*, quant: str | None = None, dtype: Any = None, device: str = "cpu", seed: int = 0,
                   **shape: Any) -> "LanguageModel":
    """A random-weight Llasa at ``shape`` (default: Llasa-1B's exact shape, i.e. ``random-llasa-1b``),
    saved once into the cache and loaded through :func:`load_lm`'s ``from_pretrained`` path, so
    ``quant`` ("int8", "nf4"), ``dtype`` and ``device`` act as on a real checkpoint. ``shape``:
    keywords of :func:`icl_audio.families.llasa.llasa_config` (hidden_size, num_layers, num_heads,
    num_kv_heads, intermediate_size, head_dim, tie_word_embeddings). For the memory and speed benches.
    """
    from icl_audio.families.llasa import LLASA, LLASA_1B_SHAPE, ensure_random_lm, random_revision
    from icl_audio.hub import ModelSource

    if (not shape or dict(shape) == dict(LLASA_1B_SHAPE)) and seed == 0:
        return load_lm("random-llasa-1b", quant=quant, dtype=dtype, device=device)
    shape = dict(shape or LLASA_1B_SHAPE)
    revision = random_revision(None, shape, seed)
    folder = ensure_random_lm(None, seed=seed, **shape)
    source = ModelSource(folder, f"random-llasa-{revision.rsplit('-', 1)[-1]}", revision, "random")
    return _load_source(source, LLASA, device=device, quant=quant, int8=False, dtype=dtype, check_weights=True)
