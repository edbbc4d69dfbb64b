"""Dataset recipe building blocks: the Item and Recipe dataclasses and helpers every recipe shares."""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping, Sequence

from icl_audio.errors import SupportSetError

log = logging.getLogger("icl_audio.recipes")

#: Audio file extensions the generic sources and the recipes pick up (lower case, with the dot).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au")

#: Canonical split names every recipe uses, whatever the dataset calls them
#: (Medley-solos-DB "training"/"validation", SLURP "devel" -> "train"/"val").
TRAIN, VAL, TEST = "train", "val", "test"


@dataclass(frozen=True)
class Item:
    """One labelled clip of a dataset or support set.

    path: the audio file (exists on disk when a recipe returns it); for a segment, the recording it is
      cut from; None for a row of a Hugging Face dataset.
    labels: readable English labels the LLM reads ("car horn", "fear"); one for single-label data.
    original_labels: the dataset's own codes, same order as ``labels`` ("car_horn", "pau").
    split: "train" | "val" | "test" for split datasets (None for fold datasets).
    fold: evaluation fold for fold datasets (for leave-one-speaker-out, the speaker's fold number).
    speaker: speaker / actor id when the dataset has one.
    ref: a lazy audio reference when the clip is not a whole file: a :class:`Segment` of a recording,
      or a dataset row (``icl_audio.hfdata.DatasetRow``). It carries its own ``key`` and is read only
      when the audio is loaded, so an Item never holds audio bytes.
    """

    path: Path | None
    labels: tuple[str, ...]
    original_labels: tuple[str, ...]
    split: str | None = None
    fold: int | None = None
    speaker: str | None = None
    ref: "AudioRef | None" = None

    @property
    def label(self) -> str:
        """The first (for single-label data: the only) readable label."""
        return self.labels[0]

    @property
    def key(self) -> str:
        """The stable reference that names this clip wherever one is stored: support sets, prediction
        files, episode files, seeded subsamples. A file: its path; a segment: ``PATH#t=START,END``;
        a dataset row: ``hf:OWNER/NAME[:CONFIG]@SPLIT#ROW``."""
        return self.ref.key if self.ref is not None else str(self.path)

    @property
    def audio(self):
        """What to hand to :func:`icl_audio.audio.load_audio` (and so to ``stream_codes``) for this clip:
        the file's path, or the lazy reference (read when the stream reaches it)."""
        return self.ref if self.ref is not None else self.path


class AudioRef:
    """A clip that is not a whole file, read only when needed. Subclasses give ``key`` (a stable name)
    and ``open_audio()``, which returns what :func:`icl_audio.audio.load_audio` accepts (bytes, a path,
    ``(samples, rate)``) or raises :class:`icl_audio.errors.AudioError` in one line."""

    key: str

    def open_audio(self):  # pragma: no cover - interface
        raise NotImplementedError

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True)
class Segment(AudioRef):
    """The time window ``[start, end)`` seconds of an audio file, read without cutting the file on disk.

    Its key is the file's path with a W3C Media Fragments time range: ``/data/rec.wav#t=1.25,3.5``.
    Only the window's frames are decoded (soundfile seeks to ``start``).
    """

    path: Path
    start: float
    end: float

    @property
    def key(self) -> str:  # type: ignore[override]
        return f"{self.path}#t={self.start:g},{self.end:g}"

    def open_audio(self):
        import soundfile as sf

        from icl_audio.errors import AudioError

        try:
            with sf.SoundFile(str(self.path)) as f:
                rate = f.samplerate
                first = min(int(round(self.start * rate)), f.frames)
                last = min(int(round(self.end * rate)), f.frames)
                f.seek(first)
                samples = f.read(frames=max(last - first, 0), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, EOFError, OSError) as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise AudioError(f"{self.key}: cannot read audio ({reason})") from None
        return samples, rate


@dataclass(frozen=True)
class HubRow:
    """One row of a dataset's hub copy, as a recipe's mapping sees it (never its audio bytes).

    ref: the lazy audio reference (``ref.key`` names the row: ``hf:OWNER/NAME@SPLIT#ROW``).
    split: the hub split the row comes from ("train", "validation", ...).
    values: the row's other columns; ClassLabel values as their names.
    audio_path: the file name stored with the audio, when the copy kept it ("1-100032-A-0.wav").
    """

    ref: "AudioRef"
    split: str
    values: Mapping[str, Any]
    audio_path: str | None = None

    @property
    def file_name(self) -> str:
        """The last component of ``audio_path`` ("" when there is none), whatever its separators."""
        return PurePosixPath(str(self.audio_path or "").replace("\\", "/")).name


