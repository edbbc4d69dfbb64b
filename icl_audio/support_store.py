"""Storing support sets: support_dir()/NAME/current names the live data-* folder, swapped atomically.

    NAME/
      current            -> "data-<time>-<id>"   (replaced with os.replace: readers never see half a set)
      data-.../manifest.json  codes.npy (flat uint16)  offsets.npy  embeddings.npy  index.faiss  items.jsonl
      .lock              (filelock: one writer at a time)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from icl_audio import paths
from icl_audio.errors import CacheError, SupportSetError
from icl_audio.fsutil import atomic_write
from icl_audio.support_set import DamagedSetError, NoSuchSetError, SupportSet

FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def validate_name(name: str) -> str:
    """Check a support-set name (letters, digits, '.', '_', '-'; no path separators)."""
    if not NAME_PATTERN.match(name or ""):
        raise SupportSetError(
            f"invalid support set name {name!r}: use letters, digits, '.', '_' and '-' (at most 100), "
            "not starting with '.' or '-'"
        )
    return name


def set_dir(name: str) -> Path:
    """The folder of the named set (which may not exist)."""
    return paths.support_dir() / validate_name(name)


def lock_for(name: str):
    """An inter-process lock serialising writers of the named set."""
    from filelock import FileLock

    folder = set_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / ".lock"))


def exists(name: str) -> bool:
    """Whether a finished set of this name is stored."""
    try:
        return (set_dir(name) / "current").is_file()
    except SupportSetError:
        return False


def save_support_set(name: str, sset: SupportSet, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Store ``sset`` under ``name`` atomically; returns the manifest written.

    The new data goes to a fresh folder; only when every file is written and flushed does the
    ``current`` pointer move to it (``os.replace``), so a reader sees the old set or the new one,
    never a mix. Callers hold :func:`lock_for` while deciding and saving.
    """
    folder = set_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    data_name = f"data-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    tmp = folder / f".tmp-{data_name}"
    tmp.mkdir()
    try:
        lengths = np.array([len(c) for c in sset.codes], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(sset.codes) if sset.codes else np.zeros(0)
        if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(np.uint16).max):
            raise SupportSetError("codes out of the uint16 range: unexpected codec codebook")
        flat = flat.astype(np.uint16)
        embeddings = np.ascontiguousarray(sset.embeddings, dtype=np.float32)
        _save_npy(tmp / "codes.npy", flat)
        _save_npy(tmp / "offsets.npy", offsets)
        _save_npy(tmp / "embeddings.npy", embeddings)
        sset.index.write(tmp / "index.faiss")
        items_text = "".join(
            json.dumps({"source": s, "labels": list(lab)}, ensure_ascii=False) + "\n"
            for s, lab in zip(sset.sources, sset.labels)
        )
        (tmp / "items.jsonl").write_text(items_text, encoding="utf-8")
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "clips": len(sset),
            "labels": list(sset.classes),
            "label_counts": sset.label_counts(),
            "multi_label": sset.multi_label,
            "embedding_dim": int(embeddings.shape[1]) if embeddings.ndim == 2 else 0,
            "content_hash": _content_hash(flat, offsets, items_text),
            **{k: v for k, v in sset.meta.items() if k not in {"name", "created"}},
            **(extra or {}),
        }
        _write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
        _fsync_dir(tmp)
        os.rename(tmp, folder / data_name)
        _write_text(folder / "current", data_name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _collect_garbage(folder, keep={data_name})
    return manifest


def read_manifest(name: str) -> dict[str, Any]:
    """The validated manifest of a stored set; :class:`SupportSetError` if there is none."""
    folder = set_dir(name)
    data = _current_data(name, folder)
    return _load_manifest(name, data)


def load_support_set(name: str) -> SupportSet:
    """Load a stored set, checking every file against the manifest before use."""
    folder = set_dir(name)
    for attempt in range(3):
        data = _current_data(name, folder)
        try:
            return _load_data(name, data)
        except FileNotFoundError:
            # A writer replaced the set between reading `current` and the files: read again.
            if attempt == 2 or (folder / "current").read_text().strip() == data.name:
                raise DamagedSetError(name, f"{data.name} is missing files") from None
    raise AssertionError("unreachable")


def list_support_sets() -> list[dict[str, Any]]:
    """Manifests of every stored set (damaged ones listed with an ``error`` key)."""
    root = paths.support_dir()
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "current").is_file()):
        try:
            out.append(read_manifest(folder.name))
        except (SupportSetError, CacheError) as exc:
            out.append({"name": folder.name, "error": str(exc)})
    return out


