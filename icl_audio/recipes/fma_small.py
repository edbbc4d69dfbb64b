"""FMA-small recipe: 8,000 30-s music tracks in 8 top-level genres, ARCH's seeded random 80/10/10 split."""

from __future__ import annotations

import csv
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import (
    TEST, TRAIN, VAL, HubCopy, HubRow, Item, Recipe, locate, random_split, report_missing, require,
)

TITLE = "FMA-small"
LAYOUT = ("fma_metadata/tracks.csv and fma_small/{id//1000:03d}/{id:06d}.mp3 "
          "(or flat fma_small/{id:06d}.mp3)")
SPLIT_SEED = 42
SPLIT_FRACTIONS = ((TRAIN, 0.8), (VAL, 0.1), (TEST, 0.1))


def _read_tracks(meta: Path) -> list[tuple[int, str]]:
    """(track id, genre_top) for every small-subset track with a top genre.

    tracks.csv has a two-level header (row 1: "track", row 2: "genre_top"; pandas reads it with
    header=[0, 1]) followed by a "track_id,,,..." row; rows are found by an integer first cell, so
    both the real file and a copy without that third row work. The csv module copes with the
    multi-line quoted cells of the real file.
    """
    try:
        with meta.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            top, sub = next(reader, []), next(reader, [])
            pairs = list(zip(top, sub))
            try:
                genre_col = pairs.index(("track", "genre_top"))
            except ValueError:
                raise SupportSetError(
                    f"{TITLE}: {meta} has no ('track', 'genre_top') column in its two header rows"
                ) from None
            # ('set', 'subset') is "small" / "medium" / "large": each track lists its smallest subset,
            # so "small" selects exactly FMA-small, whatever other audio sits in the folder.
            subset_col = pairs.index(("set", "subset")) if ("set", "subset") in pairs else None
            out: list[tuple[int, str]] = []
            for row in reader:
                if not row or not row[0].strip().isdigit():
                    continue
                genre = row[genre_col].strip() if genre_col < len(row) else ""
                if not genre:
                    continue
                if subset_col is not None and subset_col < len(row) and row[subset_col].strip() not in ("", "small"):
                    continue
                out.append((int(row[0]), genre))
            return out
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SupportSetError(f"{TITLE}: cannot read {meta}: {e}") from None


def prepare_fma_small(root: Path) -> list[Item]:
    """Items of FMA-small from ``fma_metadata/tracks.csv`` and the mp3s in ``fma_small/``.

    Accepts: the folder holding ``fma_metadata/`` and ``fma_small/`` (or its parent); audio in the
    official nested layout ``fma_small/{id//1000:03d}/{id:06d}.mp3`` or flat ``fma_small/{id:06d}.mp3``
    (nested wins if both exist). ARCH's own loader looks only at the flat layout and so finds
    nothing in the official zip; this one finds both.
    Labels: the ``track/genre_top`` genre as written ("Hip-Hop", "Rock"); the class set is whatever
    exists on disk. ``split``: train / val / test, a random 80/10/10 with seed 42 over the tracks
    found, made deterministic by ``random_split`` (order = sha256("42:<track id>")); the same
    proportions as ARCH, not its exact assignment (ARCH uses scikit-learn's shuffler).
    """
    root = locate(Path(root), "fma_metadata/tracks.csv", TITLE, LAYOUT)
    require(root, ["fma_small/"], TITLE, LAYOUT)
    audio = root / "fma_small"
    tracks = _read_tracks(root / "fma_metadata" / "tracks.csv")
    found: list[tuple[int, str, Path]] = []
    missing: list[Path] = []
    for track_id, genre in tracks:
        nested = audio / f"{track_id // 1000:03d}" / f"{track_id:06d}.mp3"
        flat = audio / f"{track_id:06d}.mp3"
        if nested.is_file():
            found.append((track_id, genre, nested))
        elif flat.is_file():
            found.append((track_id, genre, flat))
        else:
            missing.append(nested)
    report_missing(f"{TITLE} root {root}", missing, len(found))
    if not found:
        raise SupportSetError(f"{TITLE} root {root}: tracks.csv lists no small-subset track with a genre")
    splits = random_split([str(t) for t, _, _ in found], SPLIT_FRACTIONS, seed=SPLIT_SEED)
    return [Item(path=p, labels=(g,), original_labels=(g,), split=splits[str(t)])
            for t, g, p in sorted(found)]


def fma_small_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of the FMA genre hub copy (rpmon/fma-genre-classification, train / validation): labels from
    ``genre``; the split is the recipe's own seeded 80/10/10 over track ids, taken from the file name of
    each row's audio (``{id:06d}.mp3``) where it is kept (so a track lands in the same split as from the
    folder), else over the row references. The hub's own train/validation division is not used."""
    keyed = []
    for row in rows:
        genre = str(row.values["genre"] or "").strip()
        if genre:
            stem = row.file_name.rsplit(".", 1)[0]
            keyed.append((str(int(stem)) if stem.isdigit() else row.ref.key, genre, row))
    if not keyed:
        raise SupportSetError(f"none of its {len(rows)} rows has a genre")
    splits = random_split([k for k, _, _ in keyed], SPLIT_FRACTIONS, seed=SPLIT_SEED)
    return [Item(path=None, ref=row.ref, labels=(g,), original_labels=(g,), split=splits[k]) for k, g, row in keyed]


RECIPE = Recipe(
    name="fma-small",
    title=TITLE,
    prepare=prepare_fma_small,
    multi_label=False,
    protocol="splits",
    clip_seconds=30.0,
    folds=None,
    splits=(TRAIN, VAL, TEST),
    layout=LAYOUT,
    hub=HubCopy("rpmon/fma-genre-classification", ("genre",), fma_small_from_hub,
                note="genre -> label; split: the seeded 80/10/10 over track ids (file names), not the hub's"),
    description=(
        "FMA-small: 30 s music excerpts in 8 balanced top-level genres (Electronic, Experimental, "
        "Folk, Hip-Hop, Instrumental, International, Pop, Rock). ARCH protocol: random 80/10/10 "
        "train/val/test split with seed 42; here the split is a stable hash order seeded with 42 over "
        "the tracks present (same proportions, not ARCH's exact assignment)."
    ),
)
