"""IRMAS recipe: predominant instruments (11 classes); 3-s single-instrument training excerpts, multi-label test excerpts."""

from __future__ import annotations

from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import TEST, TRAIN, VAL, Item, Recipe, is_audio, locate, log, random_split

TITLE = "IRMAS"
LAYOUT = ("IRMAS-TrainingData/{code}/*.wav and IRMAS-TestingData-Part{1,2,3}/Part{1,2,3}/*.wav, each test "
          "wav with a .txt of the same name listing its instrument codes")
TRAINING = "IRMAS-TrainingData"
PARTS = (1, 2, 3)

#: The dataset's instrument codes and the words the LLM reads.
INSTRUMENTS: dict[str, str] = {
    "cel": "cello", "cla": "clarinet", "flu": "flute", "gac": "acoustic guitar", "gel": "electric guitar",
    "org": "organ", "pia": "piano", "sax": "saxophone", "tru": "trumpet", "vio": "violin", "voi": "voice",
}


def _test_codes(txt: Path) -> tuple[str, ...]:
    """The instrument codes of a test excerpt's .txt: one per line, padded with tabs/spaces in the release."""
    try:
        lines = txt.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SupportSetError(f"{TITLE}: cannot read {txt}: {e}") from None
    codes: list[str] = []
    for line in lines:
        code = line.strip().lower()
        if not code:
            continue
        if code not in INSTRUMENTS:
            raise SupportSetError(
                f"{TITLE}: {txt}: unknown instrument code {line.strip()!r} (expected one of {', '.join(INSTRUMENTS)})"
            )
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def prepare_irmas(root: Path) -> list[Item]:
    """Items of IRMAS from its official layout (training folders per instrument, three testing parts).

    Accepts: the folder holding ``IRMAS-TrainingData/`` (and the testing parts), or its parent.
    Training: ``IRMAS-TrainingData/<code>/*.wav``, one label each, the folder's instrument
    ("cel" -> "cello"; ``original_labels`` keeps the code); split "train", or "val" for ARCH's
    seeded 20% hold-out (seed 42, over the relative paths). Testing:
    ``IRMAS-TestingData-Part{1,2,3}/Part{1,2,3}/*.wav`` with every instrument of its ``.txt``,
    split "test"; a part that is not there is skipped (logged), a wav without its .txt too.
    """
    root = locate(Path(root), f"{TRAINING}/", TITLE, LAYOUT)
    train: list[tuple[str, Item]] = []
    for code, name in INSTRUMENTS.items():
        folder = root / TRAINING / code
        for path in sorted(folder.glob("*.wav")) if folder.is_dir() else ():
            if is_audio(path):
                train.append((path.relative_to(root).as_posix(),
                              Item(path=path, labels=(name,), original_labels=(code,), split=TRAIN)))
    if not train:
        raise SupportSetError(f"{TITLE} root {root}: no wavs in {TRAINING}/<code>/ (codes: {', '.join(INSTRUMENTS)})")
    split = random_split([key for key, _ in train], [(TRAIN, 0.8), (VAL, 0.2)], seed=42)
    items = [Item(it.path, it.labels, it.original_labels, split=split[key]) for key, it in train]

    absent, unlabelled = [], []
    for part in PARTS:
        folder = root / f"IRMAS-TestingData-Part{part}" / f"Part{part}"
        if not folder.is_dir():
            absent.append(part)
            continue
        for path in sorted(folder.glob("*.wav")):
            if not is_audio(path):
                continue
            txt = path.with_suffix(".txt")
            if not txt.is_file():
                unlabelled.append(path)
                continue
            codes = _test_codes(txt)
            if not codes:
                unlabelled.append(path)
                continue
            items.append(Item(path=path, labels=tuple(INSTRUMENTS[c] for c in codes), original_labels=codes, split=TEST))
    if absent:
        log.warning("%s root %s: testing part(s) %s not found (expected IRMAS-TestingData-PartN/PartN/)",
                    TITLE, root, ", ".join(map(str, absent)))
    if unlabelled:
        log.warning("%s root %s: skipped %d test wav(s) without a label .txt (e.g. %s)",
                    TITLE, root, len(unlabelled), unlabelled[0])
    return items


RECIPE = Recipe(
    name="irmas",
    title=TITLE,
    prepare=prepare_irmas,
    multi_label=True,
    protocol="splits",
    clip_seconds=5.0,
    folds=None,
    splits=(TRAIN, VAL, TEST),
    layout=LAYOUT,
    description=(
        "IRMAS: predominant instruments in music (cello, clarinet, flute, acoustic guitar, electric guitar, "
        "organ, piano, saxophone, trumpet, violin, voice). Training excerpts (3 s) carry one instrument; the "
        "testing excerpts (5-20 s) every instrument of their .txt, so it is multi-label (mAP). ARCH protocol: "
        "train on the training data (20% held out, seed 42, for validation), test on the three testing parts."
    ),
)
