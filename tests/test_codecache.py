"""The code cache: hits and misses, damaged entries, concurrent writers, unwritable folders."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from icl_audio.codecache import CodeCache

SR = 16_000


def _clips() -> list[np.ndarray]:
    t = np.arange(SR // 2) / SR
    rng = np.random.default_rng(0)
    return [
        (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32),
        (0.3 * np.sin(2 * np.pi * 1800 * t)).astype(np.float32),
        (0.1 * rng.standard_normal(SR // 3)).astype(np.float32),
    ]


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.codes") if not p.name.startswith("."))


def test_miss_then_hit(debug_codec, tmp_path):
    cache = CodeCache(tmp_path)
    clips = _clips()
    seen = []
    first = cache.encode(debug_codec, clips, progress=seen.append)
    assert (first.encoded, first.reused) == (3, 0) and sum(seen) == 3
    assert len(_entries(tmp_path)) == 3
    seen.clear()
    second = cache.encode(debug_codec, clips + [clips[0].copy()], progress=seen.append)
    assert (second.encoded, second.reused) == (0, 4) and sum(seen) == 4
    for a, b in zip(first.codes + [first.codes[0]], second.codes):
        assert b.dtype == np.int64
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.codes[1], debug_codec.encode([clips[1]])[0])


def test_duplicates_in_one_call_encode_once(debug_codec, tmp_path):
    clip = _clips()[0]
    result = CodeCache(tmp_path).encode(debug_codec, [clip, clip.copy(), clip])
    assert (result.encoded, result.reused) == (3, 0)
    assert len(_entries(tmp_path)) == 1
    np.testing.assert_array_equal(result.codes[0], result.codes[2])


def test_key_depends_on_content_and_codec(debug_codec, tmp_path):
    from icl_audio.codec import Codec

    cache = CodeCache(tmp_path)
    a, b = _clips()[:2]
    assert cache.key(debug_codec, a) == cache.key(debug_codec, a.copy())
    assert cache.key(debug_codec, a) != cache.key(debug_codec, b)
    other = Codec(debug_codec.model, model_id="debug", revision="another", device=debug_codec.device)
    assert cache.key(other, a) != cache.key(debug_codec, a)


def test_codes_of_older_preprocessing_are_never_reused(debug_codec, tmp_path, monkeypatch):
    from icl_audio import features
    from icl_audio.codec import Codec

    # Version 1 padded clips to a multiple of 320 (+ a hop) and gave n // 320 + 1 codes.
    assert features.PREPROCESSING_VERSION != "xcodec2-fbank-1"
    cache = CodeCache(tmp_path)
    clips = _clips()
    with monkeypatch.context() as patch:
        patch.setattr(features, "PREPROCESSING_VERSION", "xcodec2-fbank-1")
        old = Codec(debug_codec.model, model_id="debug", revision=debug_codec.revision, device=debug_codec.device)
    assert old.fingerprint != debug_codec.fingerprint
    for clip in clips:  # entries as an older version would have left them (one code more each)
        cache.put(old, clip, np.zeros(clip.size // 320 + 1, dtype=np.int64))
    fresh = cache.encode(debug_codec, clips)
    assert (fresh.encoded, fresh.reused) == (3, 0)
    for clip, codes in zip(clips, fresh.codes):
        assert codes.size == clip.size // 320
        np.testing.assert_array_equal(codes, debug_codec.encode([clip])[0])


def test_damaged_entries_are_encoded_again(debug_codec, tmp_path):
    cache = CodeCache(tmp_path)
    clips = _clips()
    good = cache.encode(debug_codec, clips).codes
    paths = {p.stem: p for p in _entries(tmp_path)}
    truncated = paths[cache.key(debug_codec, clips[0])]
    truncated.write_bytes(truncated.read_bytes()[:-3])
    flipped = paths[cache.key(debug_codec, clips[1])]
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF
    flipped.write_bytes(bytes(data))
    garbage = paths[cache.key(debug_codec, clips[2])]
    garbage.write_bytes(b"not a cache entry")
    assert cache.get(debug_codec, clips[0]) is None
    again = cache.encode(debug_codec, clips)
    assert (again.encoded, again.reused) == (3, 0)
    for a, b in zip(good, again.codes):
        np.testing.assert_array_equal(a, b)
    assert cache.encode(debug_codec, clips).reused == 3  # repaired on disk


def test_put_and_get_roundtrip_wide_codes(debug_codec, tmp_path):
    cache = CodeCache(tmp_path)
    clip = _clips()[0]
    for codes in (np.array([0, 65535, 7]), np.array([70000, 1]), np.array([], dtype=np.int64)):
        cache.put(debug_codec, clip, codes)
        np.testing.assert_array_equal(cache.get(debug_codec, clip), codes)


def test_unwritable_cache_still_returns_codes(debug_codec, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="not writable"):
        result = CodeCache(blocker).encode(debug_codec, _clips()[:1])
    assert result.encoded == 1 and result.codes[0].size == SR // 2 // 320


def _worker(root: str, out: str) -> None:
    # A separate process: loads the (already built) debug codec and fills the shared cache.
    import numpy as np

    from icl_audio.codec import load_codec
    from icl_audio.codecache import CodeCache

    codec = load_codec("debug", device="cpu")
    result = CodeCache(Path(root)).encode(codec, _clips())
    np.savez(out, *result.codes)


def test_two_processes_share_the_cache(debug_codec, tmp_path):
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked OpenMP state
    root = tmp_path / "cache"
    outs = [tmp_path / f"out{i}.npz" for i in range(2)]
    procs = [ctx.Process(target=_worker, args=(str(root), str(o))) for o in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    results = [np.load(o, allow_pickle=False) for o in outs]
    for key in results[0].files:
        np.testing.assert_array_equal(results[0][key], results[1][key])
    cache = CodeCache(root)
    assert len(_entries(root)) == 3
    assert not [p for p in root.rglob("*.tmp")]
    hit = cache.encode(debug_codec, _clips())
    assert hit.reused == 3
    np.testing.assert_array_equal(hit.codes[0], results[0]["arr_0"])
