"""Codecs built on this machine: the tiny debug codec (``--codec debug``: a real ``Xcodec2Model``
layout at small sizes, calibrated) and random-weight codecs at the real shape (``--codec
random-xcodec2``: XCodec2's default ``Xcodec2Config()``). Both are saved with ``save_pretrained``
once into the cache, so they load through the same path as real models."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from icl_audio import paths
from icl_audio.constants import DEBUG_CODEBOOK_SIZE, SAMPLE_RATE
from icl_audio.codec_encode import batch_inputs, encoder_states, torch_threads
from icl_audio.errors import ModelError
from icl_audio.hub import quiet_transformers

if TYPE_CHECKING:
    from icl_audio.codec import Codec
    from icl_audio.families import LocalBuild

DEBUG_FOLDER = "debug-xcodec2"
# Bump when the build changes (4: calibrated on features of the training-data convention).
DEBUG_BUILD_VERSION = "4"
_DEBUG_MARKER = "icl-audio-debug.json"


def debug_config():
    """The tiny Xcodec2Config of the debug codec: real layout, small sizes, FSQ levels [4, 4, 4, 4]."""
    from transformers import Wav2Vec2BertConfig, Xcodec2Config

    semantic = Wav2Vec2BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        output_hidden_size=32,
        feature_projection_input_dim=160,
        conv_depthwise_kernel_size=5,
        left_max_position_embeddings=16,
        right_max_position_embeddings=4,
    )
    return Xcodec2Config(
        hidden_size=64,  # the decoder's GroupNorm has 32 groups: a multiple of 32
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        encoder_hidden_size=4,
        downsampling_ratios=[2, 2, 4, 4, 5],  # product = HOP: 50 codes per second, like the real one
        semantic_model_config=semantic,
        quantization_dim=64 + 32,
        quantization_levels=[4, 4, 4, 4],
    )


def _calibration_clips() -> list[np.ndarray]:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    rng = np.random.default_rng(1234)
    clips = [0.3 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(np.geomspace(80, 5000, 16))]
    clips += [0.1 * rng.standard_normal(t.shape), 0.03 * rng.standard_normal(t.shape)]
    clips.append(0.3 * np.sin(2 * np.pi * (100 + 3000 * t) * t))
    return [c.astype(np.float32) for c in clips]


def build_debug_codec(folder: Path) -> Path:
    """Build the debug codec into ``folder`` (which must not exist) with ``save_pretrained``.

    Deterministic: random weights from a fixed seed, then the quantizer's input projection is replaced
    by the 4 principal directions of the encoder's output (the one encode path of
    :mod:`icl_audio.codec_encode`) on fixed synthetic sounds (tones from 80 Hz to 5 kHz, noise, a chirp),
    scaled to spread over the FSQ levels. Random init alone gives nearly constant codes; with this,
    different sounds get different codes and similar sounds (tones of nearby pitch, other phase or
    level) largely shared ones, so retrieval over debug codes has something to find. Returns ``folder``.
    """
    import torch
    from transformers import Xcodec2Model

    if DEBUG_CODEBOOK_SIZE != 4**4:
        raise AssertionError("debug codebook size and FSQ levels disagree")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Xcodec2Model(debug_config()).eval()
    # One thread: a tiny model gains nothing from more, and loses much when other processes share the cores.
    with torch.inference_mode(), torch_threads(1):
        features, wave = batch_inputs(_calibration_clips())
        hidden = encoder_states(model, features, wave)
        hidden = hidden.reshape(-1, hidden.shape[-1]).double()
        mean = hidden.mean(dim=0)
        _, sing, vh = torch.linalg.svd(hidden - mean, full_matrices=False)
        n_dims = model.quantizer.project_in.out_features
        directions = vh[:n_dims]
        # A fixed sign per direction (SVD's is arbitrary): the largest entry positive.
        signs = torch.sign(directions.gather(1, directions.abs().argmax(dim=1, keepdim=True)))
        directions = directions * signs
        # Levels per standard deviation, falling with the component: the main directions decide the
        # code, minor ones split it less often (measured: tones of similar pitch then share codes,
        # while low tones, high tones and noise stay apart).
        spread = torch.tensor([0.8, 0.5, 0.3, 0.2], dtype=torch.float64)[:n_dims]
        scale = spread / (sing[:n_dims] / (hidden.shape[0] - 1) ** 0.5).clamp_min(1e-12)
        weight = directions * scale[:, None]
        bias = -(weight @ mean)
    with torch.no_grad():
        model.quantizer.project_in.weight.copy_(weight.float())
        model.quantizer.project_in.bias.copy_(bias.float())
    folder.mkdir(parents=True)
    with quiet_transformers():
        model.save_pretrained(folder)
    return folder


def ensure_debug_codec(root: Path | None = None) -> Path:
    """The debug codec's folder under ``root`` (default ``paths.models_dir()``), built if missing or stale
    (through :func:`icl_audio.fsutil.build_once`, safe with concurrent callers)."""
    from icl_audio.fsutil import build_once

    root = Path(root) if root is not None else paths.models_dir()
    try:
        return build_once(root / DEBUG_FOLDER, build_debug_codec, marker=_DEBUG_MARKER,
                          stamp={"version": DEBUG_BUILD_VERSION}, required=("config.json", "model.safetensors"))
    except OSError as exc:
        raise ModelError(f"could not create the debug codec in {str(root / DEBUG_FOLDER)!r}: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Random weights at the real shape


def _real_config():
    from transformers import Xcodec2Config

    return Xcodec2Config()  # its defaults are XCodec2's real shape: 65,536 codes, w2v-BERT semantic branch


# Names a user can give for random-weight codecs -> their config (memory and speed at the real size).
RANDOM_CODECS: dict[str, Callable[[], Any]] = {"random-xcodec2": _real_config}
_RANDOM_BUILD_VERSION = 1
_RANDOM_MARKER = "icl_audio_random.json"


def random_codec_model(config: Any = None, *, seed: int = 0):
    """A random-weight ``Xcodec2Model`` of ``config`` (default ``Xcodec2Config()``, the real shape), fp32,
    in eval mode; seeded, and the caller's torch RNG is left as it was."""
    import torch
    from transformers import Xcodec2Model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Xcodec2Model(config if config is not None else _real_config())
    return model.eval().requires_grad_(False)


