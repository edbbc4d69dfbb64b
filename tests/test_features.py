"""Semantic-branch features: equal to the numpy SeamlessM4T extractor configured as facebook/w2v-bert-2.0
(the original XCodec2's), on the clip + 160 zeros each side with no alignment padding; the alignment rule."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from icl_audio.features import FEATURE_DIM, acoustic_length, code_frames, n_codes, semantic_features

SR = 16_000


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


def _reference(clip: np.ndarray, padding_value: float = 1.0) -> np.ndarray:
    from transformers import SeamlessM4TFeatureExtractor

    # facebook/w2v-bert-2.0's preprocessor_config.json: padding_value 1 (the class default is 0.0).
    extractor = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=SR, stride=2,
                                            padding_value=padding_value)
    return extractor(np.pad(clip, (160, 160)), sampling_rate=SR, return_tensors="np")["input_features"][0]


def _kaldi_frames(n: int) -> int:
    # 25 ms windows every 10 ms over n + 320 samples, no edge padding (independent of the code under test)
    return len(range(0, n + 320 - 400 + 1, 160))


# multiples of 320; n % 320 < 80 (even frame count, acoustic input cut); 80..239 (odd count: a frame of
# ones is stacked); >= 240 (even count)
LENGTHS = [320, 321, 399, 400, 559, 560, 639, 640, 4000, 12345, 16000, 16100]


@pytest.mark.parametrize("n", LENGTHS)
def test_matches_seamless_m4t_extractor(n):
    clip = _signal(n, seed=n)
    ours = semantic_features(torch.from_numpy(clip)[None])[0].numpy()
    ref = _reference(clip)
    assert ours.shape == ref.shape == ((_kaldi_frames(n) + 1) // 2, FEATURE_DIM)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_odd_frame_count_pads_with_ones():
    n = next(m for m in range(4000, 4400) if _kaldi_frames(m) % 2 == 1)
    clip = _signal(n, seed=3)
    ours = semantic_features(torch.from_numpy(clip)[None])[0].numpy()
    np.testing.assert_array_equal(ours[-1, 80:], np.ones(80, dtype=np.float32))
    # the padding value is what differs from the extractor's own default (0.0): the test can tell
    assert np.abs(ours - _reference(clip, padding_value=0.0)).max() > 0.5


def test_pure_tone_matches():
    # Quiet mel bands far below a frame's peak are where single precision would drift.
    t = np.arange(8000) / SR
    clip = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    ours = semantic_features(torch.from_numpy(clip)[None])[0].numpy()
    np.testing.assert_allclose(ours, _reference(clip), atol=1e-4, rtol=0)


def test_digital_silence_is_finite():
    # Zero variance: the reference returns float32 rounding noise here; so do we, the same.
    out = semantic_features(torch.zeros(1, 8000))[0].numpy()
    assert np.isfinite(out).all() and np.abs(out).max() < 1e-2
    np.testing.assert_allclose(out, _reference(np.zeros(8000, dtype=np.float32)), atol=1e-4, rtol=0)


def test_batch_equals_one_by_one():
    clips = [_signal(9000, seed=s) for s in range(3)]
    batch = semantic_features(torch.from_numpy(np.stack(clips)))
    for i, clip in enumerate(clips):
        alone = semantic_features(torch.from_numpy(clip)[None])[0]
        torch.testing.assert_close(batch[i], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [320, 399, 400, 639, 640, 16000, 16001, 16079, 16080, 16239, 16240])
def test_alignment_rule(n):
    # Llasa's training codes: the first n // 320; the encoder computes ceil(frames / 2) >= that many,
    # and the acoustic branch sees that many hops of samples.
    assert n_codes(n) == n // 320
    assert code_frames(n) == (_kaldi_frames(n) + 1) // 2 >= n_codes(n)
    assert code_frames(n) - n_codes(n) == (1 if n % 320 >= 80 else 0)
    assert acoustic_length(n) == code_frames(n) * 320
    assert semantic_features(torch.from_numpy(_signal(n))[None]).shape[1] == code_frames(n)


def test_shorter_than_one_hop_is_refused():
    with pytest.raises(ValueError):
        semantic_features(torch.zeros(1, 319))


def test_no_torchaudio():
    assert "torchaudio" not in sys.modules
