"""EMOVO recipe: Italian acted emotional speech, 6 speakers, 7 emotions, leave one speaker out."""

from __future__ import annotations

import re
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import HubCopy, HubRow, Item, Recipe, hub_items, log

TITLE = "EMOVO"
LAYOUT = "EMOVO/{f1,f2,f3,m1,m2,m3}/{emo}-{speaker}-{sentence}.wav"
#: Italian emotion codes -> English words.
EMOTIONS = {
    "dis": "disgust", "gio": "joy", "neu": "neutral", "pau": "fear",
    "rab": "anger", "sor": "surprise", "tri": "sadness",
}
SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")
#: Leave one speaker out: the fold of a speaker is its position in SPEAKERS plus one (f1 -> 1, m3 -> 6).
SPEAKER_FOLD = {s: i + 1 for i, s in enumerate(SPEAKERS)}
FOLDS = tuple(SPEAKER_FOLD.values())
_NAME = re.compile(r"^([a-z]{3})-([fm]\d)-([^.]+)\.wav$", re.IGNORECASE)


def prepare_emovo(root: Path) -> list[Item]:
    """Items of EMOVO from ``EMOVO/{speaker}/{emo}-{speaker}-{sentence}.wav``.

    Accepts: the folder holding ``EMOVO/`` or the ``EMOVO`` folder itself (holding f1..m3).
    Labels: the emotion word (dis -> "disgust", gio -> "joy", neu -> "neutral", pau -> "fear",
    rab -> "anger", sor -> "surprise", tri -> "sadness"); ``original_labels`` the code.
    ``speaker`` = "f1".."m3" (from the file name); ``fold`` = SPEAKER_FOLD[speaker] (1-6).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SupportSetError(f"{TITLE} root {root}: not a folder (expected the official layout: {LAYOUT})")
    base = root / "EMOVO" if (root / "EMOVO").is_dir() else root
    speaker_dirs = [base / s for s in SPEAKERS if (base / s).is_dir()]
    if not speaker_dirs:
        raise SupportSetError(
            f"{TITLE} root {root}: missing EMOVO/f1..m3 speaker folders (expected the official layout: {LAYOUT})"
        )
    items: list[Item] = []
    skipped = 0
    for d in speaker_dirs:
        for path in sorted(d.glob("*.wav"), key=lambda p: p.name):
            m = _NAME.match(path.name)
            code = m.group(1).lower() if m else ""
            speaker = m.group(2).lower() if m else ""
            if code not in EMOTIONS or speaker not in SPEAKER_FOLD:
                skipped += 1
                continue
            items.append(Item(path=path, labels=(EMOTIONS[code],), original_labels=(code,),
                              fold=SPEAKER_FOLD[speaker], speaker=speaker))
    if skipped:
        log.warning("%s root %s: skipped %d file(s) not named {emo}-{speaker}-{sentence}.wav", TITLE, root, skipped)
    if not items:
        raise SupportSetError(f"{TITLE} root {root}: no clips in the speaker folders (expected {LAYOUT})")
    return items


def emovo_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of EMOVO's hub copy (vtsouval/emovo, config fold1 with all its splits): the emotion code from
    ``emotion`` (dis -> "disgust" ...), the speaker from the original file name kept in the audio path
    (``{emo}-{speaker}-{sentence}.wav``) or a ``speaker`` column, and so the leave-one-speaker-out fold.
    A clip listed in several splits of the config counts once."""
    seen: set[str] = set()

    def fields(row: HubRow) -> dict | None:
        if row.file_name and row.file_name in seen:
            return None
        seen.add(row.file_name)
        code = str(row.values["emotion"]).strip().lower()
        m = _NAME.match(row.file_name)
        speaker = (m.group(2) if m else str(row.values.get("speaker") or "")).strip().lower()
        if code not in EMOTIONS:
            raise SupportSetError(f"{row.ref.key}: unknown emotion code {code!r} (expected {', '.join(EMOTIONS)})")
        if speaker not in SPEAKER_FOLD:
            raise SupportSetError(f"{row.ref.key}: no speaker f1..m3 (no {{emo}}-{{speaker}}-... file name in its "
                                  "audio path, no speaker column): the speaker folds cannot be assigned")
        return {"labels": (EMOTIONS[code],), "original_labels": (code,), "fold": SPEAKER_FOLD[speaker], "speaker": speaker}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="emovo",
    title=TITLE,
    prepare=prepare_emovo,
    multi_label=False,
    protocol="folds",
    clip_seconds=5.0,
    folds=FOLDS,
    layout=LAYOUT,
    hub=HubCopy("vtsouval/emovo", ("emotion",), emovo_from_hub, config="fold1",
                optional=("speaker",),
                note="emotion code -> word; speaker (fold) from the {emo}-{speaker}-... file name"),
    description=(
        "EMOVO: Italian emotional speech by 6 actors (f1-f3, m1-m3) in 7 classes (disgust, joy, "
        "neutral, fear, anger, surprise, sadness). ARCH protocol: leave one speaker out; fold = "
        "speaker position (f1 -> 1 ... m3 -> 6)."
    ),
)
