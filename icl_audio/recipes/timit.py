"""TIMIT dialect-region recipe: 6,300 read sentences by 630 speakers of 8 US dialect regions; official train/test."""

from __future__ import annotations

from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import TEST, TRAIN, VAL, HubCopy, HubRow, Item, Recipe, hub_items, hub_split, log

TITLE = "TIMIT"
LAYOUT = "{TRAIN,TEST}/DR{1-8}/{speaker}/*.WAV (NIST SPHERE headers; any letter case)"
#: Dialect region code -> the words the LLM reads (TIMIT's documentation; DR8 "Army Brat" speakers moved around).
REGIONS = {"DR1": "New England", "DR2": "Northern", "DR3": "North Midland", "DR4": "South Midland",
           "DR5": "Southern", "DR6": "New York City", "DR7": "Western", "DR8": "Mixed"}
_SPLITS = {"train": TRAIN, "test": TEST}


def _timit_root(root: Path) -> Path:
    """The folder holding TRAIN/ and TEST/ (any case): ``root`` or a folder up to two levels below it."""
    if not root.is_dir():
        raise SupportSetError(f"{TITLE} root {root}: not a folder (expected the official layout: {LAYOUT})")
    for base in [root, *sorted(root.glob("*/")), *sorted(root.glob("*/*/"))]:
        if base.is_dir() and {c.name.lower() for c in base.iterdir() if c.is_dir()} >= {"train", "test"}:
            return base
    raise SupportSetError(f"{TITLE} root {root}: missing TRAIN/ and TEST/ (expected the official layout: {LAYOUT})")


def prepare_timit(root: Path) -> list[Item]:
    """Items of TIMIT from the LDC distribution: ``{TRAIN,TEST}/DR{n}/{speaker}/{sentence}.WAV``.

    Accepts: the folder holding TRAIN/ and TEST/ or a folder up to two levels above it (``timit/TIMIT``,
    ``data/``), in upper or lower case. The .WAV files are NIST SPHERE (libsndfile reads them). A
    ``X.WAV.wav`` RIFF copy beside ``X.WAV`` (some re-distributions) counts once.
    Labels: the dialect region (DR1 -> "New England" ... DR8 -> "Mixed"); ``original_labels`` "DR1"...;
    ``speaker`` = the speaker folder ("FCJF0"); ``split``: TRAIN -> "train", TEST -> "test" (the two
    sets have no speaker in common). The data is licensed by the LDC (LDC93S1); there is no download.
    """
    base = _timit_root(Path(root).expanduser())
    items: list[Item] = []
    for split_dir in sorted(base.iterdir()):
        split = _SPLITS.get(split_dir.name.lower())
        if split is None or not split_dir.is_dir():
            continue
        for region_dir in sorted(split_dir.iterdir()):
            code = region_dir.name.upper()
            if code not in REGIONS or not region_dir.is_dir():
                continue
            for speaker_dir in sorted(d for d in region_dir.iterdir() if d.is_dir()):
                names = {p.name for p in speaker_dir.iterdir()}
                for path in sorted(speaker_dir.iterdir()):
                    if path.suffix.lower() != ".wav" or path.name.startswith(".") or not path.is_file():
                        continue
                    if path.name.lower().endswith(".wav.wav") and path.name[:-4] in names:
                        continue  # a RIFF copy of the SPHERE file beside it
                    items.append(Item(path=path, labels=(REGIONS[code],), original_labels=(code,), split=split,
                                      speaker=speaker_dir.name.upper()))
    if not items:
        raise SupportSetError(f"{TITLE} root {base}: no .WAV files in {{TRAIN,TEST}}/DR1..DR8/<speaker>/ (expected {LAYOUT})")
    log.debug("%s root %s: %d utterances", TITLE, base, len(items))
    return items


def timit_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of TIMIT's hub copy (nh0znoisung/timit): the region from ``dialect_region`` ("DR1".."DR8", or
    the region's name), ``split`` from the hub split (train / val / test)."""
    names = {v.lower(): v for v in REGIONS.values()}

    def fields(row: HubRow) -> dict | None:
        value = str(row.values["dialect_region"] or "").strip()
        code = value.upper() if value.upper() in REGIONS else (f"DR{value}" if f"DR{value}" in REGIONS else None)
        label = REGIONS[code] if code else names.get(value.lower())
        if label is None:
            return None
        return {"labels": (label,), "original_labels": (code or value,), "split": hub_split(row.split)}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="timit",
    title="TIMIT (dialect region)",
    prepare=prepare_timit,
    multi_label=False,
    protocol="splits",
    clip_seconds=5.0,
    folds=None,
    splits=(TRAIN, VAL, TEST),
    layout=LAYOUT,
    hub=HubCopy("nh0znoisung/timit", ("dialect_region",), timit_from_hub,
                note="dialect_region -> region name; hub splits train/val/test"),
    description=(
        "TIMIT: 10 read sentences by each of 630 American English speakers from 8 dialect regions (New England, "
        "Northern, North Midland, South Midland, Southern, New York City, Western, Mixed); label = the "
        "speaker's region. Protocol: the official TRAIN / TEST sets (speaker-disjoint); support = TRAIN. "
        "Licensed by the LDC: no download."
    ),
)
