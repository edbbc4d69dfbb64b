"""UrbanSound8K recipe: 8,732 urban sound slices (up to 4 s) in 10 classes, 10 official folds."""

from __future__ import annotations

from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import (
    HubCopy, HubRow, Item, Recipe, _Collector, hub_int, hub_items, locate, read_csv_rows, readable, report_missing,
    require, require_columns,
)

TITLE = "UrbanSound8K"
LAYOUT = "metadata/UrbanSound8K.csv and audio/fold1..fold10/"
FOLDS = tuple(range(1, 11))


def prepare_us8k(root: Path) -> list[Item]:
    """Items of UrbanSound8K from ``metadata/UrbanSound8K.csv`` and ``audio/fold{n}/<slice_file_name>``.

    Accepts: the ``UrbanSound8K`` folder or the folder it was extracted into.
    Labels: the ``class`` column with spaces ("car_horn" -> "car horn"); ``original_labels``
    keeps the class code. ``fold`` = the official fold (1-10). Rows without audio are skipped.
    """
    root = locate(Path(root), "metadata/UrbanSound8K.csv", TITLE, LAYOUT)
    require(root, ["audio/"], TITLE, LAYOUT)
    meta = root / "metadata" / "UrbanSound8K.csv"
    rows = read_csv_rows(meta, TITLE)
    require_columns(rows[0].keys() if rows else None, ["slice_file_name", "fold", "class"], meta, TITLE)
    out = _Collector()
    for row in rows:
        try:
            fold = int(row["fold"])
        except ValueError:
            raise SupportSetError(f"{TITLE}: {meta}: bad fold {row['fold']!r} for {row['slice_file_name']}") from None
        code = row["class"].strip()
        out.add(root / "audio" / f"fold{fold}" / row["slice_file_name"].strip(),
                labels=(readable(code),), original_labels=(code,), fold=fold)
    report_missing(f"{TITLE} root {root}", out.missing, len(out.items))
    return out.items


def us8k_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of UrbanSound8K's hub copy (danavery/urbansound8K): labels from ``class``, ``fold`` from ``fold``."""
    def fields(row: HubRow) -> dict:
        code = str(row.values["class"]).strip()
        return {"labels": (readable(code),), "original_labels": (code,), "fold": hub_int(row, "fold")}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="us8k",
    title="US8K (UrbanSound8K)",
    prepare=prepare_us8k,
    multi_label=False,
    protocol="folds",
    clip_seconds=5.0,
    folds=FOLDS,
    layout=LAYOUT,
    hub=HubCopy("danavery/urbansound8K", ("class", "fold"), us8k_from_hub,
                note="class -> label (underscores as spaces), fold -> fold"),
    description=(
        "UrbanSound8K: 10 urban sound classes (air conditioner, car horn, children playing, dog bark, "
        "drilling, engine idling, gun shot, jackhammer, siren, street music), slices up to 4 s "
        "(ARCH pads to 5 s). ARCH protocol: 10 official folds, leave one fold out."
    ),
)
