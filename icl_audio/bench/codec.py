"""Codec speed bench: the plain transformers XCodec2 path vs ``Codec.encode``, at the real model shape."""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from icl_audio.constants import HOP, SAMPLE_RATE


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def speech_like_clip(seed: int, seconds: float) -> np.ndarray:
    """A reproducible speech-like float32 clip: a gliding harmonic voice with syllable-rate
    amplitude modulation, pauses, and a little noise (what the codec was trained on)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(90, 240) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    # Harmonics with a formant-like spectral envelope that moves over time.
    formant = 500 + 1500 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, 6)))
    voice = np.zeros(n)
    for k in range(1, 16):
        weight = np.exp(-(((k * f0) - formant) ** 2) / (2 * 400.0**2)) + 0.1 / k
        voice += weight * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 0.7
    x = voice * syllables + 0.02 * rng.standard_normal(n)
    return (0.3 * x / max(np.abs(x).max(), 1e-9)).astype(np.float32)


def _plain_encode(model, extractor, clip: np.ndarray) -> np.ndarray:
    """What a user of transformers would write: SeamlessM4T features, ``Xcodec2Model.encode``, fp32."""
    import torch

    wave = torch.from_numpy(clip)[None]
    wave = torch.nn.functional.pad(wave, (0, HOP - wave.shape[1] % HOP))
    feats = extractor(
        torch.nn.functional.pad(wave[0], (HOP // 2, HOP // 2)).numpy(), sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features
    with torch.no_grad():
        return model.encode(wave[:, None, :], feats).audio_codes.reshape(-1).numpy().astype(np.int64)


def run_codec_bench(clips: int = 8, seconds: float = 5.0, *, fast_mode: bool = True) -> dict:
    """Encode ``clips`` synthetic speech-like clips of ``seconds`` each, in one run, with:

    - the plain path: transformers ``Xcodec2Model.encode`` in fp32, one clip at a time, features from
      ``SeamlessM4TFeatureExtractor`` (the original XCodec2 recipe);
    - the project's path: ``Codec.encode`` (batched, length-bucketed, default precision);
    - the code cache: a second pass over the same clips through ``CodeCache`` in a temporary folder;
    - with ``fast_mode``, the opt-in ``precision="bf16"`` path (reported, never the default).

    The model has the real XCodec2 shape with random weights (seed 0; no download). Returns a dict:
    throughputs in audio seconds per second, ``speedup``, ``code_agreement`` (fraction of codes equal
    to the plain path's), ``cache_hit_seconds``, per-stage seconds of our path (summed over worker
    threads), and ``single_thread_speedup``: both paths on one thread, i.e. per-core efficiency, which
    other processes on the machine affect far less than the wall-clock figures. Progress goes to stderr.
    """
    import torch
    from transformers import SeamlessM4TFeatureExtractor, Xcodec2Config, Xcodec2Model
    from transformers.utils import logging as hf_logging

    from icl_audio.codec import Codec
    from icl_audio.codecache import CodeCache

    if clips < 1 or seconds <= 0:
        raise ValueError("clips must be >= 1 and seconds > 0")
    hf_logging.set_verbosity_error()  # the extractor's "pass sampling_rate" chatter is not progress
    _log("codec bench: building XCodec2 at the real shape (random weights, seed 0)...")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Xcodec2Model(Xcodec2Config()).eval()
    build_seconds = time.perf_counter() - t0
    extractor = SeamlessM4TFeatureExtractor()
    audio = [speech_like_clip(seed, seconds) for seed in range(clips)]
    total_audio = clips * seconds
    codec = Codec(model, model_id="xcodec2-random-seed0", revision="random", device=torch.device("cpu"))

    _log("codec bench: warming up both paths on a 1 s clip...")
    warm = speech_like_clip(1000, 1.0)
    _plain_encode(model, extractor, warm)
    codec.encode([warm])
    for key in codec.stage_seconds:
        codec.stage_seconds[key] = 0.0

    _log(f"codec bench: plain path, {clips} x {seconds:g} s, one clip at a time...")
    t0 = time.perf_counter()
    reference = []
    for i, clip in enumerate(audio):
        reference.append(_plain_encode(model, extractor, clip))
        _log(f"  plain {i + 1}/{clips}")
    plain_seconds = time.perf_counter() - t0

    _log(f"codec bench: Codec.encode (precision {codec.precision}), batched...")
    done = {"n": 0}

    def progress(n: int) -> None:
        done["n"] += n
        _log(f"  ours {done['n']}/{clips}")

    t0 = time.perf_counter()
    ours = codec.encode(audio, progress=progress)
    ours_seconds = time.perf_counter() - t0
    agreement = _agreement(reference, ours)

    _log("codec bench: cache hits (second pass through CodeCache)...")
    with tempfile.TemporaryDirectory(prefix="icl-audio-codec-bench-") as tmp:
        cache = CodeCache(Path(tmp))
        for clip, codes in zip(audio, ours):
            cache.put(codec, clip, codes)
        t0 = time.perf_counter()
        cached = cache.encode(codec, audio)
        hit_seconds = time.perf_counter() - t0
    if cached.reused != clips or _agreement(ours, cached.codes) != 1.0:
        raise RuntimeError("code cache did not return the stored codes")

    # Per-core efficiency, robust to other processes sharing the machine: both paths on one thread,
    # on the first two clips (the wall-clock figures above also include how each uses the cores).
    from icl_audio.codec import _torch_threads

    pair = audio[:2]
    _log("codec bench: both paths on one thread (per-core efficiency), 2 clips...")
    with _torch_threads(1):
        t0 = time.perf_counter()
        for clip in pair:
            _plain_encode(model, extractor, clip)
        plain_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        codec.encode(pair)
        ours_one = time.perf_counter() - t0

    result = {
        "clips": clips,
        "seconds": seconds,
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "workers": codec._parallelism(clips)[0],
        "precision": codec.precision,
        "model_build_seconds": round(build_seconds, 2),
        "baseline_seconds": round(plain_seconds, 3),
        "encode_seconds": round(ours_seconds, 3),
        "baseline_audio_seconds_per_second": round(total_audio / plain_seconds, 3),
        "audio_seconds_per_second": round(total_audio / ours_seconds, 3),
        "speedup": round(plain_seconds / ours_seconds, 3),
        "code_agreement": round(agreement, 5),
        # Where our path's time goes, summed over worker threads (CPU-seconds).
        **{f"stage_{k}_seconds": round(v, 3) for k, v in codec.stage_seconds.items()},
        "single_thread_baseline_seconds_per_clip": round(plain_one / len(pair), 3),
        "single_thread_seconds_per_clip": round(ours_one / len(pair), 3),
        "single_thread_speedup": round(plain_one / ours_one, 3),
        "cache_hit_seconds": round(hit_seconds, 5),
        "cache_hit_fraction_of_encode": round(hit_seconds / ours_seconds, 6),
    }
    if fast_mode:
        _log("codec bench: opt-in precision='bf16' (semantic branch in bf16)...")
        fast = Codec(model, model_id="xcodec2-random-seed0", revision="random", device=torch.device("cpu"),
                     precision="bf16")  # converts the model's semantic encoder in place: measured last
        fast.encode([warm])
        t0 = time.perf_counter()
        fast_codes = fast.encode(audio)
        fast_seconds = time.perf_counter() - t0
        result["bf16_audio_seconds_per_second"] = round(total_audio / fast_seconds, 3)
        result["bf16_speedup"] = round(plain_seconds / fast_seconds, 3)
        result["bf16_code_agreement"] = round(_agreement(reference, fast_codes), 5)
    return result


def _agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    equal = total = 0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            raise RuntimeError(f"code lengths differ: {x.shape} vs {y.shape}")
        equal += int((x == y).sum())
        total += x.size
    return equal / max(total, 1)
