"""Audio input: any path, bytes or array becomes a float32 mono 16 kHz clip, or a one-line error."""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from icl_audio.constants import DEFAULT_MAX_SECONDS, SAMPLE_RATE
from icl_audio.errors import AudioError
from icl_audio.features import MIN_SAMPLES

# Resampling to 16 kHz: torchaudio's default ``Resample`` (how Llasa's training codes were made):
# windowed sinc, Hann window, 6 zero crossings, cutoff at 0.99 of the lower Nyquist frequency.
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
_RESAMPLE_CHUNK = 1 << 18  # gathered input samples per step: bounded working memory for any length

# DEFAULT_MAX_SECONDS (the one crop policy, icl_audio.constants): one hour of 96 kHz 6-channel
# float64 is 16 GB, so anything longer is cropped *while reading* (only the kept window is decoded)
# and no input can exhaust memory.

AudioInput = Union[str, os.PathLike, bytes, bytearray, np.ndarray, Mapping[str, Any], tuple, "Clip"]


@dataclass(frozen=True)
class Clip:
    """A decoded clip: float32 mono samples at 16 kHz, and a name for messages and outputs."""

    samples: np.ndarray
    source: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def describe(source: Any) -> str:
    """A short human name for an audio input (used in errors and outputs)."""
    if isinstance(source, Clip):
        return source.source
    if _is_lazy(source):
        return str(source.key)
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, np.ndarray):
        return f"<array {tuple(source.shape)}>"
    if isinstance(source, Mapping):
        return str(source.get("path") or "<array dict>")
    if isinstance(source, tuple):
        return "<(array, sampling_rate)>"
    return f"<{type(source).__name__}>"


