"""AudioMNIST recipe: 30,000 spoken digits by 60 speakers, ARCH's 5 folds of 12 speakers."""

from __future__ import annotations

import re
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import HubCopy, HubRow, Item, Recipe, hub_items, locate, log

TITLE = "AudioMNIST"
LAYOUT = "data/{speaker 01..60}/{digit}_{speaker}_{rep}.wav"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Speakers of each fold: the five test-speaker sets of AudioMNIST's own digit splits (Becker et
#: al.), which ARCH's loader uses verbatim; together they cover speakers 1-60 exactly once.
FOLD_SPEAKERS: dict[int, tuple[int, ...]] = {
    1: (12, 47, 59, 15, 27, 41, 4, 11, 21, 31, 44, 50),
    2: (26, 52, 60, 18, 32, 42, 5, 13, 22, 33, 45, 51),
    3: (28, 56, 7, 19, 35, 1, 6, 16, 23, 34, 46, 53),
    4: (36, 57, 9, 24, 37, 2, 8, 17, 29, 39, 48, 54),
    5: (43, 58, 14, 25, 38, 3, 10, 20, 30, 40, 49, 55),
}
SPEAKER_FOLD: dict[int, int] = {s: f for f, speakers in FOLD_SPEAKERS.items() for s in speakers}
FOLDS = tuple(FOLD_SPEAKERS)
_NAME = re.compile(r"^(\d)_(\d+)_(\d+)\.wav$")


def prepare_audiomnist(root: Path) -> list[Item]:
    """Items of AudioMNIST from ``data/{speaker}/{digit}_{speaker}_{rep}.wav``.

    Accepts: the repository folder (e.g. ``AudioMNIST-master``, holding ``data/``) or its parent.
    Labels: the digit as an English word ("zero".."nine"); ``original_labels`` the digit "0".."9".
    ``speaker`` = "01".."60"; ``fold`` = the speaker's fold in FOLD_SPEAKERS (ARCH's assignment).
    Files not named this way, or of a speaker outside 1-60, are skipped (logged).
    """
    root = locate(Path(root), "data/", TITLE, LAYOUT)
    items: list[Item] = []
    skipped = 0
    for path in sorted((root / "data").glob("*/*.wav"), key=lambda p: (p.parent.name, p.name)):
        m = _NAME.match(path.name)
        speaker = int(m.group(2)) if m else -1
        if not m or speaker not in SPEAKER_FOLD:
            skipped += 1
            continue
        digit = m.group(1)
        items.append(Item(path=path, labels=(DIGITS[int(digit)],), original_labels=(digit,),
                          fold=SPEAKER_FOLD[speaker], speaker=f"{speaker:02d}"))
    if skipped:
        log.warning("%s root %s: skipped %d file(s) not named {digit}_{speaker}_{rep}.wav", TITLE, root, skipped)
    if not items:
        raise SupportSetError(f"{TITLE} root {root}: no clips under data/ (expected {LAYOUT})")
    return items


def audiomnist_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of AudioMNIST's hub copy (gilkeyio/AudioMNIST, train + test): the digit from ``digit``, the
    speaker from ``speaker_id`` (or the ``{digit}_{speaker}_{rep}.wav`` file name of the audio path) and
    so ARCH's fold; the hub's own train/test division is not used."""
    def fields(row: HubRow) -> dict:
        digit = str(row.values["digit"]).strip()
        m = _NAME.match(row.file_name)
        speaker_text = str(row.values.get("speaker_id") or (m.group(2) if m else "")).strip()
        if not (digit.isdigit() and 0 <= int(digit) <= 9):
            raise SupportSetError(f"{row.ref.key}: column 'digit' must be 0-9, got {row.values['digit']!r}")
        if not speaker_text.isdigit() or int(speaker_text) not in SPEAKER_FOLD:
            raise SupportSetError(f"{row.ref.key}: no speaker 1-60 (column 'speaker_id' or the file name): "
                                  "ARCH's speaker folds cannot be assigned")
        speaker = int(speaker_text)
        return {"labels": (DIGITS[int(digit)],), "original_labels": (digit,), "fold": SPEAKER_FOLD[speaker],
                "speaker": f"{speaker:02d}"}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="audiomnist",
    title=TITLE,
    prepare=prepare_audiomnist,
    multi_label=False,
    protocol="folds",
    clip_seconds=5.0,
    folds=FOLDS,
    layout=LAYOUT,
    hub=HubCopy("gilkeyio/AudioMNIST", ("digit",), audiomnist_from_hub,
                optional=("speaker_id",),
                note="digit -> label; speaker_id -> ARCH's speaker fold"),
    description=(
        "AudioMNIST: spoken digits 0-9 (labels 'zero'..'nine') by 60 speakers, clips under 1 s. "
        "ARCH protocol: 5 speaker-independent folds of 12 speakers (AudioMNIST's own split sets, "
        "see FOLD_SPEAKERS), leave one fold out."
    ),
)
