"""Writing files and folders so that a reader (or a crash) never sees half of one: the one atomic-write
helper, and the one build-once helper for folders icl-audio builds into its cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Callable, Mapping, Sequence

__all__ = ["atomic_write", "build_once", "is_built"]


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


def is_built(folder: str | os.PathLike, marker: str, version: object, required: "Sequence[str]" = ()) -> bool:
    """Whether ``folder`` holds a finished build: its ``marker`` file is a JSON object whose
    ``"version"`` equals ``version``, and every file named in ``required`` exists."""
    import json

    folder = Path(folder)
    try:
        data = json.loads((folder / marker).read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(data, dict) and data.get("version") == version
            and all((folder / name).is_file() for name in required))


def build_once(
    target: str | os.PathLike,
    build: "Callable[[Path], object]",
    *,
    marker: str,
    stamp: "Mapping[str, object]",
    required: "Sequence[str]" = (),
) -> Path:
    """The folder ``target``, built by ``build`` unless a finished build of ``stamp["version"]`` is there.

    The one way icl-audio builds a folder into its cache (the debug models, the tokenizer): ``build(folder)``
    writes into a fresh folder beside ``target`` (``folder`` does not exist yet; ``build`` creates it);
    the ``marker`` file (``stamp`` as JSON) is written last, so a folder with a valid marker is whole;
    then the folder is renamed into place, a stale build of another version moved aside first. A crash
    leaves only a temporary folder (removed), and of two processes building at once, the one that
    renames second finds a finished build in place and keeps it. Raises what ``build`` raises, or
    OSError when the folder cannot be written.
    """
    import json
    import shutil

    target = Path(target)
    version = stamp.get("version")
    if is_built(target, marker, version, required):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=target.parent))
    try:
        folder = tmp / "build"
        build(folder)
        if not folder.is_dir():
            raise OSError(f"the build of {target.name} wrote no folder")
        atomic_write(folder / marker, json.dumps(dict(stamp), sort_keys=True))  # last: marks it whole
        if target.exists() and not is_built(target, marker, version, required):
            try:  # a stale or broken build: out of the way in one rename, then deleted
                os.replace(target, tmp / "stale")
            except OSError:
                pass  # another process moved it first
        try:
            os.rename(folder, target)
        except OSError:
            if not is_built(target, marker, version, required):  # not another process's finished build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
