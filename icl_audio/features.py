"""XCodec2's input preparation: alignment padding and batched Kaldi-style log-mel filterbanks (no torchaudio)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from icl_audio.constants import HOP

# Bump when anything here changes the numbers fed to the codec: it is part of the codec fingerprint,
# so cached codes computed with older preprocessing are not reused.
PREPROCESSING_VERSION = "xcodec2-fbank-1"

N_MELS = 80
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_LENGTH = 512
STRIDE = 2  # two 10 ms frames stacked -> one 20 ms (50 Hz) codec frame of 160 dims
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon, as in SeamlessM4TFeatureExtractor
NORM_EPS = 1e-7
FEATURE_DIM = N_MELS * STRIDE


def padded_length(n_samples: int) -> int:
    """Length of a clip of ``n_samples`` after XCodec2's alignment padding.

    The original pads at the end up to the next multiple of HOP, adding a full extra hop when the
    length is already a multiple. Accepts any integer >= 0.
    """
    return (int(n_samples) // HOP + 1) * HOP


def n_codes(n_samples: int) -> int:
    """Number of codes XCodec2 produces for ``n_samples`` samples of 16 kHz audio: ``n // 320 + 1``."""
    return padded_length(n_samples) // HOP


def pad_for_codec(samples: np.ndarray) -> np.ndarray:
    """Zero-pad a 1-D float waveform at the end to ``padded_length(len(samples))`` (float32 copy)."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    out = np.zeros(padded_length(samples.shape[0]), dtype=np.float32)
    out[: samples.shape[0]] = samples
    return out


@lru_cache(maxsize=1)
def _kaldi_tables() -> tuple[np.ndarray, np.ndarray]:
    # The very same window and mel matrix SeamlessM4TFeatureExtractor builds (numpy helpers, no torchaudio).
    from transformers.audio_utils import mel_filter_bank, window_function

    mel = mel_filter_bank(
        num_frequency_bins=FFT_LENGTH // 2 + 1,
        num_mel_filters=N_MELS,
        min_frequency=20,
        max_frequency=8000,
        sampling_rate=16000,
        norm=None,
        mel_scale="kaldi",
        triangularize_in_mel_space=True,
    )
    window = window_function(FRAME_LENGTH, "povey", periodic=False)
    return np.asarray(window, dtype=np.float64), np.asarray(mel, dtype=np.float64)


def log_mel(waveforms, *, dtype=None):
    """Kaldi-compatible 80-bin log-mel filterbanks of a batch of equal-length waveforms.

    ``waveforms``: torch tensor (batch, samples), float in [-1, 1] (scaled by 2**15 here, as Kaldi
    expects 16-bit values). Frames are 25 ms every 10 ms without edge padding (snip_edges), each
    with DC removal, pre-emphasis 0.97 and a povey window, then a 512-point power spectrum. Returns
    (batch, frames, 80) in float64 by default (``dtype`` to change), on the input's device. The
    spectrum is computed in double precision so that quiet bands far below a frame's peak keep the
    accuracy of the numpy reference.
    """
    import torch

    dtype = dtype or torch.float64
    window_np, mel_np = _kaldi_tables()
    x = waveforms.to(dtype) * (2**15)
    if x.shape[-1] < FRAME_LENGTH:
        return x.new_zeros((x.shape[0], 0, N_MELS))
    frames = x.unfold(-1, FRAME_LENGTH, FRAME_SHIFT)  # (B, F, 400) view
    frames = frames - frames.mean(dim=-1, keepdim=True)
    emphasised = torch.empty_like(frames)
    emphasised[..., 1:] = frames[..., 1:] - PREEMPHASIS * frames[..., :-1]
    emphasised[..., 0] = frames[..., 0] * (1 - PREEMPHASIS)
    emphasised *= torch.as_tensor(window_np, dtype=dtype, device=x.device)
    spectrum = torch.fft.rfft(emphasised, n=FFT_LENGTH, dim=-1)
    power = spectrum.real.square() + spectrum.imag.square()
    mel = torch.as_tensor(mel_np, dtype=dtype, device=x.device)
    return torch.log(torch.clamp_min(power @ mel, MEL_FLOOR))


def semantic_features(padded):
    """Input features of XCodec2's semantic branch for a batch of equal-length, alignment-padded clips.

    ``padded``: torch tensor (batch, samples) of 16 kHz audio already padded with ``pad_for_codec``
    (any length is accepted; aligned lengths give exactly one feature frame per code). Follows the
    original XCodec2: 160 zeros on both sides, log-mel filterbanks, per-bin mean/variance
    normalisation over the clip (unbiased variance + 1e-7), then two frames stacked. Returns float32
    (batch, frames // 2, 160) on the input's device; equals ``SeamlessM4TFeatureExtractor`` (applied
    to each clip padded with 160 zeros on both sides) within 1e-4.
    """
    import torch

    half = HOP // 2
    x = torch.nn.functional.pad(padded.to(torch.float64), (half, half))
    feats = log_mel(x)  # (B, F, 80) float64
    n = feats.shape[1]
    if n > 1:
        mean = feats.mean(dim=1, keepdim=True)
        var = feats.var(dim=1, unbiased=True, keepdim=True)
        feats = (feats - mean) / torch.sqrt(var + NORM_EPS)
    elif n == 1:
        # numpy's ddof=1 variance of one frame is NaN; keep the reference behaviour explicit.
        feats = torch.full_like(feats, float("nan"))
    if n % STRIDE:
        # SeamlessM4T pads (with zeros, after normalising) to a multiple of the stride.
        feats = torch.nn.functional.pad(feats, (0, 0, 0, STRIDE - n % STRIDE))
    b, f, _ = feats.shape
    return feats.reshape(b, f // STRIDE, FEATURE_DIM).to(torch.float32)
