"""FSD50K recipe: ~51k Freesound clips, 200 AudioSet-ontology classes, multi-label; dev train/val, eval = test."""

from __future__ import annotations

from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import (
    TEST, TRAIN, VAL, HubCopy, HubRow, Item, Recipe, _Collector, hub_items, hub_split, locate, read_csv_rows, readable,
    report_missing, require, require_columns,
)

TITLE = "FSD50K"
LAYOUT = ("FSD50K.ground_truth/{dev,eval}.csv, FSD50K.dev_audio/{fname}.wav, "
          "FSD50K.eval_audio/{fname}.wav")
_GT = "FSD50K.ground_truth"


def _labels(cell: str) -> tuple[str, ...]:
    # The labels column is one quoted, comma-separated cell ("Bark,Dog,Animal"); vocabulary names
    # never contain commas themselves (they use underscores), so splitting on ',' is exact.
    out: list[str] = []
    for part in cell.split(","):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return tuple(out)


def prepare_fsd50k(root: Path) -> list[Item]:
    """Items of FSD50K from its official layout (ground-truth CSVs and the two audio folders).

    Accepts: the folder holding ``FSD50K.ground_truth/`` etc. (or its parent).
    Labels: every label of the ``labels`` cell with spaces ("Electric_guitar" -> "Electric guitar"),
    order kept; ``original_labels`` the codes. ``split``: dev.csv's ``split`` column ("train" /
    "val"); eval.csv rows are "test". Rows without audio are skipped.
    """
    root = locate(Path(root), f"{_GT}/dev.csv", TITLE, LAYOUT)
    require(root, [f"{_GT}/eval.csv", "FSD50K.dev_audio/", "FSD50K.eval_audio/"], TITLE, LAYOUT)
    out = _Collector()
    for csv_name, audio_dir in (("dev.csv", "FSD50K.dev_audio"), ("eval.csv", "FSD50K.eval_audio")):
        meta = root / _GT / csv_name
        rows = read_csv_rows(meta, TITLE)
        needed = ["fname", "labels"] + (["split"] if csv_name == "dev.csv" else [])
        require_columns(rows[0].keys() if rows else None, needed, meta, TITLE)
        for row in rows:
            codes = _labels(row["labels"])
            if not codes:
                continue  # no ground truth: nothing to learn from or score against
            if csv_name == "eval.csv":
                split = TEST
            else:
                split = row["split"].strip()
                if split not in (TRAIN, VAL):
                    raise SupportSetError(f"{TITLE}: {meta}: split must be train or val, got {split!r}")
            out.add(root / audio_dir / f"{row['fname'].strip()}.wav",
                    labels=tuple(readable(c) for c in codes), original_labels=codes, split=split)
    report_missing(f"{TITLE} root {root}", out.missing, len(out.items))
    return out.items


def fsd50k_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of FSD50K's hub copy (CLAPv2/FSD50K): every label of the comma-separated ``label`` text
    (underscores as spaces), ``split`` from the hub split (train / validation -> val / test)."""
    def fields(row: HubRow) -> dict | None:
        codes = _labels(str(row.values["label"] or ""))
        if not codes:
            return None
        return {"labels": tuple(readable(c) for c in codes), "original_labels": codes, "split": hub_split(row.split)}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="fsd50k",
    title=TITLE,
    prepare=prepare_fsd50k,
    multi_label=True,
    protocol="splits",
    clip_seconds=10.0,
    folds=None,
    splits=(TRAIN, VAL, TEST),
    layout=LAYOUT,
    hub=HubCopy("CLAPv2/FSD50K", ("label",), fsd50k_from_hub,
                note="label (comma-separated) -> labels; hub splits train/validation/test -> train/val/test"),
    description=(
        "FSD50K: 200 sound event classes of the AudioSet ontology, multi-label (a clip carries its "
        "leaf labels and their ancestors). Splits: dev.csv train/val, eval.csv = test. ARCH protocol: "
        "train on train, select on val, report mAP on test; here support = train (optionally + val)."
    ),
)
