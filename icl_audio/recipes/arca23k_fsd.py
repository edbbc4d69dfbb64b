"""ARCA23K-FSD recipe: ~17k single-label FSD50K clips in 70 classes, the official train / val / test split."""

from __future__ import annotations

import csv
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import (
    TEST, TRAIN, VAL, HubCopy, Item, Recipe, _Collector, hub_label_and_split, locate, readable,
    report_missing,
)

TITLE = "ARCA23K-FSD"
GROUND_TRUTH = "ARCA23K-FSD.ground_truth"
LAYOUT = (f"{GROUND_TRUTH}/{{train,val,test}}.csv (fname,label) with FSD50K's audio: FSD50K.dev_audio/{{fname}}.wav "
          "(train, val) and FSD50K.eval_audio/{fname}.wav (test)")
#: Split file -> (canonical split, the FSD50K audio folder its clips are in).
SPLIT_FILES = {"train.csv": (TRAIN, "FSD50K.dev_audio"), "val.csv": (VAL, "FSD50K.dev_audio"),
               "test.csv": (TEST, "FSD50K.eval_audio")}


def _audio_base(root: Path, audio_root: Path | None) -> Path:
    if audio_root is not None:
        return locate(Path(audio_root), "FSD50K.dev_audio/", "FSD50K (audio of ARCA23K-FSD)", LAYOUT)
    for base in (root, root.parent):
        if (base / "FSD50K.dev_audio").is_dir():
            return base
    raise SupportSetError(f"{TITLE} root {root}: no FSD50K.dev_audio/ beside the ground truth; give the FSD50K "
                          f"folder as the audio root (expected: {LAYOUT})")


def prepare_arca23k_fsd(root: Path, audio_root: Path | None = None) -> list[Item]:
    """Items of ARCA23K-FSD: its ground-truth CSVs (Zenodo record 5117901) over FSD50K's audio.

    root: the folder holding ``ARCA23K-FSD.ground_truth/`` (or that folder itself, or its parent).
    audio_root: the FSD50K folder holding ``FSD50K.dev_audio/`` and ``FSD50K.eval_audio/``; None looks
      for them in ``root`` and beside it.
    Labels: the ``label`` column with spaces ("Acoustic_guitar" -> "Acoustic guitar"); ``split`` from the
    file (train / val from FSD50K's dev audio, test from its eval audio). Rows without audio are skipped.
    """
    given = Path(root).expanduser()
    if given.name == GROUND_TRUTH and (given / "train.csv").is_file():
        gt = given
    else:
        gt = locate(given, f"{GROUND_TRUTH}/train.csv", TITLE, LAYOUT) / GROUND_TRUTH
    audio = _audio_base(gt.parent, audio_root)
    out = _Collector()
    for name, (split, folder) in SPLIT_FILES.items():
        path = gt / name
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise SupportSetError(f"{TITLE}: cannot read {path}: {e}") from None
        header = [c.strip() for c in rows[0]] if rows else []
        if "label" not in header or len(header) < 2:
            raise SupportSetError(f"{TITLE}: {path} lacks a label column (expected fname,label; found {','.join(header)})")
        col = header.index("label")
        for row in rows[1:]:
            if not row or not row[0].strip():
                continue
            code = row[col].strip()
            out.add(audio / folder / f"{row[0].strip()}.wav", labels=(readable(code),), original_labels=(code,),
                    split=split)
    report_missing(f"{TITLE} root {gt.parent}", out.missing, len(out.items))
    return out.items


RECIPE = Recipe(
    name="arca23k-fsd",
    title=TITLE,
    prepare=prepare_arca23k_fsd,
    multi_label=False,
    protocol="splits",
    clip_seconds=10.0,
    folds=None,
    splits=(TRAIN, VAL, TEST),
    layout=LAYOUT,
    audio_root="the FSD50K folder (FSD50K.dev_audio/, FSD50K.eval_audio/)",
    hub=HubCopy("vtsouval/arca23k-fsd", ("label",), hub_label_and_split(TITLE, "label"),
                note="label (ClassLabel) -> label with spaces; hub splits train/val/test"),
    description=(
        "ARCA23K-FSD: the single-label subset of FSD50K that ARCA23K is compared with, 70 sound event classes "
        "of the AudioSet ontology (e.g. Acoustic guitar, Bark, Toilet flush), clips of 0.3-30 s read up to "
        "10 s like FSD50K. Protocol: its official train / val / test CSVs; support = train."
    ),
)
