"""The one streaming path from audio inputs to codec codes: decode a bounded chunk, skip bad files, encode through the cache.

Every job that turns many inputs into codes (``classify``, support-set builds, benchmark queries)
goes through :func:`stream_codes`. Inputs are consumed lazily, ``CHUNK_CLIPS`` at a time and at
most ``CHUNK_SECONDS`` of decoded audio per chunk, so a job over 10,000 files holds one chunk of
decoded audio in memory, never the whole list (as lhotse's lazy manifests do):

    inputs (any iterable, read lazily)
      │  take up to CHUNK_CLIPS inputs / CHUNK_SECONDS of decoded audio
      ▼
    load_audio each ──► unreadable? yield Encoded(codes=None, error=...)   (or raise, on_error="raise")
      │
      ▼
    CodeCache.encode(codec, chunk) ──► yield Encoded(codes=...) for each, in input order
      │  the chunk's decoded audio is dropped here, before the next chunk is read; memory kept
      │  by the caller's stage is handed back before the codec runs (icl_audio.memory)
      ▼
    next chunk

Usage::

    from icl_audio.encoding import EncodeTally, stream_codes

    tally = EncodeTally()
    for item in stream_codes(paths, codec, cache=CodeCache(), tally=tally, progress=bar):
        if item.codes is None:
            print(f"skipped {item.source}: {item.error}")
        else:
            keep(item.index, item.codes)
    print(tally.encoded, tally.reused, len(tally.skipped))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from icl_audio.audio import DEFAULT_MAX_SECONDS, AudioInput, Clip, describe, load_audio
from icl_audio.constants import SAMPLE_RATE
from icl_audio.errors import AudioError
from icl_audio.memory import release_freed_memory

if TYPE_CHECKING:
    from icl_audio.codec import Codec
    from icl_audio.codecache import CodeCache

# A chunk is at most this many clips and this much decoded audio (whichever comes first; always
# at least one clip). 160 s is 10 MB of float32 samples and four of the codec's 40 s batches (which
# it splits further to keep every worker busy): enough to fill its length buckets, small enough
# that 6 thirty-second files and 10,000 of them are encoded in chunks of the same shape.
CHUNK_CLIPS = 64
CHUNK_SECONDS = 160.0

Progress = Callable[[int], None]


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity (codes is an array)
class Encoded:
    """The outcome for one input: its position in the input sequence, its name, and its codes
    (1-D int64) or, when it could not be read, ``codes=None`` and a one-line ``error``."""

    index: int
    source: str
    codes: np.ndarray | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.codes is not None


@dataclass
class EncodeTally:
    """Running counts of a stream (mutable on purpose: filled in as the stream is consumed).

    ``encoded``: clips run through the codec; ``reused``: clips whose codes came from the cache;
    ``skipped``: ``(source, error)`` of each input that could not be read.
    """

    encoded: int = 0
    reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def stream_codes(
    inputs: Iterable[AudioInput],
    codec: "Codec",
    *,
    cache: "CodeCache | None" = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    on_error: str = "skip",
    progress: Progress | None = None,
    tally: EncodeTally | None = None,
    chunk_clips: int = CHUNK_CLIPS,
    chunk_seconds: float = CHUNK_SECONDS,
    load: Callable[..., Clip] = load_audio,
) -> Iterator[Encoded]:
    """Yield an :class:`Encoded` for every input, in input order, a bounded chunk at a time.

    ``inputs``: any iterable of what :func:`icl_audio.audio.load_audio` accepts (paths, bytes,
    arrays, ``(array, rate)`` pairs, dicts, :class:`Clip`); it is read lazily, one chunk ahead at
    most. ``codec``: a loaded :class:`~icl_audio.codec.Codec`. ``cache``: a
    :class:`~icl_audio.codecache.CodeCache` (``None``: encode everything, cache nothing).
    ``max_seconds``: the read-time crop of :func:`load_audio`. ``on_error``: ``"skip"`` yields an
    ``Encoded`` with ``codes=None`` and the one-line error for an input that cannot be read (and
    records it in ``tally.skipped``); ``"raise"`` raises its :class:`AudioError`.
    ``progress(n)``: called with the number of inputs just finished (read errors included).
    ``tally``: an :class:`EncodeTally` to fill in. ``load``: the decoder (tests pass a counting one).
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if chunk_clips < 1 or chunk_seconds <= 0:
        raise ValueError("chunk_clips must be >= 1 and chunk_seconds > 0")
    tally = tally if tally is not None else EncodeTally()
    budget = int(chunk_seconds * SAMPLE_RATE)
    pending = iter(enumerate(inputs))
    carry: list[tuple[int, AudioInput]] = []  # an input read past the end of the last chunk
    exhausted = False
    while not exhausted:
        # -- decode one chunk ---------------------------------------------------------------------
        failed: list[Encoded] = []
        clips: list[tuple[int, Clip]] = []
        samples = 0
        for index, source in _chain(carry, pending):
            if clips and (len(clips) >= chunk_clips or samples >= budget):
                carry = [(index, source)]
                break
            try:
                clip = load(source, max_seconds=max_seconds)
            except AudioError as exc:
                if on_error == "raise":
                    raise
                failed.append(Encoded(index, describe(source), None, str(exc)))
                tally.skipped.append((describe(source), str(exc)))
                if progress is not None:
                    progress(1)
            else:
                clips.append((index, clip))
                samples += int(clip.samples.shape[0])
            if len(failed) >= chunk_clips:
                carry = []
                break  # a long run of bad files: report them rather than read on
        else:
            exhausted = True
        # -- encode it through the cache ----------------------------------------------------------
        done: list[Encoded] = failed
        if clips:
            # The codec and the caller's stage (the scorer) take turns here: hand back what the
            # caller's stage kept, so the codec does not run on top of it. The codec's own memory
            # stays with its worker threads, which reuse it chunk after chunk (releasing it too made
            # the peak vary by ~50 MB from chunk to chunk as the workers faulted it in again).
            release_freed_memory()
            arrays = [clip.samples for _, clip in clips]
            if cache is not None:
                result = cache.encode(codec, arrays, progress=progress)
                codes = result.codes
                tally.encoded += result.encoded
                tally.reused += result.reused
            else:
                codes = codec.encode(arrays, progress=progress)
                tally.encoded += len(arrays)
            done += [Encoded(index, clip.source, np.asarray(c)) for (index, clip), c in zip(clips, codes)]
            # Drop the decoded audio before the caller (and the next chunk) runs: only codes leave.
            del arrays, clips, codes, clip
            result = None
        done.sort(key=lambda e: e.index)
        yield from done


def _chain(head: list, rest: Iterator) -> Iterator:
    yield from list(head)
    yield from rest
