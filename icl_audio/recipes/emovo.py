"""EMOVO recipe: Italian acted emotional speech, 6 speakers, 7 emotions, leave one speaker out."""

from __future__ import annotations

import re
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import Item, Recipe, log

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


RECIPE = Recipe(
    name="emovo",
    title=TITLE,
    prepare=prepare_emovo,
    multi_label=False,
    protocol="folds",
    clip_seconds=5.0,
    folds=FOLDS,
    layout=LAYOUT,
    description=(
        "EMOVO: Italian emotional speech by 6 actors (f1-f3, m1-m3) in 7 classes (disgust, joy, "
        "neutral, fear, anger, surprise, sadness). ARCH protocol: leave one speaker out; fold = "
        "speaker position (f1 -> 1 ... m3 -> 6)."
    ),
)
