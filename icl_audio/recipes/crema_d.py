"""CREMA-D recipe: 7,442 acted emotional sentences by 91 actors, 6 emotions, 5 speaker-independent folds."""

from __future__ import annotations

import re
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import HubCopy, HubRow, Item, Recipe, hub_items, locate, log, readable, seeded_order

TITLE = "CREMA-D"
LAYOUT = "AudioWAV/{actor}_{sentence}_{emotion}_{level}.wav (or AudioMP3/ with .mp3)"
#: The file name's emotion code -> the word the LLM reads (RAVDESS's words for the same emotions).
EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
#: Other spellings of the emotions, as hub copies write them.
_ALIASES = {"anger": "ANG", "angry": "ANG", "disgust": "DIS", "disgusted": "DIS", "fear": "FEA", "fearful": "FEA",
            "happy": "HAP", "happiness": "HAP", "neutral": "NEU", "sad": "SAD", "sadness": "SAD"}
#: The 91 actors are 1001..1091; folds are fixed over all of them (seeded order, 5 near-equal groups),
#: so an actor's fold does not depend on which files are present.
ACTORS = tuple(range(1001, 1092))
N_FOLDS = 5
FOLDS = tuple(range(1, N_FOLDS + 1))
ACTOR_FOLD: dict[int, int] = {int(a): i * N_FOLDS // len(ACTORS) + 1
                              for i, a in enumerate(seeded_order([str(a) for a in ACTORS], seed=42))}
_NAME = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.(wav|mp3)$", re.IGNORECASE)
_LFS_POINTER = b"version https://git-lfs"


def prepare_crema_d(root: Path) -> list[Item]:
    """Items of CREMA-D from ``AudioWAV/{actor}_{sentence}_{emotion}_{level}.wav``.

    Accepts: the repository clone (holding ``AudioWAV/``, or only ``AudioMP3/``) or its parent.
    Labels: the intended emotion of the file name (ANG -> "angry", DIS -> "disgust", FEA -> "fearful",
    HAP -> "happy", NEU -> "neutral", SAD -> "sad"); ``original_labels`` the code. ``speaker`` = actor
    "1001".."1091"; ``fold`` = ACTOR_FOLD[actor] (5 speaker-independent folds). A clone whose audio
    is still Git LFS pointers is refused in one line (run ``git lfs pull``).
    """
    try:
        root = locate(Path(root), "AudioWAV/", TITLE, LAYOUT)
        folder = root / "AudioWAV"
    except SupportSetError as no_wav:
        try:  # the MP3 copy alone
            root = locate(Path(root), "AudioMP3/", TITLE, LAYOUT)
        except SupportSetError:
            raise no_wav from None
        folder = root / "AudioMP3"
    items: list[Item] = []
    skipped = 0
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        m = _NAME.match(path.name)
        if not m or m.group(3).upper() not in EMOTIONS or int(m.group(1)) not in ACTOR_FOLD or not path.is_file():
            skipped += not path.name.startswith(".")
            continue
        actor, code = int(m.group(1)), m.group(3).upper()
        items.append(Item(path=path, labels=(EMOTIONS[code],), original_labels=(code,), fold=ACTOR_FOLD[actor],
                          speaker=str(actor)))
    if skipped:
        log.warning("%s root %s: skipped %d file(s) not named {actor}_{sentence}_{emotion}_{level}.wav", TITLE, root, skipped)
    if not items:
        raise SupportSetError(f"{TITLE} root {root}: no clips in {folder.name}/ (expected {LAYOUT})")
    with items[0].path.open("rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise SupportSetError(f"{TITLE} root {root}: {folder.name}/ holds Git LFS pointers, not audio "
                                  "(run `git lfs pull` in the clone)")
    return items


def crema_d_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of CREMA-D's hub copy (AbstractTTS/CREMA-D): labels from ``major_emotion`` (mapped to the
    recipe's words where it is one of the six emotions, else kept, underscores as spaces); the actor
    (and so the fold) from the original file name kept in the audio path, or a ``speaker_id`` /
    ``actor_id`` column."""
    def fields(row: HubRow) -> dict | None:
        value = str(row.values["major_emotion"] or "").strip()
        if not value:
            return None
        m = _NAME.match(row.file_name)
        actor_text = m.group(1) if m else str(row.values.get("speaker_id") or row.values.get("actor_id") or "")
        if not actor_text.strip().isdigit() or int(actor_text) not in ACTOR_FOLD:
            raise SupportSetError(f"{row.ref.key}: no actor 1001-1091 (no {{actor}}_... file name in its audio "
                                  "path, no speaker_id column): the speaker-independent folds cannot be assigned")
        code = _ALIASES.get(value.lower(), value.upper() if value.upper() in EMOTIONS else None)
        label = EMOTIONS[code] if code else readable(value)
        return {"labels": (label,), "original_labels": (value,), "fold": ACTOR_FOLD[int(actor_text)],
                "speaker": str(int(actor_text))}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="crema-d",
    title=TITLE,
    prepare=prepare_crema_d,
    multi_label=False,
    protocol="folds",
    clip_seconds=5.0,
    folds=FOLDS,
    layout=LAYOUT,
    hub=HubCopy("AbstractTTS/CREMA-D", ("major_emotion",), crema_d_from_hub,
                optional=("speaker_id", "actor_id"),
                note="major_emotion -> label; actor (fold) from the {actor}_... file name or speaker_id"),
    description=(
        "CREMA-D: 12 sentences spoken by 91 actors (1001-1091) with 6 intended emotions (angry, disgust, "
        "fearful, happy, neutral, sad) at several intensities, clips of 1-5 s. Protocol: 5 speaker-independent "
        "folds (the actors in a fixed seeded order, 18-19 per fold), leave one fold out."
    ),
)
