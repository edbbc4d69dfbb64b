"""Audio input: every accepted form decodes to float32 mono 16 kHz; every bad input is one clear error."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf

from conftest import SR, tone, write_wav
from icl_audio.audio import Clip, load_audio
from icl_audio.errors import AudioError


def test_path_wav_is_mono_float32_16k(tmp_path):
    clip = load_audio(write_wav(tmp_path / "a.wav", tone(440, 0.5)))
    assert isinstance(clip, Clip)
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert len(clip.samples) == SR // 2
    assert clip.source.endswith("a.wav")


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3"])
def test_other_formats_through_soundfile(tmp_path, suffix):
    clip = load_audio(write_wav(tmp_path / f"a{suffix}", tone(440, 0.5)))
    # Lossy codecs add/strip a few frames of padding; the content must be there.
    assert abs(len(clip.samples) - SR // 2) < 0.1 * SR
    assert np.abs(clip.samples).max() > 0.1


def test_bytes_array_tuple_and_dict_agree(tmp_path):
    x = tone(300, 0.25)
    path = write_wav(tmp_path / "x.wav", x, subtype="FLOAT")
    from_path = load_audio(path).samples
    np.testing.assert_allclose(load_audio(path.read_bytes()).samples, from_path)
    np.testing.assert_allclose(load_audio(x).samples, x)
    np.testing.assert_allclose(load_audio((x, SR)).samples, x)
    np.testing.assert_allclose(load_audio({"array": x, "sampling_rate": SR}).samples, x)
    np.testing.assert_allclose(load_audio(x, sampling_rate=SR).samples, from_path)


def test_resampling_and_downmix(tmp_path):
    stereo = np.stack([tone(440, 1.0, sr=44100), tone(440, 1.0, sr=44100)], axis=1)
    clip = load_audio(write_wav(tmp_path / "s.wav", stereo, sr=44100))
    assert len(clip.samples) == SR
    # A 440 Hz tone keeps its pitch: the spectrum peaks at 440 Hz.
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert abs(np.argmax(spectrum) * SR / len(clip.samples) - 440) < 2


@pytest.mark.parametrize("channels", [6])
def test_many_channels_and_channel_first_arrays(tmp_path, channels):
    data = np.stack([tone(200 * (c + 1), 0.2) for c in range(channels)], axis=1)
    clip = load_audio(write_wav(tmp_path / "six.wav", data))
    np.testing.assert_allclose(clip.samples, data.mean(axis=1), atol=1e-4)
    np.testing.assert_allclose(load_audio(data.T).samples, data.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT"])
def test_bit_depths(tmp_path, subtype):
    clip = load_audio(write_wav(tmp_path / f"{subtype}.wav", tone(500, 0.2), subtype=subtype))
    np.testing.assert_allclose(clip.samples, tone(500, 0.2), atol=2e-2)


def test_integer_arrays_are_scaled():
    x = (tone(500, 0.1) * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(x).samples, x / 32768, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 96000])
def test_unusual_rates(tmp_path, rate):
    clip = load_audio(write_wav(tmp_path / f"r{rate}.wav", tone(1000, 0.5, sr=rate), sr=rate))
    assert abs(len(clip.samples) - SR // 2) <= 1


def test_long_file_is_cropped_while_reading(tmp_path):
    path = write_wav(tmp_path / "long.wav", np.zeros(SR * 12, dtype=np.float32) + 0.01)
    with pytest.warns(UserWarning, match="keeping the first 5 s"):
        clip = load_audio(path, max_seconds=5)
    assert len(clip.samples) == 5 * SR


def test_unicode_and_spaces_in_names(tmp_path):
    clip = load_audio(write_wav(tmp_path / "dir with space" / "héllo wörld ☃.wav", tone(300, 0.1)))
    assert "☃" in clip.source


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.wav", "no such file"),
        (lambda p: p, "is a directory"),
        (lambda p: _write_bytes(p / "empty.wav", b""), "empty file"),
        (lambda p: _write_bytes(p / "text.wav", b"this is not audio at all\n" * 10), "cannot read audio"),
        (lambda p: _write_bytes(p / "trunc.wav", _wav_bytes()[:30]), "cannot read audio"),
        (lambda p: write_wav(p / "zero.wav", np.zeros(0, dtype=np.float32)), "zero-length"),
        (lambda p: write_wav(p / "nan.wav", np.array([0.0, np.nan, 0.1] * 100, dtype=np.float32), subtype="FLOAT"), "NaN"),
    ],
)
def test_bad_inputs_one_line_error_naming_input(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(AudioError) as err:
        load_audio(path)
    text = str(err.value)
    assert message in text
    assert "\n" not in text
    assert str(path) in text


def test_bad_arrays():
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(np.array([0.0, np.inf], dtype=np.float32))
    with pytest.raises(AudioError, match="zero-length"):
        load_audio(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="sampling_rate"):
        load_audio({"array": np.zeros(10)})
    with pytest.raises(AudioError, match="empty audio bytes"):
        load_audio(b"")
    with pytest.raises(AudioError, match="unsupported audio input"):
        load_audio(12345)
    with pytest.raises(AudioError, match="positive integer"):
        load_audio((np.zeros(10, dtype=np.float32), -5))


def _write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def _wav_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, tone(300, 0.1), SR, format="WAV")
    return buf.getvalue()


def test_no_warning_for_short_clip(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(write_wav(tmp_path / "s.wav", tone(300, 0.1)))


# -- resampling: torchaudio's default Resample kernel, checked against its documented definition --------


def _windowed_sinc_reference(x: np.ndarray, orig: int, new: int, outputs) -> np.ndarray:
    """Output samples computed directly from the definition torchaudio documents for its default
    ``Resample`` (sinc_interp_hann, lowpass_filter_width 6, rolloff 0.99), in float64, summing over
    every input sample: y[j] = sum_m x[m] k(m / orig - j / new), with the cutoff at 0.99 of the lower
    Nyquist frequency and a Hann window spanning 6 zero crossings each side."""
    import math

    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    cutoff = 0.99 * min(orig, new)
    m = np.arange(x.size, dtype=np.float64)
    out = []
    for j in outputs:
        t = (m / orig - j / new) * cutoff
        inside = np.abs(t) <= 6
        kernel = np.where(t == 0, 1.0, np.sin(np.pi * t) / np.where(t == 0, 1.0, np.pi * t))
        kernel *= np.cos(np.pi * t / 12) ** 2 * (cutoff / orig) * inside
        out.append(float(np.dot(x.astype(np.float64), kernel)))
    return np.array(out)


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 8000])
def test_resampler_is_torchaudios_windowed_sinc(rate):
    from icl_audio.audio import resample

    rng = np.random.default_rng(rate)
    n = rate // 4 + 7  # not a multiple of anything convenient
    t = np.arange(n) / rate
    x = (0.4 * np.sin(2 * np.pi * 700 * t) + 0.3 * np.sin(2 * np.pi * 0.45 * rate * t)
         + 0.1 * rng.standard_normal(n)).astype(np.float32)
    y = resample(x, rate, SR)
    assert y.dtype == np.float32 and y.shape == (-(-SR * n // rate),)
    picks = [0, 1, 2, 3, 57, 1000, y.size // 2, y.size - 3, y.size - 2, y.size - 1]
    # 1e-5: torchaudio's code rounds the phase term j/new to float32 (which the resampler reproduces),
    # moving a tap by up to ~1e-5; another cutoff or window would be off by 1e-3 and more.
    np.testing.assert_allclose(y[picks], _windowed_sinc_reference(x, rate, SR, picks), atol=1e-5, rtol=0)


def test_resampler_leaves_16k_alone_and_is_chunk_independent(monkeypatch):
    from icl_audio import audio
    from icl_audio.audio import resample

    x = tone(440, 0.5)
    out = resample(x, SR, SR)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(load_audio(x, sampling_rate=SR).samples, x)
    long = np.random.default_rng(1).standard_normal(44100 * 3).astype(np.float32)
    whole = resample(long, 44100, SR)
    monkeypatch.setattr(audio, "_RESAMPLE_CHUNK", 5000)  # many small chunks: bounded working memory
    np.testing.assert_array_equal(resample(long, 44100, SR), whole)


def test_files_at_other_rates_go_through_the_resampler(tmp_path):
    from icl_audio.audio import resample

    x = tone(523, 0.3, sr=22050)
    path = write_wav(tmp_path / "r.wav", x, sr=22050, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path).samples, resample(x, 22050, SR))


@pytest.mark.parametrize("n, rate", [(100, SR), (319, SR), (800, 44100)])
def test_shorter_than_one_codec_frame_is_one_line_error(n, rate):
    with pytest.raises(AudioError, match="too short") as err:
        load_audio(np.full(n, 0.1, dtype=np.float32), sampling_rate=rate)
    assert "\n" not in str(err.value) and "320" in str(err.value)