@dataclass(frozen=True)
class HubCopy:
    """Where a recipe's dataset lives on the Hugging Face hub and how its rows map to the recipe's items.

    dataset: hub id ("ashraq/esc50"); config: the config to read (None: the default).
    columns: the columns ``map_rows`` needs (checked first: a missing one is one line listing those there are).
    map_rows: pure ``map_rows(rows: Sequence[HubRow]) -> list[Item]``: the recipe's labels, folds, splits.
    optional: columns ``map_rows`` reads when the copy has them (a speaker column where file names lack it).
    splits: hub splits read (None: every split). note: one line on how columns map to the protocol.
    """

    dataset: str
    columns: tuple[str, ...]
    map_rows: "Callable[[Sequence[HubRow]], list[Item]]"
    config: str | None = None
    splits: tuple[str, ...] | None = None
    note: str = ""
    optional: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """How to read one benchmark dataset and how ARCH evaluates it.

    Fields:
      name: registry name ("esc50", "fma-small", ...).
      prepare: ``prepare(root: Path) -> list[Item]``; pure: reads the official layout, writes nothing.
      multi_label: items may carry several labels (FSD50K).
      protocol: "folds" (leave one fold out; leave-one-speaker-out datasets map each speaker to a
        fold) or "splits" (fixed train / val / test subsets; the "test" split is evaluated).
      clip_seconds: ARCH's per-dataset clip length (truncate or pad to this).
      folds: fold numbers items can carry (``Item.fold``), or None.
      description: one paragraph: what the labels are, how splits/folds are derived.
      title: display name ("ESC-50").
      splits: split names items can carry (``Item.split``), or None.
      layout: one line describing the expected on-disk layout (used in error messages).
    hub: its Hugging Face hub copy and the mapping of its columns, or None.
    audio_root: for a dataset whose audio sits in another dataset's folder (ARCA23K-FSD: FSD50K's),
      what that folder is; ``prepare`` then also takes ``audio_root=``.

    RAVDESS is the one dataset with both: ``protocol="splits"`` (ARCH's seeded random 80/20 in
    ``Item.split``) and speaker-independent ``folds`` in ``Item.fold``; pass
    ``protocol="folds"`` to :meth:`evaluation_units` to use the latter.
    """

    name: str
    prepare: Callable[[Path], list[Item]]
    multi_label: bool
    protocol: str
    clip_seconds: float
    folds: tuple[int, ...] | None
    description: str
    title: str = ""
    splits: tuple[str, ...] | None = None
    layout: str = ""
    hub: HubCopy | None = None
    audio_root: str | None = None

    def __call__(self, root: Path | str) -> list[Item]:
        """Shorthand for ``prepare(Path(root))``."""
        return self.prepare(Path(root))

    def evaluation_units(
        self, items: Sequence[Item] | None = None, *, protocol: str | None = None
    ) -> list[str | int]:
        """The units a benchmark iterates over and averages: fold numbers or ``["test"]``.

        protocol: None for the recipe's own (ARCH's) protocol, or "folds" / "splits" to pick the
          other one where the recipe has both (RAVDESS).
        items: if given, only units with at least one query item in ``items`` are returned (a
          partial download of a fold dataset then evaluates the folds it has).
        """
        protocol = protocol or self.protocol
        if protocol == "folds":
            if not self.folds:
                raise SupportSetError(f"dataset {self.name!r} has no folds (its protocol is {self.protocol!r})")
            units: list[str | int] = list(self.folds)
            if items is not None:
                present = {it.fold for it in items}
                units = [u for u in units if u in present]
            return units
        if protocol == "splits":
            if not self.splits or TEST not in self.splits:
                raise SupportSetError(f"dataset {self.name!r} has no test split (its protocol is {self.protocol!r})")
            if items is not None and not any(it.split == TEST for it in items):
                return []
            return [TEST]
        raise SupportSetError(f"unknown protocol {protocol!r} (expected 'folds' or 'splits')")

    def split_items(
        self, items: Sequence[Item], unit: str | int, *, include_val: bool = False
    ) -> tuple[list[Item], list[Item]]:
        """Split ``items`` into (support items, query items) for one evaluation unit, ARCH's way.

        unit: a fold number (int, or its digits as a string) -> query = items of that fold,
          support = items of every other fold (ARCH also holds out a validation fold for its probe;
          an in-context learner needs none, so all remaining folds are support).
          A split name ("test" or "val") -> query = items of that split, support = the "train"
          split (plus "val" when ``include_val`` and the query split is "test").
        Order within each list follows ``items``. Raises SupportSetError for a unit the recipe
        does not define.
        """
        if isinstance(unit, str) and unit.strip().isdigit() and self.folds:
            unit = int(unit.strip())
        if isinstance(unit, int) and not isinstance(unit, bool):
            if not self.folds or unit not in self.folds:
                raise SupportSetError(
                    f"dataset {self.name!r} has no fold {unit} (folds: {_fmt_units(self.folds)})"
                )
            query = [it for it in items if it.fold == unit]
            support = [it for it in items if it.fold is not None and it.fold != unit]
            return support, query
        if isinstance(unit, str):
            if not self.splits or unit not in self.splits or unit == TRAIN:
                allowed = [s for s in (self.splits or ()) if s != TRAIN]
                raise SupportSetError(
                    f"dataset {self.name!r} cannot evaluate on split {unit!r} "
                    f"(query splits: {_fmt_units(allowed)}; folds: {_fmt_units(self.folds)})"
                )
            support_splits = {TRAIN} | ({VAL} if include_val and unit == TEST else set())
            query = [it for it in items if it.split == unit]
            support = [it for it in items if it.split in support_splits]
            return support, query
        raise SupportSetError(f"evaluation unit must be a fold number or a split name, got {unit!r}")


