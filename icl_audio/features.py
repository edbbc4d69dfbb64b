"""XCodec2's input preparation as Llasa's training codes were made: alignment rule and batched
Kaldi-style log-mel filterbanks (no torchaudio).

The convention (``inference_save_code.py`` of zhenye234/X-Codec-2.0, which made Llasa's training codes):

* filterbanks of the clip with 160 zeros on each side, with NO padding to a multiple of 320 first;
  per-bin mean/variance normalisation over the clip's frames; an odd frame count padded with one
  frame of 1.0 (facebook/w2v-bert-2.0's ``padding_value``) before frames are stacked by two;
* the acoustic branch sees the clip zero-padded (or cut) to ``code_frames(n) * 320`` samples;
* the codes kept are the first ``n // 320``; a clip shorter than one hop has none.

(The xcodec2 package and transformers' ``Xcodec2FeatureExtractor`` pad the clip to the next multiple
of 320 first and return ``n // 320 + 1`` codes, normalised a little differently: not what Llasa saw.)
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from icl_audio.constants import HOP

# Bump when anything here changes the numbers fed to the codec: it is part of the codec fingerprint,
# so cached codes computed with older preprocessing are never reused.
# 1: padded to a multiple of 320 (+ a hop), n // 320 + 1 codes. 2: Llasa's training convention.
PREPROCESSING_VERSION = "xcodec2-llasa-train-2"

N_MELS = 80
FRAME_LENGTH = 400  # 25 ms at 16 kHz
FRAME_SHIFT = 160  # 10 ms
FFT_LENGTH = 512
STRIDE = 2  # two 10 ms frames stacked -> one 20 ms (50 Hz) codec frame of 160 dims
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon, as in SeamlessM4TFeatureExtractor
NORM_EPS = 1e-7
FEATURE_DIM = N_MELS * STRIDE
EDGE = HOP // 2  # zeros added on each side of the clip before the filterbanks
# facebook/w2v-bert-2.0's preprocessor_config.json has "padding_value": 1 (the extractor's own default
# is 0.0): an odd frame count is completed with a frame of ones, after normalisation.
PAD_FRAME_VALUE = 1.0
MIN_SAMPLES = HOP  # a shorter clip gives no code


def n_codes(n_samples: int) -> int:
    """Codes kept for a clip of ``n_samples`` samples at 16 kHz: ``n // 320`` (50 per second)."""
    return int(n_samples) // HOP


def fbank_frames(n_samples: int) -> int:
    """Filterbank frames (25 ms every 10 ms, no edge padding) of a clip with 160 zeros on each side."""
    total = int(n_samples) + 2 * EDGE
    return 0 if total < FRAME_LENGTH else 1 + (total - FRAME_LENGTH) // FRAME_SHIFT


def code_frames(n_samples: int) -> int:
    """Frames the encoder computes for a clip (``ceil(fbank_frames / 2)``); ``n_codes`` of them are kept.

    Equal to ``n // 320`` when ``n % 320 < 80``, else one more.
    """
    return -(-fbank_frames(n_samples) // STRIDE)


def acoustic_length(n_samples: int) -> int:
    """Samples the acoustic branch sees: the clip zero-padded (or cut, by < 80 samples) to ``code_frames * 320``."""
    return code_frames(n_samples) * HOP


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


def log_mel(waveforms, *, dtype=None, match_reference_rounding: bool = True):
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
    if match_reference_rounding:
        # The numpy reference stores the spectrum as complex64 and returns float32 log-mels: round
        # where it rounds, so that bins with almost no variance over a clip (which the per-bin
        # normalisation amplifies) come out as the extractor's do.
        spectrum = spectrum.to(torch.complex64).to(spectrum.dtype)
    power = spectrum.real.square() + spectrum.imag.square()
    mel = torch.as_tensor(mel_np, dtype=dtype, device=x.device)
    out = torch.log(torch.clamp_min(power @ mel, MEL_FLOOR))
    return out.to(torch.float32).to(dtype) if match_reference_rounding else out


def semantic_features(clips):
    """Input features of XCodec2's semantic branch for a batch of equal-length clips.

    ``clips``: torch tensor (batch, n) of 16 kHz audio as it is (no alignment padding), n >= 320.
    As the original: 160 zeros on both sides, log-mel filterbanks, per-bin mean/variance
    normalisation over the clip's frames (unbiased variance + 1e-7), an odd frame count completed
    with a frame of 1.0, two frames stacked. Returns float32 (batch, ``code_frames(n)``, 160) on the
    input's device; equals ``SeamlessM4TFeatureExtractor(padding_value=1.0)`` on each clip padded
    with 160 zeros on both sides within 1e-4. Raises ValueError for clips shorter than 320 samples.
    """
    import torch

    if clips.shape[-1] < MIN_SAMPLES:
        raise ValueError(f"clips of {clips.shape[-1]} samples are shorter than one codec hop ({HOP})")
    x = torch.nn.functional.pad(clips.to(torch.float64), (EDGE, EDGE))
    logmel = log_mel(x).to(torch.float32).cpu().numpy()  # (B, F, 80), F >= 2 for n >= 320
    out = []
    for feats in logmel:
        # The reference's (frames, 80) array is the transpose of a (80, frames) one: its per-bin sums
        # run over contiguous memory (numpy's pairwise summation). Same layout, same rounding.
        feats = np.ascontiguousarray(feats.T).T
        # The reference normalises float32 log-mels in float32 numpy; the same expression here gives the
        # same rounding (bins whose values barely vary over a clip amplify it to ~1e-4, measured).
        feats = (feats - np.expand_dims(feats.mean(0), 0)) / np.sqrt(np.expand_dims(feats.var(0, ddof=1), 0) + NORM_EPS)
        if feats.shape[0] % STRIDE:
            feats = np.concatenate([feats, np.full((1, N_MELS), PAD_FRAME_VALUE, dtype=feats.dtype)])
        out.append(feats.reshape(-1, FEATURE_DIM))
    return torch.from_numpy(np.stack(out).astype(np.float32, copy=False)).to(clips.device)
