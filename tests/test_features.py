"""Semantic-branch features: equal to the numpy SeamlessM4T extractor the original XCodec2 used, and aligned."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from icl_audio.features import FEATURE_DIM, n_codes, pad_for_codec, padded_length, semantic_features

SR = 16_000


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


def _reference(padded: np.ndarray) -> np.ndarray:
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=SR, stride=2)
    return extractor(np.pad(padded, (160, 160)), sampling_rate=SR, return_tensors="np")["input_features"][0]


@pytest.mark.parametrize("n", [1, 319, 320, 321, 4000, 12345, 16000])
def test_matches_seamless_m4t_extractor(n):
    padded = pad_for_codec(_signal(n, seed=n))
    ours = semantic_features(torch.from_numpy(padded)[None])[0].numpy()
    ref = _reference(padded)
    assert ours.shape == ref.shape == (n_codes(n), FEATURE_DIM)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_pure_tone_matches():
    # Quiet mel bands far below a frame's peak are where single precision would drift.
    t = np.arange(8000) / SR
    padded = pad_for_codec((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    ours = semantic_features(torch.from_numpy(padded)[None])[0].numpy()
    np.testing.assert_allclose(ours, _reference(padded), atol=1e-4, rtol=0)


def test_digital_silence_is_zero():
    # Zero variance: the reference returns float32 rounding noise (~1e-3) here, we return exact zeros.
    out = semantic_features(torch.zeros(1, 8000))
    assert torch.isfinite(out).all() and out.abs().max() < 1e-6


def test_batch_equals_one_by_one():
    clips = [pad_for_codec(_signal(9000, seed=s)) for s in range(3)]
    batch = semantic_features(torch.from_numpy(np.stack(clips)))
    for i, clip in enumerate(clips):
        alone = semantic_features(torch.from_numpy(clip)[None])[0]
        torch.testing.assert_close(batch[i], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [0, 1, 160, 319, 320, 321, 639, 640, 16000, 16001])
def test_alignment_rule(n):
    # Pad to a multiple of 320 (a full extra hop when already one): one feature frame per code.
    assert padded_length(n) % 320 == 0 and padded_length(n) > n
    assert n_codes(n) == n // 320 + 1
    padded = pad_for_codec(np.ones(n, dtype=np.float32))
    assert padded.shape == (padded_length(n),)
    assert semantic_features(torch.from_numpy(padded)[None]).shape[1] == n_codes(n)


def test_no_torchaudio():
    assert "torchaudio" not in sys.modules
