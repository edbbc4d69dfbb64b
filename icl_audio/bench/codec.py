"""Codec speed bench: the plain transformers XCodec2 path vs ``Codec.encode``, at the real model shape."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from icl_audio.bench.machine import cpu_name

from icl_audio.constants import HOP, SAMPLE_RATE

log = logging.getLogger("icl_audio.bench")


def _log(msg: str) -> None:
    log.info(msg)  # progress: the CLI shows the bench logger's INFO lines on stderr


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
    """What a user of transformers would write following X-Codec-2.0's ``inference_save_code.py`` (how
    Llasa's training codes were made): SeamlessM4T features of the clip + 160 zeros each side, the
    clip zero-padded or cut to frames x 320, ``Xcodec2Model.encode`` in fp32, the first n // 320 codes."""
    import torch

    wave = torch.from_numpy(clip)[None]
    feats = extractor(
        torch.nn.functional.pad(wave, (HOP // 2, HOP // 2)), sampling_rate=SAMPLE_RATE, return_tensors="pt"
    ).input_features
    length = feats.shape[1] * HOP
    wave = torch.nn.functional.pad(wave, (0, length - wave.shape[1])) if length > wave.shape[1] else wave[:, :length]
    with torch.no_grad():
        codes = model.encode(wave[:, None, :], feats).audio_codes.reshape(-1).numpy().astype(np.int64)
    return codes[: clip.shape[0] // HOP]


def run_codec_bench(clips: int = 8, seconds: float = 5.0, *, fast_mode: bool = True, config=None) -> dict:
    """Encode ``clips`` synthetic speech-like clips of ``seconds`` each, in one run, with:

    - the plain path: transformers ``Xcodec2Model.encode`` in fp32, one clip at a time, features from
      ``SeamlessM4TFeatureExtractor`` configured as w2v-bert-2.0 (the recipe of Llasa's training codes);
    - the project's path: ``Codec.encode`` (batched, length-bucketed, default precision);
    - the code cache: a second pass over the same clips through ``CodeCache`` in a temporary folder;
    - with ``fast_mode``, the opt-in ``precision="bf16"`` path (reported, never the default).

    The first two are interleaved in rounds of two clips (plain, ours on both, plain), so that the
    machine's changing speed affects both alike; ``speedup`` = total plain time / total time of ours.

    The model has the real XCodec2 shape with random weights (seed 0; no download). Returns a dict:
    throughputs in audio seconds per second, ``speedup``, ``code_agreement`` (fraction of codes equal
    to the plain path's), ``cache_hit_seconds``, per-stage seconds of our path (summed over worker
    threads), and ``single_thread_speedup``: both paths on one thread, i.e. per-core efficiency, which
    other processes on the machine affect far less than the wall-clock figures. Progress goes to stderr.
    ``config``: another ``Xcodec2Config`` than the real shape (tests use the debug codec's).
    """
    import torch
    from transformers import SeamlessM4TFeatureExtractor, Xcodec2Config, Xcodec2Model
    from transformers.utils import logging as hf_logging

    from icl_audio.codec import Codec
    from icl_audio.codecache import CodeCache

    if clips < 1 or seconds <= 0:
        raise ValueError("clips must be >= 1 and seconds > 0")
    hf_logging.set_verbosity_error()  # the extractor's "pass sampling_rate" chatter is not progress
    _log(f"codec bench: building XCodec2 at {'the real' if config is None else 'a given'} shape (random weights, seed 0)...")
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Xcodec2Model(config if config is not None else Xcodec2Config()).eval()
    build_seconds = time.perf_counter() - t0
    extractor = SeamlessM4TFeatureExtractor(padding_value=1.0)  # facebook/w2v-bert-2.0's preprocessor config
    audio = [speech_like_clip(seed, seconds) for seed in range(clips)]
    total_audio = clips * seconds
    codec = Codec(model, model_id="xcodec2-random-seed0", revision="random", device=torch.device("cpu"))

    _log("codec bench: warming up both paths on a 1 s clip...")
    warm = speech_like_clip(1000, 1.0)
    _plain_encode(model, extractor, warm)
    codec.encode([warm])
    for key in codec.stage_seconds:
        codec.stage_seconds[key] = 0.0

    # The machine may be shared, and its speed drifts by 2x within tens of seconds. So the two paths
    # are interleaved in rounds of two clips: plain(clip i), ours(clips i and i+1 together), plain(clip
    # i+1). The plain path brackets ours in time, so a steady drift cancels out of each round's ratio.
    _log(f"codec bench: {clips} x {seconds:g} s clips, in rounds of two: plain path (one clip at a time), "
         f"Codec.encode (precision {codec.precision}) on both, plain path again...")
    reference: list[np.ndarray] = []
    ours: list[np.ndarray] = []
    plain_seconds = ours_seconds = 0.0
    round_speedups = []
    for start in range(0, clips, 2):
        pair = audio[start:start + 2]
        t0 = time.perf_counter()
        plain_codes = [_plain_encode(model, extractor, pair[0])]
        t1 = time.perf_counter()
        ours += codec.encode(pair)
        t2 = time.perf_counter()
        plain_codes += [_plain_encode(model, extractor, clip) for clip in pair[1:]]
        t3 = time.perf_counter()
        reference += plain_codes
        plain_seconds += (t1 - t0) + (t3 - t2)
        ours_seconds += t2 - t1
        round_speedups.append(((t1 - t0) + (t3 - t2)) / (t2 - t1))
        _log(f"  clips {start + 1}-{start + len(pair)}/{clips}: plain {(t1 - t0) + (t3 - t2):.2f} s, "
             f"ours {t2 - t1:.2f} s")
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
    from icl_audio.codec_encode import torch_threads

    pair = audio[:2]
    _log("codec bench: both paths on one thread (per-core efficiency), 2 clips...")
    with torch_threads(1):  # plain, ours, plain again: as in the rounds above
        t0 = time.perf_counter()
        _plain_encode(model, extractor, pair[0])
        t1 = time.perf_counter()
        codec.encode(pair)
        t2 = time.perf_counter()
        for clip in pair[1:]:
            _plain_encode(model, extractor, clip)
        t3 = time.perf_counter()
        plain_one, ours_one = (t1 - t0) + (t3 - t2), t2 - t1
        gemm_gflops = _fp32_gemm_gflops()

    # What bounds any faithful (fp32) path is its arithmetic: count the multiply-adds of both paths
    # on one clip, and compare with this CPU's fp32 GEMM rate per core, measured just above.
    _log("codec bench: counting the arithmetic of both paths on one clip...")
    plain_gflop, ours_gflop = _gflop_per_clip(model, extractor, codec, audio[0])
    threads = torch.get_num_threads()
    plain_per_clip = plain_seconds / clips
    floor = plain_gflop / (threads * gemm_gflops)  # the plain path's arithmetic at GEMM peak on every core

    result = {
        "clips": clips,
        "seconds": seconds,
        "device": "cpu",
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "workers": codec._parallelism(clips)[0],
        "precision": codec.precision,
        "model_build_seconds": round(build_seconds, 2),
        "baseline_seconds": round(plain_seconds, 3),
        "encode_seconds": round(ours_seconds, 3),
        "baseline_audio_seconds_per_second": round(total_audio / plain_seconds, 3),
        "audio_seconds_per_second": round(total_audio / ours_seconds, 3),
        "speedup": round(plain_seconds / ours_seconds, 3),
        "speedup_each_round": [round(x, 3) for x in round_speedups],
        "code_agreement": round(agreement, 5),
        # Where our path's time goes, summed over worker threads (CPU-seconds).
        **{f"stage_{k}_seconds": round(v, 3) for k, v in codec.stage_seconds.items()},
        "single_thread_baseline_seconds_per_clip": round(plain_one / len(pair), 3),
        "single_thread_seconds_per_clip": round(ours_one / len(pair), 3),
        "single_thread_speedup": round(plain_one / ours_one, 3),
        "gflop_per_clip_baseline": round(plain_gflop, 1),
        "gflop_per_clip": round(ours_gflop, 1),
        "fp32_gemm_gflops_per_core": round(gemm_gflops, 1),
        # The speedup of an ideal fp32 path: the plain path's arithmetic at this CPU's GEMM rate on
        # every core and nothing else. No faithful CPU path can beat it; bf16 is the only way past it.
        "fp32_speedup_ceiling": round(plain_per_clip / floor, 3),
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


def _fp32_gemm_gflops(size: int = 2048, reps: int = 4) -> float:
    """This CPU's fp32 matrix-multiply rate on the current threads (best of ``reps``), in GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def _gflop_per_clip(model, extractor, codec, clip: np.ndarray) -> tuple[float, float]:
    """Floating-point operations (matmuls, convolutions, attention; GFLOP) of the plain path and of
    ours on one clip, counted by torch's FlopCounterMode (both branches on this thread)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as plain:
        _plain_encode(model, extractor, clip)
    with FlopCounterMode(display=False) as ours:
        codec.encode_batch([codec.prepare(clip)])  # the FLOP counter sees this thread only: no branch threads
    return plain.get_total_flops() / 1e9, ours.get_total_flops() / 1e9


def _agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    equal = total = 0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            raise RuntimeError(f"code lengths differ: {x.shape} vs {y.shape}")
        equal += int((x == y).sum())
        total += x.size
    return equal / max(total, 1)