def load_audio(
    source: AudioInput,
    *,
    sampling_rate: int | None = None,
    name: str | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> Clip:
    """Decode ``source`` into a :class:`Clip` (float32, mono, 16 kHz).

    Accepted inputs:
      - a path (``str`` or ``Path``) to any file soundfile reads: wav, flac, ogg, mp3, aiff, ...;
      - raw file bytes (``bytes``/``bytearray``) of such a file;
      - a numpy array of samples, with ``sampling_rate=`` (16 kHz assumed if omitted, like
        transformers pipelines); shape ``(n,)``, ``(n, channels)`` or ``(channels, n)``;
      - ``(array, sampling_rate)`` or ``{"array": ..., "sampling_rate": ...}``
        (``"raw"`` is accepted for ``"array"``);
      - a :class:`Clip` (returned as is);
      - a lazy reference (``icl_audio.recipes.AudioRef``: a segment of a file, a dataset row): an
        object with ``key`` and ``open_audio()``, read now and decoded as what that returns, named by its key.
    Multi-channel audio is averaged to mono; other rates are resampled with :func:`resample`
    (torchaudio's default kernel, as Llasa's training codes were made; codes are sensitive to the
    resampler). Clips longer than ``max_seconds`` keep their first ``max_seconds`` (as ARCH
    truncates), with a warning; ``None`` disables the bound. Raises :class:`AudioError` with one
    line naming the input when it is missing, a directory, unreadable, empty, shorter than one
    codec frame (320 samples at 16 kHz, 20 ms), or holds NaN/inf samples.
    """
    if isinstance(source, Clip):
        return source
    if _is_lazy(source):
        # Its bytes (or window of a file) are fetched only now, when the stream reaches it.
        return load_audio(source.open_audio(), sampling_rate=sampling_rate, name=name or str(source.key),
                          max_seconds=max_seconds)
    label = name or describe(source)
    if isinstance(source, (str, os.PathLike)):
        samples, rate = _read_file(Path(source), label, max_seconds)
    elif isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioError(f"{label}: empty audio bytes")
        samples, rate = _read_soundfile(io.BytesIO(bytes(source)), label, max_seconds)
    elif isinstance(source, Mapping):
        array = source.get("array", source.get("raw"))
        rate = source.get("sampling_rate", sampling_rate)
        if array is None or rate is None:
            raise AudioError(f"{label}: a dict input needs 'array' and 'sampling_rate' keys")
        samples = _as_float_array(array, label)
    elif isinstance(source, tuple) and len(source) == 2:
        samples, rate = _as_float_array(source[0], label), source[1]
    elif isinstance(source, np.ndarray) or _is_tensor(source):
        samples, rate = _as_float_array(source, label), sampling_rate or SAMPLE_RATE
    else:
        raise AudioError(
            f"{label}: unsupported audio input; expected a path, bytes, a numpy array, "
            "(array, sampling_rate) or {'array', 'sampling_rate'}"
        )
    try:
        rate = int(rate)
    except (TypeError, ValueError):
        raise AudioError(f"{label}: sampling rate must be a positive integer, got {rate!r}") from None
    if rate <= 0:
        raise AudioError(f"{label}: sampling rate must be a positive integer, got {rate}")
    mono = _to_mono(samples, label)
    if max_seconds is not None and len(mono) > max_seconds * rate:
        # Arrays given in memory are cropped here; files were already cropped while reading.
        _warn_crop(label, len(mono) / rate, max_seconds)
        mono = mono[: int(max_seconds * rate)]
    return Clip(_finish(mono, rate, label), label)


def _is_lazy(x: Any) -> bool:
    return callable(getattr(x, "open_audio", None)) and hasattr(x, "key")


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _as_float_array(array: Any, label: str) -> np.ndarray:
    if _is_tensor(array):
        array = array.detach().cpu().float().numpy()
    try:
        array = np.asarray(array)
    except Exception:  # noqa: BLE001 - anything not array-like
        raise AudioError(f"{label}: audio is not an array of numbers") from None
    if array.dtype.kind in "iu":
        # Integer PCM: scale to [-1, 1) by the type's range, as soundfile does.
        info = np.iinfo(array.dtype)
        scale = float(max(abs(info.min), info.max + 1))
        offset = (info.max + 1) / 2 if array.dtype.kind == "u" else 0.0
        return ((array.astype(np.float64) - offset) / scale).astype(np.float32)
    if array.dtype.kind != "f":
        raise AudioError(f"{label}: audio samples must be numbers, got dtype {array.dtype}")
    return array


def check_audio_header(path: str | os.PathLike) -> None:
    """Raise :class:`AudioError` (one line naming ``path``) when a file's header already shows it
    cannot be read as a clip: missing, a directory, empty, not a format soundfile reads, or holding
    no frames. Reads the header only (``soundfile.info``), so a whole list of inputs is checked
    before any model loads; a file that passes may still fail to decode later."""
    import soundfile as sf

    path = Path(path)
    label = str(path)
    _check_file(path, label)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types for what it cannot read
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AudioError(f"{label}: not audio soundfile can read ({reason})") from None
    if info.frames <= 0:
        raise AudioError(f"{label}: no audio frames")


def _check_file(path: Path, label: str) -> None:
    if not path.exists():
        raise AudioError(f"{label}: no such file")
    if path.is_dir():
        raise AudioError(f"{label}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{label}: empty file")


def _read_file(path: Path, label: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    _check_file(path, label)
    return _read_soundfile(path, label, max_seconds)


def _read_soundfile(file: Any, label: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        with sf.SoundFile(file) as f:
            rate = f.samplerate
            frames = f.frames
            if max_seconds is not None and frames > max_seconds * rate:
                _warn_crop(label, frames / rate, max_seconds)
                frames = int(max_seconds * rate)
            samples = f.read(frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AudioError(f"{label}: cannot read audio ({reason})") from None
    return samples, rate


def _to_mono(samples: np.ndarray, label: str) -> np.ndarray:
    if samples.size == 0:
        raise AudioError(f"{label}: zero-length audio (no samples)")
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioError(f"{label}: expected 1-D or 2-D audio, got shape {tuple(samples.shape)}")
    # soundfile gives (frames, channels); arrays from other libraries are often (channels, frames).
    if samples.shape[0] < samples.shape[1] and samples.shape[0] <= 16:
        samples = samples.T
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def _finish(mono: np.ndarray, rate: int, label: str) -> np.ndarray:
    if mono.size == 0:
        raise AudioError(f"{label}: zero-length audio (no samples)")
    if not np.isfinite(mono).all():
        raise AudioError(f"{label}: audio contains NaN or infinite samples")
    mono = mono.astype(np.float32, copy=False)
    if rate != SAMPLE_RATE:
        mono = resample(mono, rate, SAMPLE_RATE)
    if mono.size < MIN_SAMPLES:
        raise AudioError(
            f"{label}: too short ({mono.size} samples at {SAMPLE_RATE} Hz); the codec needs at least "
            f"{MIN_SAMPLES} samples ({1000 * MIN_SAMPLES // SAMPLE_RATE} ms) for one code"
        )
    return np.ascontiguousarray(mono)


def resample(samples: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a 1-D float signal as torchaudio's ``Resample(orig_rate, new_rate)`` does by default.

    Band-limited interpolation with a Hann-windowed sinc (``sinc_interp_hann``, 6 zero crossings,
    rolloff 0.99) on the gcd-reduced rates o = orig/g, n = new/g::

        y[j] = sum_m x[m] * h((m / o - j / n) * f_c),   f_c = 0.99 * min(o, n)
        h(t) = (f_c / o) * sinc(pi t) * cos(pi t / 12)^2  for |t| <= 6, else 0

    with zeros outside the clip, and ``ceil(n * len / o)`` output samples. The filter taps are
    computed in float64 and rounded to float32, as torchaudio does; the sums run in float64. Works in
    chunks: memory beyond input and output stays bounded for any length. Returns float32; the input
    itself (as float32) when the rates are equal. Accepts positive integer rates.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if int(orig_rate) == int(new_rate):
        return x
    taps, first, width = _sinc_taps(int(orig_rate), int(new_rate))
    g = math.gcd(int(orig_rate), int(new_rate))
    o, n = int(orig_rate) // g, int(new_rate) // g
    length = -(-n * x.shape[0] // o)
    blocks = -(-length // n)  # output sample j = n * block + phase
    n_taps = taps.shape[1]
    # Zeros around the clip: the leftmost tap reads width + 1 before it, the rightmost up to o + width + 2 after.
    left = width + 1
    right = o * blocks - x.shape[0] + width + 2
    padded = np.concatenate([np.zeros(left, np.float32), x, np.zeros(max(right, 0), np.float32)])
    out = np.empty(blocks * n, dtype=np.float32)
    offsets = left + first[:, None] + np.arange(n_taps)[None, :]  # (n, taps) within a block
    per_chunk = max(1, _RESAMPLE_CHUNK // (n * n_taps))
    for b0 in range(0, blocks, per_chunk):
        b1 = min(blocks, b0 + per_chunk)
        index = (o * np.arange(b0, b1))[:, None, None] + offsets[None]  # (blocks, n, taps)
        out[b0 * n : b1 * n] = (padded[index] * taps[None]).sum(axis=-1, dtype=np.float64).reshape(-1)
    return out[:length]


@lru_cache(maxsize=16)
def _sinc_taps(orig_rate: int, new_rate: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Per output phase i (of n), the taps of torchaudio's kernel that can be non-zero: (n, 2*width+2)
    float32 values for input offsets ``first[i] + k`` (relative to block start o * block), and width.

    torchaudio evaluates every phase over 2*width + o offsets, most of them beyond 6 zero crossings
    (exactly 0 in float32); only those near i * o / n are kept here, so odd rates (44101 Hz) stay small.
    """
    g = math.gcd(orig_rate, new_rate)
    o, n = orig_rate // g, new_rate // g
    base = min(o, n) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * o / base)
    phase = np.arange(n)
    first = (phase * o) // n - width  # floor(i * o / n) - width
    offsets = first[:, None] + np.arange(2 * width + 2)[None, :]
    # As torchaudio: the phase term -i/n is a float32 quotient, the offset term a float64 one.
    shift = (np.float32(-1.0) * phase.astype(np.float32) / np.float32(n)).astype(np.float64)
    t = (shift[:, None] + offsets / o) * base
    t = np.clip(t, -LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = np.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.where(t == 0, 1.0, np.sin(t) / t)
    taps = (sinc * window * (base / o)).astype(np.float32)
    return taps, first, width


def _warn_crop(label: str, seconds: float, max_seconds: float) -> None:
    warnings.warn(
        f"{label}: {seconds:.1f} s long, keeping the first {max_seconds:g} s (max_seconds)",
        stacklevel=4,
    )