def build_random_codec(config: Any = None, *, seed: int = 0, device: str = "cpu", **codec_options: Any) -> "Codec":
    """A :class:`~icl_audio.codec.Codec` around :func:`random_codec_model`, in memory (no cache
    folder). ``codec_options``: the Codec's keywords (precision, max_seconds, crop, ...). Its codes
    are meaningless; for memory and speed at the real size. The name ``random-xcodec2`` loads the
    same shape through ``from_pretrained`` instead (:func:`ensure_random_codec`)."""
    from icl_audio.codec import Codec
    from icl_audio.devices import resolve_device

    dev = resolve_device(device)
    model = random_codec_model(config, seed=seed).to(dev)
    return Codec(model, model_id="random-xcodec2", revision=random_codec_revision(None, seed), device=dev,
                 **codec_options)


def random_codec_revision(name: str | None, seed: int = 0) -> str:
    """The revision a random codec reports: it says "random", the build version and the seed."""
    return f"random-v{_RANDOM_BUILD_VERSION}-seed{seed}" + ("" if name in (None, "random-xcodec2") else f"-{name}")


def ensure_random_codec(name: str = "random-xcodec2", *, seed: int = 0) -> Path:
    """The folder of the random codec ``name`` (a key of :data:`RANDOM_CODECS`), saved once into
    ``paths.models_dir()`` (2.5 GB of fp32 weights for ``random-xcodec2``)."""
    from icl_audio.fsutil import build_once

    if name not in RANDOM_CODECS:
        raise ModelError(f"unknown random codec {name!r} (known: {', '.join(RANDOM_CODECS)})")

    def build(folder: Path) -> None:
        model = random_codec_model(RANDOM_CODECS[name](), seed=seed)
        with quiet_transformers():
            model.save_pretrained(folder)

    try:
        return build_once(paths.models_dir() / name, build, marker=_RANDOM_MARKER,
                          stamp={"builder": "icl_audio.codec_debug", "version": _RANDOM_BUILD_VERSION, "seed": seed},
                          required=("config.json", "model.safetensors"))
    except OSError as exc:
        raise ModelError(f"could not write the random codec {name} into {paths.models_dir()}: {exc}") from None


def local_codecs() -> Mapping[str, "LocalBuild"]:
    """The codecs built on this machine, by name: "debug" and the random ones."""
    from icl_audio.constants import DEBUG_NAME
    from icl_audio.families import LocalBuild

    # The debug codec's revision is its folder's content hash (None): codes cached with it stay valid.
    builds = {DEBUG_NAME: LocalBuild(ensure_debug_codec, None, "debug")}
    for name in RANDOM_CODECS:
        builds[name] = LocalBuild(lambda name=name: ensure_random_codec(name), random_codec_revision(name), "random")
    return builds
