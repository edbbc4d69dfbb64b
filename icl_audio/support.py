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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from icl_audio import paths
from icl_audio.audio import DEFAULT_MAX_SECONDS
from icl_audio.errors import CacheError, SupportSetError
from icl_audio.fsutil import atomic_write

if TYPE_CHECKING:
    from icl_audio.codec import Codec
    from icl_audio.codecache import CodeCache
    from icl_audio.llm import LanguageModel
    from icl_audio.recipes import Item
    from icl_audio.retrieval import Index

FORMAT_VERSION = 1
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# Errors carry the set's name so a front end can add its own advice (the CLI adds the commands to
# run); the messages themselves name no command-line syntax.


class NoSuchSetError(SupportSetError):
    """No stored support set has this name."""

    def __init__(self, name: str, message: str | None = None):
        super().__init__(message or f"no support set named {name!r}")
        self.set_name = name


class NotBuiltError(NoSuchSetError):
    """``--support NAME`` names a dataset recipe whose support set was never built."""

    def __init__(self, name: str):
        super().__init__(name, f"support set {name!r} is not built yet ({name} is a dataset: build a support set from it first)")
        self.recipe = name


class DamagedSetError(CacheError):
    """A stored set's files are damaged; it must be rebuilt or removed."""

    def __init__(self, name: str, why: str):
        super().__init__(f"support set {name!r} is damaged ({why}); rebuild or remove it")
        self.set_name = name


class ModelMismatchError(SupportSetError):
    """A build would mix codes or embeddings of another model or codec into a stored set."""

    def __init__(self, name: str, flag: str, built: str, wanted: str):
        super().__init__(f"support set {name!r} was built with {flag} {built}; refusing to mix in {flag} {wanted} (use another name, or remove the set first)")
        self.set_name = name


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
# Building: always from models the caller has loaded (this module loads none).


def encode_support(
    audios: Iterable[Any],
    labels: Sequence[Sequence[str]],
    codec: "Codec",
    lm: "LanguageModel",
    *,
    cache: "CodeCache | None" = None,
    multi_label: bool | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    on_error: str = "skip",
) -> tuple[SupportSet, BuildReport]:
    """Encode labelled audio into a :class:`SupportSet` with already-loaded models.

    ``audios``: anything :func:`icl_audio.audio.load_audio` accepts, one per entry of ``labels``
    (a tuple of label strings per clip). Audio goes through :func:`icl_audio.encoding.stream_codes`
    (a bounded chunk in memory, codes through ``cache``; ``None`` caches nothing), so an interrupted
    build loses at most one chunk and a re-run encodes only what is missing. ``on_error="skip"``
    leaves out a clip that cannot be read and reports it in :attr:`BuildReport.skipped`;
    ``"raise"`` raises its AudioError. ``progress(n)`` is called as clips finish.
    """
    from icl_audio.encoding import EncodeTally, stream_codes
    from icl_audio.retrieval import clip_embeddings

    labels = [tuple(x) for x in labels]
    if not labels:
        raise SupportSetError("no support clips to build from")
    tally = EncodeTally()
    kept: list[int] = []
    sources: list[str] = []
    codes: list[np.ndarray] = []
    for item in stream_codes(audios, codec, cache=cache, max_seconds=max_seconds, on_error=on_error,
                             progress=progress, tally=tally):
        if item.codes is not None:
            kept.append(item.index)
            sources.append(item.source)
            codes.append(item.codes)
    if not kept:
        raise SupportSetError(f"none of the {len(labels)} support clips could be read (first: {tally.skipped[0][1]})")
    kept_labels = tuple(labels[i] for i in kept)
    sset = SupportSet(
        sources=tuple(sources),
        labels=kept_labels,
        codes=tuple(codes),
        embeddings=clip_embeddings(lm, codes),
        multi_label=any(len(x) > 1 for x in kept_labels) if multi_label is None else multi_label,
        meta={**model_meta(codec, lm), **(meta or {})},
    )
    return sset, BuildReport(tally.encoded, tally.reused, tuple(tally.skipped))


