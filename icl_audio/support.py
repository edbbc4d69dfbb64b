"""Support sets: labelled clips as codes + embeddings + index, built once, stored atomically, found by name."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from icl_audio import paths
from icl_audio.constants import DEFAULT_CODEC, DEFAULT_LLM
from icl_audio.errors import AudioError, CacheError, SupportSetError

if TYPE_CHECKING:
    from icl_audio.codec import Codec
    from icl_audio.codecache import CodeCache
    from icl_audio.llm import LanguageModel
    from icl_audio.recipes import Item
    from icl_audio.retrieval import Index

FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
ENCODE_CHUNK = 32  # clips decoded and encoded together: bounds memory on huge datasets


@dataclass(frozen=True)
class SupportSet:
    """Labelled support clips, ready for retrieval and prompting.

    ``labels[i]`` holds one label (single-label) or several (multi-label) for clip ``i``;
    ``codes[i]`` its codec codes; ``embeddings[i]`` its retrieval embedding.
    ``meta`` records what built it (codec and model ids/revisions, dataset, ...).
    """

    sources: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    codes: tuple[np.ndarray, ...]
    embeddings: np.ndarray
    multi_label: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)
    _index: list = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def classes(self) -> tuple[str, ...]:
        """Every label that occurs, sorted (the candidate labels by default)."""
        return tuple(sorted({label for labels in self.labels for label in labels}))

    def label_text(self, i: int) -> str:
        """What the prompt shows as clip ``i``'s answer (multi-label: labels joined by ', ')."""
        return ", ".join(self.labels[i])

    def label_counts(self) -> dict[str, int]:
        """Clips per label, most frequent first."""
        return dict(Counter(label for labels in self.labels for label in labels).most_common())

    @property
    def index(self) -> "Index":
        """The FAISS index over ``embeddings`` (built on first use, then kept)."""
        if not self._index:
            from icl_audio.retrieval import Index

            self._index.append(Index(self.embeddings))
        return self._index[0]

    def subset(self, keep: Sequence[int]) -> "SupportSet":
        """A new set holding only the clips at positions ``keep`` (in that order)."""
        keep = list(keep)
        return SupportSet(
            sources=tuple(self.sources[i] for i in keep),
            labels=tuple(self.labels[i] for i in keep),
            codes=tuple(self.codes[i] for i in keep),
            embeddings=self.embeddings[keep] if keep else self.embeddings[:0],
            multi_label=self.multi_label,
            meta=dict(self.meta),
        )


@dataclass(frozen=True)
class BuildReport:
    """What a build did: clips encoded now, clips whose codes came from the cache, files skipped."""

    encoded: int
    reused: int
    skipped: tuple[tuple[str, str], ...] = ()


# ----------------------------------------------------------------------------------------------
# Building


def build_support_set(
    items: Sequence["Item"],
    codec: "Codec",
    lm: "LanguageModel",
    *,
    cache: "CodeCache | None" = None,
    multi_label: bool | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    max_seconds: float | None = None,
) -> tuple[SupportSet, BuildReport]:
    """Encode ``items`` (recipe items: path + labels) into a :class:`SupportSet`.

    Audio is decoded and encoded ``ENCODE_CHUNK`` clips at a time through the code cache, so an
    interrupted build loses at most one chunk and a re-run encodes only what is missing. A file
    that cannot be read is skipped and reported in :attr:`BuildReport.skipped`; the rest go on.
    ``progress(n)`` is called as clips finish (encoded, reused or skipped).
    """
    from icl_audio.audio import DEFAULT_MAX_SECONDS, load_audio
    from icl_audio.codecache import CodeCache
    from icl_audio.retrieval import clip_embeddings

    if not items:
        raise SupportSetError("no support clips to build from")
    cache = cache if cache is not None else CodeCache()
    max_seconds = DEFAULT_MAX_SECONDS if max_seconds is None else max_seconds
    kept: list["Item"] = []
    codes: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    encoded = reused = 0
    for chunk in _chunks(items, ENCODE_CHUNK):
        clips, chunk_items = [], []
        for item in chunk:
            try:
                clips.append(load_audio(item.path, max_seconds=max_seconds).samples)
                chunk_items.append(item)
            except AudioError as exc:
                skipped.append((str(item.path), str(exc)))
                if progress:
                    progress(1)
        if clips:
            result = cache.encode(codec, clips, progress=progress)
            codes.extend(result.codes)
            kept.extend(chunk_items)
            encoded += result.encoded
            reused += result.reused
    if not kept:
        raise SupportSetError(f"none of the {len(items)} support clips could be read (first: {skipped[0][1]})")
    labels = tuple(tuple(item.labels) for item in kept)
    if multi_label is None:
        multi_label = any(len(x) > 1 for x in labels)
    sset = SupportSet(
        sources=tuple(str(item.path) for item in kept),
        labels=labels,
        codes=tuple(np.asarray(c) for c in codes),
        embeddings=clip_embeddings(lm, codes),
        multi_label=multi_label,
        meta={**model_meta(codec, lm), **(meta or {})},
    )
    return sset, BuildReport(encoded, reused, tuple(skipped))


