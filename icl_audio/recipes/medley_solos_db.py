"""Medley-solos-DB recipe: 3-s solo instrument excerpts in 8 classes, official training/validation/test."""

from __future__ import annotations

from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import (
    TEST, TRAIN, VAL, HubCopy, Item, Recipe, _Collector, hub_label_and_split, is_audio, locate, read_csv_rows,
    readable, report_missing, require_columns,
)

TITLE = "Medley-solos-DB"
LAYOUT = ("Medley-solos-DB_metadata.csv with audio/Medley-solos-DB_{subset}-{instrument_id}_{uuid4}.wav "
          "or the wavs beside it")
_SUBSETS = {"training": TRAIN, "validation": VAL, "test": TEST}
_META = "Medley-solos-DB_metadata.csv"


def prepare_medley_solos_db(root: Path) -> list[Item]:
    """Items of Medley-solos-DB from its metadata CSV and ``Medley-solos-DB_{subset}-{id}_{uuid4}.wav``.

    Accepts: the folder holding the metadata CSV (also under ``annotation/``, the mirdata layout)
    with the wavs in ``audio/`` or beside the CSV.
    Labels: the ``instrument`` column ("distorted electric guitar", "tenor saxophone");
    ``split``: the official subset, renamed training -> "train", validation -> "val", test -> "test".
    Rows without audio are skipped.
    """
    given = Path(root)
    try:
        root = locate(given, _META, TITLE, LAYOUT)
        meta = root / _META
    except SupportSetError as first:
        try:  # the mirdata layout keeps the CSV in annotation/
            root = locate(given, f"annotation/{_META}", TITLE, LAYOUT)
        except SupportSetError:
            raise first from None
        meta = root / "annotation" / _META
    rows = read_csv_rows(meta, TITLE)
    require_columns(rows[0].keys() if rows else None, ["subset", "instrument", "instrument_id", "uuid4"],
                    meta, TITLE)
    audio_dir = next((d for d in (root / "audio", root) if d.is_dir() and any(
        is_audio(p) for p in d.glob("Medley-solos-DB_*"))), root / "audio")
    out = _Collector()
    for row in rows:
        subset = row["subset"].strip()
        if subset not in _SUBSETS:
            raise SupportSetError(f"{TITLE}: {meta}: unknown subset {subset!r} (expected training, validation, test)")
        code = row["instrument"].strip()
        name = f"Medley-solos-DB_{subset}-{row['instrument_id'].strip()}_{row['uuid4'].strip()}.wav"
        out.add(audio_dir / name, labels=(readable(code),), original_labels=(code,), split=_SUBSETS[subset])
    report_missing(f"{TITLE} root {root}", out.missing, len(out.items))
    return out.items


RECIPE = Recipe(
    name="medley-solos-db",
    title=TITLE,
    prepare=prepare_medley_solos_db,
    multi_label=False,
    protocol="splits",
    clip_seconds=3.0,
    folds=None,
    splits=(TRAIN, VAL, TEST),
    layout=LAYOUT,
    hub=HubCopy("vtsouval/medley-solos-db", ("instrument",), hub_label_and_split(TITLE, "instrument"),
                note="instrument -> label; hub splits train/validation/test -> train/val/test"),
    description=(
        "Medley-solos-DB: 3 s solo excerpts of 8 instruments (clarinet, distorted electric guitar, "
        "female singer, flute, piano, tenor saxophone, trumpet, violin). ARCH protocol: the official "
        "training / validation / test subsets (item splits train / val / test)."
    ),
)