def _fmt_units(units: Iterable | None) -> str:
    units = list(units or ())
    return ", ".join(str(u) for u in units) if units else "none"


# --------------------------------------------------------------------------- helpers for recipes


def readable(code: str) -> str:
    """Turn a dataset's label code into words the LLM reads: underscores -> spaces, trimmed."""
    return re.sub(r"\s+", " ", code.replace("_", " ")).strip()


def locate(root: Path, required: str, title: str, layout: str) -> Path:
    """Return the dataset root holding ``required`` (a relative path): ``root`` itself or, so that a
    user may pass the folder an archive was extracted into, its single child folder that holds it.

    Raises SupportSetError naming exactly what is missing.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SupportSetError(f"{title} root {root}: not a folder (expected the official layout: {layout})")
    if (root / required).exists():
        return root
    hits = [c for c in sorted(root.iterdir()) if c.is_dir() and (c / required).exists()]
    if len(hits) == 1:
        return hits[0]
    raise SupportSetError(f"{title} root {root}: missing {required} (expected the official layout: {layout})")


def require(root: Path, rel_paths: Sequence[str], title: str, layout: str) -> None:
    """Raise SupportSetError naming every path of ``rel_paths`` missing under ``root``."""
    missing = [p for p in rel_paths if not (root / p).exists()]
    if missing:
        raise SupportSetError(
            f"{title} root {root}: missing {', '.join(missing)} (expected the official layout: {layout})"
        )


def read_csv_rows(path: Path, title: str) -> list[dict[str, str]]:
    """Read a CSV with a header row into dicts (utf-8, BOM tolerated); errors name the file."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SupportSetError(f"{title}: cannot read {path}: {e}") from None


def require_columns(rows_or_header: Sequence[str] | None, needed: Sequence[str], path: Path, title: str) -> None:
    """Raise SupportSetError if a CSV header lacks any of ``needed``."""
    have = set(rows_or_header or ())
    missing = [c for c in needed if c not in have]
    if missing:
        raise SupportSetError(
            f"{title}: {path} lacks column(s) {', '.join(missing)} (expected {', '.join(needed)})"
        )


def report_missing(where: str, missing: list[Path], found: int) -> None:
    """Log (warning) metadata rows skipped because their audio is not on disk; raise if none exist.

    where: names the source in messages, e.g. "ESC-50 root /data/esc50".
    A partial download is legitimate (only what exists counts), so this only warns -- unless not a
    single listed file exists, which almost always means a wrong root or audio folder.
    """
    if missing and found == 0:
        raise SupportSetError(
            f"{where}: none of the {len(missing)} audio files its metadata lists exist "
            f"(first expected at {missing[0]})"
        )
    if missing:
        log.warning("%s: skipped %d metadata row(s) whose audio is missing (e.g. %s)",
                    where, len(missing), missing[0])


