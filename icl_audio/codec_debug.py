"""The tiny debug codec (``--codec debug``): a real ``Xcodec2Model`` layout at small sizes, built
deterministically and saved with ``save_pretrained`` so it loads through the same path as real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icl_audio import paths
from icl_audio.constants import DEBUG_CODEBOOK_SIZE, SAMPLE_RATE
from icl_audio.codec_encode import batch_inputs, encoder_states, torch_threads
from icl_audio.errors import ModelError
from icl_audio.hub import quiet_transformers

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