def build_support_set(
    items: Sequence["Item"],
    codec: "Codec",
    lm: "LanguageModel",
    *,
    cache: "CodeCache | None" = None,
    multi_label: bool | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> tuple[SupportSet, BuildReport]:
    """Encode recipe ``items`` (path + labels) into a :class:`SupportSet`; see :func:`encode_support`.

    A file that cannot be read is skipped and reported; the rest go on.
    """
    return encode_support(
        (item.audio for item in items), [tuple(item.labels) for item in items], codec, lm,
        cache=cache, multi_label=multi_label, meta=meta, progress=progress, max_seconds=max_seconds,
    )


def model_meta(codec: "Codec", lm: "LanguageModel") -> dict[str, Any]:
    """The ids and revisions that make codes and embeddings what they are."""
    return {
        "codec": {"id": codec.model_id, "revision": codec.revision, "fingerprint": codec.fingerprint},
        "model": {"id": lm.model_id, "revision": lm.revision},
    }


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


def check_models(name: str, *, model: str, codec: str) -> None:
    """Refuse (:class:`ModelMismatchError`) to build ``name`` with another model or codec than the
    stored set, or an interrupted build of it, used. Cheap (reads the manifest): call it before
    loading models; :func:`build_named_set` checks again under the lock."""
    previous = _built_with(name, set_dir(name))
    if previous is not None:
        for key, wanted in (("model", model), ("codec", codec)):
            if previous.get(key) != wanted:
                raise ModelMismatchError(name, key, str(previous.get(key)), wanted)


def _built_with(name: str, folder: Path) -> dict | None:
    if exists(name):
        manifest = read_manifest(name)
        return {key: manifest[key].get("requested", manifest[key].get("id")) for key in ("model", "codec")}
    try:
        previous = json.loads((folder / "building.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) else None


def build_named_set(
    name: str,
    items: Sequence["Item"],
    *,
    model: str,
    codec: str,
    lm: "LanguageModel",
    codec_model: "Codec",
    multi_label: bool | None = None,
    extra: Mapping[str, Any] | None = None,
    progress_factory: Callable[[int, str], Any] | None = None,
    cache: "CodeCache | None" = None,
    device: str | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> dict:
    """Build ``items`` into the stored set ``name`` under its lock, with already-loaded models.

    ``model``/``codec``: the names the user asked for (stored as ``requested``; a later build with
    other names is refused); ``lm``/``codec_model``: those models, loaded by the caller.
    ``cache``: the code cache (default: the shared one). ``device`` is ignored (the models come
    loaded; accepted for older callers). An interrupted build leaves a ``building.json`` marker and
    its codes in the code cache, so the next run with the same models resumes (only missing clips
    are encoded). Returns a summary: clips, labels, encoded, reused, skipped.
    """
    from icl_audio.codecache import CodeCache

    with lock_for(name):
        folder = set_dir(name)
        check_models(name, model=model, codec=codec)
        marker = folder / "building.json"
        _write_text(marker, json.dumps({"model": model, "codec": codec}))
        sset, report = build_support_set(
            items, codec_model, lm, cache=cache if cache is not None else CodeCache(), multi_label=multi_label,
            progress=progress_factory(len(items), f"encoding {name}") if progress_factory else None,
            max_seconds=max_seconds,  # the dataset's clip length in a bench (arch)
        )
        meta = dict(sset.meta)
        meta["model"] = {**meta["model"], "requested": model}
        meta["codec"] = {**meta["codec"], "requested": codec}
        sset = SupportSet(sset.sources, sset.labels, sset.codes, sset.embeddings, sset.multi_label, meta)
        manifest = save_support_set(name, sset, dict(extra or {}))
        marker.unlink(missing_ok=True)
    return {
        "clips": manifest["clips"],
        "labels": len(manifest["labels"]),
        "encoded": report.encoded,
        "reused": report.reused,
        "skipped": list(report.skipped),
    }


# ----------------------------------------------------------------------------------------------
# Resolution: what `--support SPEC` means, decided before any model loads


@dataclass(frozen=True)
class SupportSource:
    """What a ``--support SPEC`` names: clips to encode (``kind`` "folder" or "csv", with their
    ``items``) or a stored set (``kind`` "stored", with the ``model``/``codec`` it was built with)."""

    kind: str
    spec: str
    path: Path | None = None
    items: tuple["Item", ...] = ()
    model: str | None = None
    codec: str | None = None

    @property
    def stored(self) -> bool:
        return self.kind == "stored"


def stored_models(name: str) -> tuple[str, str]:
    """The (model id, codec id) a stored set was built with."""
    manifest = read_manifest(name)
    # "requested" is what the user named (e.g. "debug" or a hub id); "id" what it resolved to.
    model, codec = manifest["model"], manifest["codec"]
    return str(model.get("requested", model.get("id"))), str(codec.get("requested", codec.get("id")))


def parse_support_spec(spec: str) -> SupportSource:
    """Decide what ``spec`` names, reading folders and manifests only (no model, no audio).

    ``spec``: a folder with one sub-folder of clips per label, a CSV file (``path,label[,split]``),
    or the name of a stored set. A bare name that is both a path here and a stored set is refused
    as ambiguous rather than guessed (``./name`` is always the path). Raises
    :class:`NotBuiltError` for a dataset recipe's name that was never built, and
    :class:`SupportSetError` for anything else that names nothing usable.
    """
    from icl_audio import recipes

    if not isinstance(spec, str) or not spec.strip():
        raise SupportSetError("the support spec is empty: give a folder, a CSV file or a stored set name")
    path = Path(spec).expanduser()
    is_path = path.is_dir() or (path.suffix.lower() == ".csv" and path.is_file())
    is_name = bool(NAME_PATTERN.match(spec)) and exists(spec)
    if is_path and is_name:
        raise SupportSetError(
            f"ambiguous support {spec!r}: it is both a {'folder' if path.is_dir() else 'file'} here and a stored "
            f"support set; use ./{spec} for the {'folder' if path.is_dir() else 'file'}, or rename it"
        )
    if is_path:
        if path.is_dir():
            return SupportSource("folder", spec, path, tuple(recipes.from_folder(path)))
        return SupportSource("csv", spec, path, tuple(recipes.from_csv(path)))
    if is_name:
        model, codec = stored_models(spec)
        return SupportSource("stored", spec, model=model, codec=codec)
    if spec in recipes.RECIPES:
        raise NotBuiltError(spec)
    if path.exists():
        raise SupportSetError(f"{spec}: not a folder of labelled sub-folders nor a .csv file")
    built = [m["name"] for m in list_support_sets() if "error" not in m]
    hint = f"stored sets: {', '.join(built)}" if built else "no support sets are stored yet"
    raise SupportSetError(f"{spec}: no such folder, CSV file or stored support set ({hint})")


def open_support(
    source: SupportSource,
    codec: "Codec",
    lm: "LanguageModel",
    *,
    cache: "CodeCache | None" = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    progress: Callable[[int], None] | None = None,
) -> tuple[SupportSet, BuildReport | None]:
    """The support set ``source`` names: a stored set is loaded (report ``None``); folder and CSV
    clips are encoded with the given, already-loaded models (codes through ``cache``)."""
    if source.stored:
        return load_support_set(source.spec), None
    return build_support_set(
        source.items, codec, lm, cache=cache, progress=progress, max_seconds=max_seconds,
        meta={"source": {"kind": source.kind, "path": str(source.path.resolve())}},
    )
