"""The one streaming path from inputs to codes: bounded chunks, lazy reading, order, skipped files, the cache."""

from __future__ import annotations

import itertools
import weakref

import numpy as np
import pytest

from conftest import SR, tone, write_wav
from icl_audio.audio import Clip, load_audio
from icl_audio.codecache import CodeCache
from icl_audio.encoding import EncodeTally, stream_codes
from icl_audio.errors import AudioError


class FakeCodec:
    """Satisfies what stream_codes needs of a codec: codes are the clip's length and first sample,
    so a test can tell which clip produced which codes without a model."""

    fingerprint = "fake-codec-v1"

    def __init__(self):
        self.calls: list[int] = []

    def prepare(self, clip):
        return np.ascontiguousarray(clip, dtype=np.float32)

    def encode(self, clips, progress=None):
        self.calls.append(len(clips))
        out = [np.array([len(c), int(round(float(c[0]) * 1000))], dtype=np.int64) for c in clips]
        if progress is not None:
            progress(len(clips))
        return out


class CountingLoader:
    """A decoder that records how many decoded clips are alive at once (weak references)."""

    def __init__(self):
        self.alive: set[int] = set()
        self.max_alive = 0
        self.loaded = 0

    def __call__(self, source, *, max_seconds=None):
        if source == "bad":
            raise AudioError("bad: cannot read audio")
        n, value = source
        samples = np.full(n, value, dtype=np.float32)
        key = self.loaded
        self.loaded += 1
        self.alive.add(key)
        self.max_alive = max(self.max_alive, len(self.alive))
        weakref.finalize(samples, self.alive.discard, key)
        return Clip(samples, f"clip{key}")


def test_a_long_job_holds_one_chunk_of_decoded_clips_at_a_time():
    loader, codec = CountingLoader(), FakeCodec()
    inputs = [(100, i / 1000) for i in range(1000)]
    seen = []
    for item in stream_codes(inputs, codec, load=loader, chunk_clips=16, chunk_seconds=1e9):
        seen.append(item)
        assert len(loader.alive) <= 16  # while the caller works, at most one chunk is decoded
    assert loader.max_alive <= 16
    assert codec.calls == [16] * 62 + [8]
    assert [e.index for e in seen] == list(range(1000))
    assert [int(e.codes[1]) for e in seen] == list(range(1000))


def test_the_chunk_is_also_bounded_by_decoded_seconds():
    loader, codec = CountingLoader(), FakeCodec()
    inputs = [(SR, 0.0)] * 20  # 1 s each
    list(stream_codes(inputs, codec, load=loader, chunk_clips=64, chunk_seconds=5.0))
    assert loader.max_alive <= 5 and codec.calls == [5, 5, 5, 5]


def test_inputs_are_read_lazily():
    loader, codec = CountingLoader(), FakeCodec()
    produced = itertools.count()
    inputs = ((10, next(produced) / 1000) for _ in range(10_000))
    stream = stream_codes(inputs, codec, load=loader, chunk_clips=8, chunk_seconds=1e9)
    first = [next(stream) for _ in range(10)]  # the first chunk and two of the second
    assert [e.index for e in first] == list(range(10))
    # Two chunks decoded, plus the one input read to find the first chunk's end: never the whole list.
    assert loader.loaded == 16 and next(produced) == 17


def test_bad_inputs_are_reported_in_place_and_counted():
    loader, codec = CountingLoader(), FakeCodec()
    tally = EncodeTally()
    done = []
    out = list(stream_codes([(10, 0.001), "bad", (10, 0.002), "bad"], codec, load=loader, tally=tally,
                            chunk_clips=1, progress=done.append))
    assert [e.ok for e in out] == [True, False, True, False]
    assert [e.index for e in out] == [0, 1, 2, 3]
    assert out[1].codes is None and out[1].error == "bad: cannot read audio"
    assert tally.skipped == [("bad", "bad: cannot read audio")] * 2 and tally.encoded == 2
    assert sum(done) == 4
    with pytest.raises(AudioError, match="cannot read"):
        list(stream_codes([(10, 0.0), "bad"], codec, load=loader, on_error="raise"))


def test_only_bad_inputs_still_end():
    out = list(stream_codes(["bad"] * 50, FakeCodec(), load=CountingLoader(), chunk_clips=4))
    assert len(out) == 50 and not any(e.ok for e in out)


def test_real_files_through_the_cache(debug_codec, tmp_path):
    paths = [write_wav(tmp_path / f"{i}.wav", tone(200 + 100 * i, 0.3)) for i in range(5)]
    (tmp_path / "broken.wav").write_text("not audio")
    inputs = [str(p) for p in paths[:2]] + [str(tmp_path / "broken.wav")] + [str(p) for p in paths[2:]]
    cache = CodeCache(tmp_path / "cache")
    first, again = EncodeTally(), EncodeTally()
    a = list(stream_codes(inputs, debug_codec, cache=cache, tally=first, chunk_clips=2))
    b = list(stream_codes(inputs, debug_codec, cache=cache, tally=again, chunk_clips=3))
    assert (first.encoded, first.reused, len(first.skipped)) == (5, 0, 1)
    assert (again.encoded, again.reused, len(again.skipped)) == (0, 5, 1)
    assert a[2].error and "broken.wav" in a[2].source
    # Each clip's codes are those of encoding it alone, whatever the chunking.
    for item, path in zip([x for x in a if x.ok], paths):
        alone = debug_codec.encode([load_audio(str(path)).samples])[0]
        np.testing.assert_array_equal(item.codes, alone)
    for x, y in zip(a, b):
        assert x.source == y.source and (x.codes is None) == (y.codes is None)
        if x.ok:
            np.testing.assert_array_equal(x.codes, y.codes)