def seeded_order(keys: Iterable[str], seed: int = 42) -> list[str]:
    """A pseudo-random but forever-stable permutation of ``keys``: sorted by sha256(f"{seed}:{key}").

    Why a hash and not numpy/random: their streams may change between versions; this order depends
    only on the keys and the seed, on every platform and version.
    """
    return sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())


def random_split(keys: Sequence[str], fractions: Sequence[tuple[str, float]], seed: int = 42) -> dict[str, str]:
    """Assign each key a split name, ARCH-style "random split with seed 42", deterministically.

    fractions: ordered (name, fraction) pairs, e.g. [("train", .8), ("val", .1), ("test", .1)].
    Hold-out sizes are rounded up (like scikit-learn's ``test_size``): with n keys the last splits
    get ceil(fraction * n) each, working backwards, and the first split takes the rest.
    """
    order = seeded_order(keys, seed)
    n = len(order)
    sizes: list[int] = [0] * len(fractions)
    remaining = n
    for i in range(len(fractions) - 1, 0, -1):
        sizes[i] = min(remaining, math.ceil(fractions[i][1] * n - 1e-9))
        remaining -= sizes[i]
    sizes[0] = remaining
    out: dict[str, str] = {}
    pos = 0
    for (name, _), size in zip(fractions, sizes):
        for k in order[pos : pos + size]:
            out[k] = name
        pos += size
    return out


def is_audio(path: Path) -> bool:
    """A visible regular file with a known audio extension (AppleDouble ``._x.wav`` etc. skipped)."""
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".") and path.is_file()


@dataclass
class _Collector:
    """Accumulates items and the metadata rows whose audio is missing."""

    items: list[Item] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)

    def add(self, path: Path, **kw) -> None:
        if path.is_file():
            self.items.append(Item(path=path, **kw))
        else:
            self.missing.append(path)


# --------------------------------------------------------------------------- helpers for hub copies

#: Hub split names -> the canonical split names.
HUB_SPLITS: dict[str, str] = {"train": TRAIN, "training": TRAIN, "validation": VAL, "valid": VAL, "val": VAL,
                              "dev": VAL, "devel": VAL, "test": TEST, "testing": TEST, "eval": TEST}


def hub_split(name: str) -> str:
    """A hub split name as recipes name splits ("validation" -> "val", "devel" -> "val"); others unchanged."""
    return HUB_SPLITS.get(str(name).lower(), str(name))


def hub_items(title: str, rows: Sequence[HubRow], fields: Callable[[HubRow], dict | None]) -> list[Item]:
    """Items of the hub ``rows`` whose ``fields(row)`` (Item keyword arguments: labels, original_labels,
    split, fold, speaker) is not None; rows mapped to None are left out (logged). Raises when none is left."""
    items: list[Item] = []
    for row in rows:
        kw = fields(row)
        if kw is not None:
            items.append(Item(path=None, ref=row.ref, **kw))
    if len(items) < len(rows):
        log.info("%s hub copy: left out %d of %d rows (no usable label)", title, len(rows) - len(items), len(rows))
    if not items:
        raise SupportSetError(f"none of its {len(rows)} rows has a usable label")
    return items


def hub_label_and_split(title: str, column: str) -> Callable[[Sequence[HubRow]], list[Item]]:
    """The mapping of a hub copy whose label is one column (underscores shown as spaces, the value kept
    as the original label) and whose hub splits are the recipe's (train / validation, devel -> val / test)."""
    def map_rows(rows: Sequence[HubRow]) -> list[Item]:
        def fields(row: HubRow) -> dict | None:
            code = str(row.values[column] or "").strip()
            return {"labels": (readable(code),), "original_labels": (code,), "split": hub_split(row.split)} if code else None

        return hub_items(title, rows, fields)

    return map_rows


def hub_int(row: HubRow, column: str) -> int:
    """An integer column of a hub row (digit strings too); one-line error naming the row otherwise."""
    value = row.values.get(column)
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise SupportSetError(f"{row.ref.key}: column {column!r} must be an integer, got {value!r}") from None
