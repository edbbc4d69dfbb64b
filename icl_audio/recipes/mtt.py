"""MagnaTagATune recipe: ~25k 30-s music clips, ARCH's top-50 tags, multi-label; the MusiCNN train/val/test split."""

from __future__ import annotations

import csv
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import TEST, TRAIN, VAL, Item, Recipe, _Collector, locate, log, report_missing, require

TITLE = "MagnaTagATune"
LAYOUT = ("annotations_final.csv (tab-separated: clip_id, one 0/1 column per tag, mp3_path) with the mp3s "
          "under it ({0..9,a..f}/*.mp3), and the MusiCNN split files {train,val,test}_gt_mtt.tsv beside it")
ANNOTATIONS = "annotations_final.csv"
SPLIT_FILES = {TRAIN: "train_gt_mtt.tsv", VAL: "val_gt_mtt.tsv", TEST: "test_gt_mtt.tsv"}

#: The 50 tags ARCH keeps, in the order of its loader
#: (arch_eval/evaluation/classification/music/magnatagatune.py); clips with none of them are dropped.
TOP50_TAGS: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
    "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
    "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
    "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
)


def _read_tsv(path: Path) -> list[list[str]]:
    # The annotations are tab-separated with every value double-quoted; csv handles both.
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return [row for row in csv.reader(f, delimiter="\t") if row and any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SupportSetError(f"{TITLE}: cannot read {path}: {e}") from None


def _split_of(root: Path) -> dict[str, str]:
    """clip_id -> split, from the first column of the three MusiCNN split files (no header)."""
    split_of: dict[str, str] = {}
    for split, name in SPLIT_FILES.items():
        for row in _read_tsv(root / name):
            clip_id = row[0].strip()
            if not clip_id.isdigit():
                raise SupportSetError(f"{TITLE}: {root / name}: first column must be a clip_id, got {clip_id!r}")
            other = split_of.setdefault(clip_id, split)
            if other != split:
                raise SupportSetError(f"{TITLE}: clip_id {clip_id} is in both {SPLIT_FILES[other]} and {name}")
    return split_of


def prepare_mtt(root: Path) -> list[Item]:
    """Items of MagnaTagATune from ``annotations_final.csv``, the mp3s and the MusiCNN split files.

    Accepts: the folder holding ``annotations_final.csv`` and ``{train,val,test}_gt_mtt.tsv``
    (or its parent), with ``mp3_path`` (e.g. ``f/artist-album-01-track-30-59.mp3``) relative to it.
    Labels: the clip's tags among :data:`TOP50_TAGS` ("no vocals", "male vocal"; already words), in
    that order; clips with none of them are dropped, as ARCH does, and so are clips in no split file.
    ``split``: train / val / test from the split file listing the clip. Rows without audio are skipped.
    """
    root = locate(Path(root), ANNOTATIONS, TITLE, LAYOUT)
    require(root, list(SPLIT_FILES.values()), TITLE, LAYOUT)
    meta = root / ANNOTATIONS
    rows = _read_tsv(meta)
    if not rows:
        raise SupportSetError(f"{TITLE}: {meta} is empty (expected {LAYOUT})")
    header = [c.strip() for c in rows[0]]
    missing = [c for c in ("clip_id", "mp3_path", *TOP50_TAGS) if c not in header]
    if missing:
        raise SupportSetError(
            f"{TITLE}: {meta} lacks column(s) {', '.join(missing)} (is it the tab-separated annotations_final.csv?)"
        )
    col = {name: i for i, name in enumerate(header)}
    split_of = _split_of(root)
    out = _Collector()
    untagged = unsplit = 0
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise SupportSetError(f"{TITLE}: {meta} line {line}: {len(row)} fields, the header has {len(header)}")
        split = split_of.get(row[col["clip_id"]].strip())
        if split is None:
            unsplit += 1
            continue
        tags = tuple(t for t in TOP50_TAGS if row[col[t]].strip() == "1")
        if not tags:
            untagged += 1
            continue
        out.add(root / row[col["mp3_path"]].strip(), labels=tags, original_labels=tags, split=split)
    if untagged or unsplit:
        log.info("%s root %s: dropped %d clip(s) with none of the top-50 tags and %d in no split file",
                 TITLE, root, untagged, unsplit)
    report_missing(f"{TITLE} root {root}", out.missing, len(out.items))
    return out.items


RECIPE = Recipe(
    name="mtt",
    title=TITLE,
    prepare=prepare_mtt,
    multi_label=True,
    protocol="splits",
    clip_seconds=30.0,
    folds=None,
    splits=(TRAIN, VAL, TEST),
    layout=LAYOUT,
    description=(
        "MagnaTagATune: 30 s music clips tagged by players of the TagATune game; ARCH keeps the 50 most "
        "frequent tags (genre, instrument, voice, mood) and drops clips with none. Multi-label, mAP. ARCH "
        "protocol: the MusiCNN train / val / test split ({train,val,test}_gt_mtt.tsv); here support = train."
    ),
)
