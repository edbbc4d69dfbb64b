"""VIVAE recipe: non-speech emotional vocalisations of 11 speakers, 6 classes, leave one speaker out."""

from __future__ import annotations

import re
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import HubCopy, HubRow, Item, Recipe, hub_items, locate, log, readable

TITLE = "VIVAE"
LAYOUT = "full_set/S{speaker}_{emotion}_{intensity}_{n}.wav"
FOLDS = tuple(range(1, 12))
# S01_achievement_low_01.wav: speaker, emotion (the label), intensity, repetition.
_NAME = re.compile(r"^S(\d+)_([A-Za-z]+)_([A-Za-z]+)_(\d+)\.wav$", re.IGNORECASE)


def prepare_vivae(root: Path) -> list[Item]:
    """Items of VIVAE from ``full_set/S{speaker}_{emotion}_{intensity}_{n}.wav``.

    Accepts: the VIVAE folder holding ``full_set/`` (or its parent).
    Labels: the emotion word (achievement, anger, fear, pain, pleasure, surprise); ``speaker`` =
    "S01".."S11"; ``fold`` = the speaker number, so leave-one-fold-out is leave-one-speaker-out.
    Files not named this way are skipped (logged).
    """
    root = locate(Path(root), "full_set/", TITLE, LAYOUT)
    items: list[Item] = []
    skipped = 0
    for path in sorted((root / "full_set").glob("*.wav"), key=lambda p: p.name):
        m = _NAME.match(path.name)
        if not m:
            skipped += 1
            continue
        number, emotion = int(m.group(1)), m.group(2).lower()
        items.append(Item(path=path, labels=(readable(emotion),), original_labels=(m.group(2),),
                          fold=number, speaker=f"S{number:02d}"))
    if skipped:
        log.warning("%s root %s: skipped %d file(s) not named S{speaker}_{emotion}_{intensity}_{n}.wav",
                    TITLE, root, skipped)
    if not items:
        raise SupportSetError(f"{TITLE} root {root}: no clips in full_set/ (expected {LAYOUT})")
    return items


def vivae_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of VIVAE's hub copy (vtsouval/vivae, split "data"): labels from ``label``; the speaker (and so
    the leave-one-speaker-out fold) from the original file name kept in the audio path
    (``S{speaker}_{emotion}_{intensity}_{n}.wav``) or a ``speaker`` column."""
    def fields(row: HubRow) -> dict:
        m = _NAME.match(row.file_name)
        speaker = m.group(1) if m else str(row.values.get("speaker") or "").strip().lstrip("Ss")
        if not speaker.isdigit():
            raise SupportSetError(f"{row.ref.key}: no speaker (no S{{speaker}}_... file name in its audio path, no "
                                  "speaker column): the leave-one-speaker-out folds cannot be assigned")
        code = str(row.values["label"]).strip()
        return {"labels": (readable(code.lower()),), "original_labels": (code,), "fold": int(speaker),
                "speaker": f"S{int(speaker):02d}"}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="vivae",
    title=TITLE,
    prepare=prepare_vivae,
    multi_label=False,
    protocol="folds",
    clip_seconds=5.0,
    folds=FOLDS,
    layout=LAYOUT,
    hub=HubCopy("vtsouval/vivae", ("label",), vivae_from_hub,
                optional=("speaker",),
                note="label -> label; speaker (fold) from the S{speaker}_... file name of each row's audio"),
    description=(
        "VIVAE: non-speech vocalisations (achievement, anger, fear, pain, pleasure, surprise) by 11 "
        "speakers at several intensities. ARCH protocol: leave one speaker out; each item's fold is "
        "its speaker number (S01 -> fold 1), so folds 1-11 are the 11 speakers."
    ),
)