def remove_support_set(name: str) -> None:
    """Delete a stored set (waiting for any writer of it to finish)."""
    folder = set_dir(name)
    if not folder.is_dir():
        raise NoSuchSetError(name)
    with lock_for(name):
        trash = folder.with_name(f".rm-{name}-{uuid.uuid4().hex[:8]}")
        os.rename(folder, trash)  # atomic: readers see the set or nothing
    shutil.rmtree(trash, ignore_errors=True)


def _current_data(name: str, folder: Path) -> Path:
    pointer = folder / "current"
    for attempt in range(3):
        if not pointer.is_file():
            raise NoSuchSetError(name)
        data_name = pointer.read_text(encoding="utf-8", errors="replace").strip()
        data = folder / data_name
        if data_name.startswith("data-") and "/" not in data_name and data.is_dir():
            return data
        # A writer may have moved `current` on and removed the folder it named since we read it.
        if attempt == 2 or pointer.read_text(encoding="utf-8", errors="replace").strip() == data_name:
            break
    raise DamagedSetError(name, "its 'current' pointer names no data folder")


def _load_manifest(name: str, data: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DamagedSetError(name, "manifest.json is missing") from None
    except (ValueError, UnicodeDecodeError):
        raise DamagedSetError(name, "manifest.json is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise DamagedSetError(name, "manifest.json is not an object")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DamagedSetError(name, f"unknown format version {manifest.get('format_version')!r}")
    required = {"clips": int, "labels": list, "label_counts": dict, "codec": dict, "model": dict, "content_hash": str}
    for key, kind in required.items():
        if not isinstance(manifest.get(key), kind):
            raise DamagedSetError(name, f"manifest.json has no valid {key!r}")
    return manifest


def _load_data(name: str, data: Path) -> SupportSet:
    from icl_audio.retrieval import Index

    manifest = _load_manifest(name, data)
    try:
        flat = np.load(data / "codes.npy", allow_pickle=False)
        offsets = np.load(data / "offsets.npy", allow_pickle=False)
        embeddings = np.load(data / "embeddings.npy", allow_pickle=False)
        items_text = (data / "items.jsonl").read_text(encoding="utf-8")
        items = [json.loads(line) for line in items_text.splitlines() if line.strip()]
    except FileNotFoundError:
        raise
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DamagedSetError(name, f"unreadable data ({type(exc).__name__}: {exc})") from None
    n = manifest["clips"]
    if (
        offsets.ndim != 1
        or len(offsets) != n + 1
        or len(items) != n
        or embeddings.shape[:1] != (n,)
        or int(offsets[-1]) != len(flat)
        or np.any(np.diff(offsets) <= 0)
    ):
        raise DamagedSetError(name, "its files disagree with the manifest (truncated or mixed)")
    if _content_hash(flat, offsets, items_text) != manifest["content_hash"]:
        raise DamagedSetError(name, "content hash mismatch")
    try:
        index = Index.read(data / "index.faiss", embeddings)
    except FileNotFoundError:
        index = Index(embeddings)  # the index is derived data: rebuild it rather than fail
    except (RuntimeError, ValueError):
        index = Index(embeddings)
    codes = tuple(flat[offsets[i] : offsets[i + 1]].astype(np.int64) for i in range(n))
    sset = SupportSet(
        sources=tuple(str(it["source"]) for it in items),
        labels=tuple(tuple(str(x) for x in it["labels"]) for it in items),
        codes=codes,
        embeddings=embeddings,
        multi_label=bool(manifest.get("multi_label", False)),
        meta=manifest,
    )
    sset._index.append(index)
    return sset


def _content_hash(flat: np.ndarray, offsets: np.ndarray, items_text: str) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(flat, dtype=np.uint16).tobytes())
    h.update(np.ascontiguousarray(offsets, dtype=np.int64).tobytes())
    h.update(items_text.encode("utf-8"))
    return h.hexdigest()


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _write_text(path: Path, text: str) -> None:
    """Write a small file atomically and durably (the pointer and manifest of a set)."""
    atomic_write(path, text)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _collect_garbage(folder: Path, keep: set[str]) -> None:
    # Keep the live data and the one before it (a reader may still be loading that one);
    # drop older data folders and temp folders left by killed builds.
    datas = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.startswith("data-")), key=lambda p: p.stat().st_mtime)
    previous = [p for p in datas if p.name not in keep][-1:]
    for p in datas:
        if p.name not in keep and p not in previous:
            shutil.rmtree(p, ignore_errors=True)
    for p in folder.iterdir():
        if p.name.startswith(".tmp-data-") and time.time() - p.stat().st_mtime > 3600:
            shutil.rmtree(p, ignore_errors=True)

