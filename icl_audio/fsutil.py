"""Writing files so that a reader (or a crash) never sees half of one: the one atomic-write helper."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, data: str | bytes, *, durable: bool = True) -> None:
    """Write ``data`` (str as UTF-8, or bytes) to ``path``: a temporary file in the same folder, then
    ``os.replace``, so readers see the old content or the new, never a torn file.

    ``durable``: fsync before the rename, so the new content survives a power cut too. Caches whose
    entries carry their own checksum pass False (a torn entry is detected and rebuilt).
    The parent folder is created; the temporary file is removed on any failure, Ctrl-C included.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