def model_meta(codec: "Codec", lm: "LanguageModel") -> dict[str, Any]:
    """The ids and revisions that make codes and embeddings what they are."""
    return {
        "codec": {"id": codec.model_id, "revision": codec.revision, "fingerprint": codec.fingerprint},
        "model": {"id": lm.model_id, "revision": lm.revision},
    }


def _chunks(seq: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


# ----------------------------------------------------------------------------------------------
# Storage: support_dir()/NAME/current names the live data-* folder, swapped atomically.
#
#   NAME/
#     current            -> "data-<time>-<id>"   (replaced with os.replace: readers never see half a set)
#     data-.../manifest.json  codes.npy (flat uint16)  offsets.npy  embeddings.npy  index.faiss  items.jsonl
#     .lock              (filelock: one writer at a time)


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
                raise CacheError(_damaged(name, f"{data.name} is missing files")) from None
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
        raise SupportSetError(f"no support set named {name!r} (see `icl-audio support list`)")
    with lock_for(name):
        trash = folder.with_name(f".rm-{name}-{uuid.uuid4().hex[:8]}")
        os.rename(folder, trash)  # atomic: readers see the set or nothing
    shutil.rmtree(trash, ignore_errors=True)


def _current_data(name: str, folder: Path) -> Path:
    pointer = folder / "current"
    if not pointer.is_file():
        raise SupportSetError(f"no support set named {name!r} (see `icl-audio support list`)")
    data_name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    data = folder / data_name
    if not data_name.startswith("data-") or "/" in data_name or not data.is_dir():
        raise CacheError(_damaged(name, "its 'current' pointer names no data folder"))
    return data


def _load_manifest(name: str, data: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(_damaged(name, "manifest.json is missing")) from None
    except (ValueError, UnicodeDecodeError):
        raise CacheError(_damaged(name, "manifest.json is not valid JSON")) from None
    if not isinstance(manifest, dict):
        raise CacheError(_damaged(name, "manifest.json is not an object"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CacheError(_damaged(name, f"unknown format version {manifest.get('format_version')!r}"))
    required = {"clips": int, "labels": list, "label_counts": dict, "codec": dict, "model": dict, "content_hash": str}
    for key, kind in required.items():
        if not isinstance(manifest.get(key), kind):
            raise CacheError(_damaged(name, f"manifest.json has no valid {key!r}"))
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
        raise CacheError(_damaged(name, f"unreadable data ({type(exc).__name__}: {exc})")) from None
    n = manifest["clips"]
    if (
        offsets.ndim != 1
        or len(offsets) != n + 1
        or len(items) != n
        or embeddings.shape[:1] != (n,)
        or int(offsets[-1]) != len(flat)
        or np.any(np.diff(offsets) <= 0)
    ):
        raise CacheError(_damaged(name, "its files disagree with the manifest (truncated or mixed)"))
    if _content_hash(flat, offsets, items_text) != manifest["content_hash"]:
        raise CacheError(_damaged(name, "content hash mismatch"))
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


def _damaged(name: str, why: str) -> str:
    return f"support set {name!r} is damaged ({why}); rebuild it with `icl-audio support build {name} ...` or remove it with `icl-audio support rm {name}`"


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
    """Write a small file atomically (temp file + fsync + rename)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def build_named_set(name, items, *, model: str, codec: str, device: str = "auto", multi_label=None, extra=None, progress_factory=None, lm=None, codec_model=None) -> dict:
    """Build ``items`` into the stored set ``name`` under its lock; refuses a model/codec change.

    An interrupted build leaves a ``building.json`` marker and its codes in the code cache, so
    the next run with the same models resumes (only missing clips are encoded).
    """
    from icl_audio.codec import load_codec
    from icl_audio.codecache import CodeCache
    from icl_audio.llm import load_lm

    wanted = {"model": model, "codec": codec}
    with lock_for(name):
        folder = set_dir(name)
        previous = None
        if exists(name):
            manifest = read_manifest(name)
            previous = {"model": manifest["model"].get("requested", manifest["model"].get("id")), "codec": manifest["codec"].get("requested", manifest["codec"].get("id"))}
        marker = folder / "building.json"
        if previous is None and marker.is_file():
            try:
                previous = json.loads(marker.read_text(encoding="utf-8"))
            except ValueError:
                previous = None
        if previous is not None:
            for key in ("model", "codec"):
                if previous.get(key) != wanted[key]:
                    raise SupportSetError(
                        f"support set {name!r} was built with --{key} {previous.get(key)}; refusing to mix in --{key} "
                        f"{wanted[key]} (use another name, or `icl-audio support rm {name}` first)"
                    )
        _write_text(marker, json.dumps(wanted))
        lm = lm or load_lm(model, device=device)
        codec_model = codec_model or load_codec(codec, device=device)
        sset, report = build_support_set(
            items, codec_model, lm, cache=CodeCache(), multi_label=multi_label,
            progress=progress_factory(len(items), f"encoding {name}") if progress_factory else None,
        )
        meta = dict(sset.meta)
        meta["model"] = {**meta["model"], "requested": model}
        meta["codec"] = {**meta["codec"], "requested": codec}
        sset = SupportSet(sset.sources, sset.labels, sset.codes, sset.embeddings, sset.multi_label, meta)
        manifest = save_support_set(name, sset, {k: v for k, v in (extra or {}).items()})
        marker.unlink(missing_ok=True)
    return {
        "clips": manifest["clips"],
        "labels": len(manifest["labels"]),
        "encoded": report.encoded,
        "reused": report.reused,
        "skipped": list(report.skipped),
    }



# ----------------------------------------------------------------------------------------------
# Resolution: what `--support SPEC` means


def stored_models(name: str) -> tuple[str, str]:
    """The (model id, codec id) a stored set was built with."""
    manifest = read_manifest(name)
    # "requested" is what the user named (e.g. "debug" or a hub id); "id" what it resolved to.
    model, codec = manifest["model"], manifest["codec"]
    return str(model.get("requested", model.get("id"))), str(codec.get("requested", codec.get("id")))


def resolve_support(
    spec: str,
    classifier,
    *,
    progress_factory: Callable[[int, str], Any] | None = None,
) -> tuple[SupportSet, BuildReport | None]:
    """Turn ``--support SPEC`` into a support set for ``classifier``.

    SPEC is, in order: a folder with one sub-folder of clips per label (encoded on the fly,
    codes cached), a CSV file (``path,label[,split]``), or the name of a stored set. The name of
    an ARCH dataset that was never built gets an error with the exact command that builds it.
    ``progress_factory(total, description)`` returns a ``progress(n)`` callback (or ``None``).
    """
    from icl_audio import recipes

    path = Path(spec).expanduser()
    if path.is_dir() or (path.suffix.lower() == ".csv" and path.is_file()):
        items = recipes.from_folder(path) if path.is_dir() else recipes.from_csv(path)
        # Load the models before the progress bar starts: a missing model is then one clean line.
        codec, lm = classifier.codec_model, classifier.lm
        progress = progress_factory(len(items), "encoding support clips") if progress_factory else None
        return build_support_set(
            items,
            codec,
            lm,
            cache=classifier.cache,
            progress=progress,
            max_seconds=classifier.max_seconds,
            meta={"source": {"kind": "folder" if path.is_dir() else "csv", "path": str(path.resolve())}},
        )
    if NAME_PATTERN.match(spec) and exists(spec):
        return load_support_set(spec), None
    if spec in recipes.RECIPES:
        raise SupportSetError(
            f"support set {spec!r} is not built yet; build it once with: "
            f"icl-audio support build {spec} --dataset {spec} --root /path/to/{spec}"
            + (f" --model {classifier.model}" if classifier.model != DEFAULT_LLM else "")
            + (f" --codec {classifier.codec}" if classifier.codec != DEFAULT_CODEC else "")
        )
    if path.exists():
        raise SupportSetError(f"{spec}: not a folder of labelled sub-folders nor a .csv file")
    built = [m["name"] for m in list_support_sets() if "error" not in m]
    hint = f"stored sets: {', '.join(built)}" if built else "no sets are stored yet (`icl-audio support build`)"
    raise SupportSetError(f"{spec}: no such folder, CSV file or stored support set ({hint})")
