"""ESC-50 recipe: 2,000 five-second environmental sounds in 50 classes, 5 official folds."""

from __future__ import annotations

from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import (
    HubCopy, HubRow, Item, Recipe, _Collector, hub_int, hub_items, locate, read_csv_rows, readable, report_missing,
    require, require_columns,
)

TITLE = "ESC-50"
LAYOUT = "meta/esc50.csv and audio/"
FOLDS = (1, 2, 3, 4, 5)


def prepare_esc50(root: Path) -> list[Item]:
    """Items of ESC-50 from its official layout (``meta/esc50.csv``, ``audio/<filename>``).

    Accepts: the dataset folder (e.g. ``ESC-50-master``) or the folder it was extracted into.
    Labels: the ``category`` column with underscores as spaces ("chirping_birds" ->
    "chirping birds"); ``original_labels`` keeps the category code. ``fold`` = the official fold
    (1-5). Rows whose audio is missing are skipped (logged); only existing files count.
    """
    root = locate(Path(root), "meta/esc50.csv", TITLE, LAYOUT)
    require(root, ["audio/"], TITLE, LAYOUT)
    meta = root / "meta" / "esc50.csv"
    rows = read_csv_rows(meta, TITLE)
    require_columns(rows[0].keys() if rows else None, ["filename", "fold", "category"], meta, TITLE)
    out = _Collector()
    for row in rows:
        try:
            fold = int(row["fold"])
        except ValueError:
            raise SupportSetError(f"{TITLE}: {meta}: bad fold {row['fold']!r} for {row['filename']}") from None
        code = row["category"].strip()
        out.add(root / "audio" / row["filename"].strip(), labels=(readable(code),), original_labels=(code,),
                fold=fold)
    report_missing(f"{TITLE} root {root}", out.missing, len(out.items))
    return out.items


def esc50_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of ESC-50's hub copy (ashraq/esc50: the metadata columns beside ``audio``): labels from
    ``category`` as in :func:`prepare_esc50`, ``fold`` from ``fold``."""
    def fields(row: HubRow) -> dict:
        code = str(row.values["category"]).strip()
        return {"labels": (readable(code),), "original_labels": (code,), "fold": hub_int(row, "fold")}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="esc50",
    title=TITLE,
    prepare=prepare_esc50,
    multi_label=False,
    protocol="folds",
    clip_seconds=5.0,
    folds=FOLDS,
    layout=LAYOUT,
    hub=HubCopy("ashraq/esc50", ("category", "fold"), esc50_from_hub,
                note="category -> label (underscores as spaces), fold -> fold"),
    description=(
        "ESC-50: 50 environmental sound classes (animals, natural soundscapes, human non-speech, "
        "domestic, urban), 5 s clips. Labels are the category names with spaces. ARCH protocol: "
        "5 official folds, leave one fold out (support = the other four folds); accuracy averaged."
    ),
)
