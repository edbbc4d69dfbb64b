"""Content-addressed, process-safe cache of codec codes: audio samples + codec fingerprint -> codes."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from icl_audio import paths
from icl_audio.fsutil import atomic_write

if TYPE_CHECKING:
    from icl_audio.codec import Codec

# Entry file: a 16-byte header, then the codes.
#   magic "ICC1" | dtype code (1 byte: 2 = uint16, 4 = uint32) | 3 zero bytes
#   | count (uint32 LE) | crc32 of the payload (uint32 LE)
# The header and checksum let a reader tell a complete entry from a truncated or damaged one,
# which it then treats as a miss (and overwrites) instead of failing.
_MAGIC = b"ICC1"
_HEADER = struct.Struct("<4sB3xII")
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
_SUFFIX = ".codes"


@dataclass(frozen=True)
class CachedCodes:
    """Codes for each clip, in input order, with how many were encoded now and how many were reused."""

    codes: list[np.ndarray]
    encoded: int
    reused: int


class CodeCache:
    """Codes on disk, one small file per (audio content, codec fingerprint).

    The key is a SHA-256 of the codec fingerprint and the float32 samples actually encoded (after
    resampling and the codec's long-clip crop), so renamed or copied files hit, and any change of
    model, revision, preprocessing or precision misses. Entries are written to a temporary file in
    the same folder and renamed into place, so concurrent processes never see half an entry; a
    damaged entry is re-encoded. No pickle anywhere.
    """

    def __init__(self, root: Path | None = None) -> None:
        """``root``: the cache folder (default ``paths.code_cache_dir()``); created on first write."""
        self.root = Path(root) if root is not None else paths.code_cache_dir()

    # -- keys and single entries -------------------------------------------------------------------

    def key(self, codec: "Codec", clip: np.ndarray) -> str:
        """The cache key of ``clip`` (float samples, any length) for ``codec``."""
        samples = codec.prepare(clip)
        return _key(codec.fingerprint, samples)

    def _path(self, codec: "Codec", key: str) -> Path:
        return self.root / codec.fingerprint[:16] / key[:2] / (key + _SUFFIX)

    def get(self, codec: "Codec", clip: np.ndarray) -> np.ndarray | None:
        """The cached codes of ``clip`` for ``codec`` (int64), or None when absent or damaged."""
        return _read(self._path(codec, self.key(codec, clip)))

    def put(self, codec: "Codec", clip: np.ndarray, codes: np.ndarray) -> None:
        """Store ``codes`` (1-D non-negative ints below 2**32) as the codes of ``clip`` for ``codec``."""
        _write(self._path(codec, self.key(codec, clip)), codes)

    # -- batch -------------------------------------------------------------------------------------

    def encode(
        self, codec: "Codec", clips: Sequence[np.ndarray], *, progress: Callable[[int], None] | None = None
    ) -> CachedCodes:
        """Codes of ``clips`` (float32 16 kHz mono arrays) from the cache, encoding only the misses.

        ``encoded`` counts the clips not found in the cache (identical clips within the call are
        encoded once), ``reused`` those found. ``progress(n)`` is called with the number of clips just
        finished (an increment): once for all hits, then as the codec finishes batches. A cache folder
        that cannot be written only costs speed (codes are still returned, with a warning).
        """
        import warnings

        keys = []
        for clip in clips:
            keys.append(_key(codec.fingerprint, codec.prepare(clip)))
        out: list[np.ndarray | None] = [None] * len(clips)
        misses: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in misses:
                misses[key].append(i)
                continue
            codes = _read(self._path(codec, key))
            if codes is None:
                misses[key] = [i]
            else:
                out[i] = codes
        reused = sum(c is not None for c in out)
        if progress is not None and reused:
            progress(reused)
        if misses:
            order = list(misses)
            fresh = codec.encode([clips[misses[k][0]] for k in order], progress=progress)
            failure = None
            for key, codes in zip(order, fresh):
                for i in misses[key]:
                    out[i] = codes
                try:
                    _write(self._path(codec, key), codes)
                except OSError as exc:
                    failure = exc
            duplicates = sum(len(v) - 1 for v in misses.values())
            if progress is not None and duplicates:
                progress(duplicates)
            if failure is not None:
                warnings.warn(f"code cache {str(self.root)!r} is not writable ({failure}); codes were not cached")
        return CachedCodes(codes=out, encoded=len(clips) - reused, reused=reused)  # type: ignore[arg-type]


def _key(fingerprint: str, samples: np.ndarray) -> str:
    samples = np.ascontiguousarray(samples, dtype="<f4")
    digest = hashlib.sha256()
    digest.update(fingerprint.encode() + b"\0")
    digest.update(struct.pack("<Q", samples.shape[0]))
    digest.update(memoryview(samples).cast("B"))
    return digest.hexdigest()


def _read(path: Path) -> np.ndarray | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if len(data) < _HEADER.size:
        return None
    magic, code, count, crc = _HEADER.unpack_from(data)
    dtype = _DTYPES.get(code)
    if magic != _MAGIC or dtype is None:
        return None
    payload = memoryview(data)[_HEADER.size :]
    if len(payload) != count * dtype.itemsize or zlib.crc32(payload) != crc:
        return None
    return np.frombuffer(payload, dtype=dtype).astype(np.int64)


def _write(path: Path, codes: np.ndarray) -> None:
    codes = np.asarray(codes).reshape(-1)
    if codes.size and (codes.min() < 0 or codes.max() >= 2**32):
        raise ValueError("codes must be in [0, 2**32)")
    code = 2 if codes.size == 0 or codes.max() < 2**16 else 4
    payload = np.ascontiguousarray(codes, dtype=_DTYPES[code]).tobytes()
    header = _HEADER.pack(_MAGIC, code, codes.size, zlib.crc32(payload))
    # No fsync: a torn write after a crash fails the checksum and is simply encoded again.
    atomic_write(path, header + payload, durable=False)
