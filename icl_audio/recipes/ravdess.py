"""RAVDESS recipe: acted emotional speech (and song) of 24 actors, 8 emotions; ARCH random 80/20 and speaker folds."""

from __future__ import annotations

import re
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import TEST, TRAIN, HubCopy, HubRow, Item, Recipe, hub_int, log, random_split

TITLE = "RAVDESS"
LAYOUT = "Actor_{01..24}/MM-VV-EE-II-SS-RR-AA.wav"
#: Third field of the file name -> emotion word.
EMOTIONS = {
    "01": "neutral", "02": "calm", "03": "happy", "04": "sad",
    "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised",
}
#: Speaker-independent folds: actors 1-6 -> fold 1, 7-12 -> 2, 13-18 -> 3, 19-24 -> 4. Actors
#: alternate male (odd) / female (even), so every fold holds 3 male and 3 female actors.
FOLDS = (1, 2, 3, 4)
ACTORS_PER_FOLD = 6
SPLIT_SEED = 42
SPLIT_FRACTIONS = ((TRAIN, 0.8), (TEST, 0.2))
_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})\.wav$", re.IGNORECASE)


def actor_fold(actor: int) -> int:
    """The speaker-independent fold (1-4) of an actor number (1-24)."""
    return (actor - 1) // ACTORS_PER_FOLD + 1


def prepare_ravdess(root: Path) -> list[Item]:
    """Items of RAVDESS from ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (audio-only speech and/or song).

    Accepts: the folder holding ``Actor_01``... or a folder whose sub-folders hold them (e.g. the
    speech and song archives extracted side by side).
    Labels: the emotion word of the third field (03 -> "happy"); ``original_labels`` the code "03".
    ``speaker`` = actor "01".."24" (last field). Two protocols, both on every item:
      ``split`` = ARCH's random 80/20 train/test, seed 42 (a stable hash order over file names, so
        ARCH's proportions but not its exact scikit-learn assignment) -- the recipe's protocol;
      ``fold`` = speaker-independent fold 1-4 (6 actors each, see FOLDS) -- the sounder choice,
        used with ``evaluation_units(protocol="folds")``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SupportSetError(f"{TITLE} root {root}: not a folder (expected the official layout: {LAYOUT})")
    actor_dirs = sorted(set(root.glob("Actor_*")) | set(root.glob("*/Actor_*")))
    actor_dirs = [d for d in actor_dirs if d.is_dir()]
    if not actor_dirs:
        raise SupportSetError(
            f"{TITLE} root {root}: missing Actor_01..Actor_24 folders (expected the official layout: {LAYOUT})"
        )
    found: list[tuple[str, Path, re.Match]] = []
    skipped = 0
    for d in actor_dirs:
        for path in sorted(d.glob("*.wav"), key=lambda p: p.name):
            m = _NAME.match(path.name)
            if not m or m.group(3) not in EMOTIONS:
                skipped += 1
                continue
            # Key by path relative to root: the same file name can exist in speech and song copies.
            found.append((path.relative_to(root).as_posix(), path, m))
    if skipped:
        log.warning("%s root %s: skipped %d file(s) not named MM-VV-EE-II-SS-RR-AA.wav", TITLE, root, skipped)
    if not found:
        raise SupportSetError(f"{TITLE} root {root}: no clips in the Actor_* folders (expected {LAYOUT})")
    splits = random_split([k for k, _, _ in found], SPLIT_FRACTIONS, seed=SPLIT_SEED)
    items = []
    for key, path, m in sorted(found, key=lambda t: t[0]):
        code, actor = m.group(3), m.group(7)
        items.append(Item(path=path, labels=(EMOTIONS[code],), original_labels=(code,), split=splits[key],
                          fold=actor_fold(int(actor)), speaker=actor))
    return items


def ravdess_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of RAVDESS's hub copy (narad/ravdess): the emotion from ``labels`` (0-7 in the order of
    EMOTIONS: 0 -> "neutral" ... 7 -> "surprised"), the actor from ``speaker_id``; both protocols as in
    :func:`prepare_ravdess`: ``split`` the seeded 80/20 over the original file names where the audio
    path keeps them (else over the row references), ``fold`` the actor's speaker-independent fold."""
    found = []
    for row in rows:
        index = hub_int(row, "labels")
        code = f"{index + 1:02d}"
        if code not in EMOTIONS:
            raise SupportSetError(f"{row.ref.key}: column 'labels' must be 0-7, got {index}")
        actor = hub_int(row, "speaker_id")
        if not 1 <= actor <= 24:
            raise SupportSetError(f"{row.ref.key}: column 'speaker_id' must be an actor 1-24, got {actor}")
        key = row.file_name if _NAME.match(row.file_name) else row.ref.key
        found.append((key, code, actor, row))
    splits = random_split([k for k, _, _, _ in found], SPLIT_FRACTIONS, seed=SPLIT_SEED)
    return [Item(path=None, ref=row.ref, labels=(EMOTIONS[code],), original_labels=(code,), split=splits[key],
                 fold=actor_fold(actor), speaker=f"{actor:02d}") for key, code, actor, row in found]


RECIPE = Recipe(
    name="ravdess",
    title=TITLE,
    prepare=prepare_ravdess,
    multi_label=False,
    protocol="splits",
    clip_seconds=5.0,
    folds=FOLDS,
    splits=(TRAIN, TEST),
    layout=LAYOUT,
    hub=HubCopy("narad/ravdess", ("labels", "speaker_id"), ravdess_from_hub,
                note="labels 0-7 -> emotion; speaker_id -> actor and fold; split: the seeded 80/20"),
    description=(
        "RAVDESS: 24 actors (12 male, 12 female) speaking (and singing) with 8 emotions (neutral, calm, "
        "happy, sad, angry, fearful, disgust, surprised). ARCH protocol (Item.split): a random 80/20 "
        "train/test split, seed 42, which mixes each actor into both sides. Speaker-independent "
        "alternative (Item.fold): 4 folds of 6 actors (1-6, 7-12, 13-18, 19-24), leave one fold out; "
        "use evaluation_units(protocol='folds')."
    ),
)
