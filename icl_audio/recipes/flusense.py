"""FluSense recipe: labelled segments (cough, sneeze, speech, ...) of hospital waiting-room recordings."""

from __future__ import annotations

import re
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import (
    HubCopy, HubRow, Item, Recipe, Segment, hub_items, is_audio, log, report_missing, seeded_order,
)

TITLE = "FluSense"
LAYOUT = ("flusense_data/{recording}.TextGrid (the annotations of github.com/Forsad/FluSense-data) with the "
          "recordings {recording}.wav anywhere under the same folder")
#: Labels left out, as the prototype's hub copy does: "etc" is everything else, the others have 1-6 segments.
EXCLUDED = frozenset({"etc", "vomit", "snore", "wheeze"})
N_FOLDS = 5
FOLDS = tuple(range(1, N_FOLDS + 1))
_INTERVAL = re.compile(r'xmin\s*=\s*([-\d.eE+]+)\s*xmax\s*=\s*([-\d.eE+]+)\s*text\s*=\s*"((?:[^"]|"")*)"')


def label_words(code: str) -> str:
    """An annotation as the LLM reads it: trimmed, lower case, hyphens as spaces ("throat-clearing" -> "throat clearing")."""
    return " ".join(code.strip().lower().replace("-", " ").split())


def read_textgrid(path: Path) -> list[tuple[float, float, str]]:
    """(start, end, text) of every interval of a Praat TextGrid in the long text format (UTF-8 or UTF-16)."""
    try:
        data = path.read_bytes()
        text = data.decode("utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else data.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise SupportSetError(f"{TITLE}: cannot read {path}: {e}") from None
    if 'class = "IntervalTier"' not in text:
        raise SupportSetError(f"{TITLE}: {path} is not a TextGrid with an interval tier (long text format)")
    return [(float(a), float(b), t.replace('""', '"')) for a, b, t in _INTERVAL.findall(text)]


def recording_folds(recordings: list[str]) -> dict[str, int]:
    """Recording -> fold 1-5: the recordings in a seeded order, cut in 5 near-equal groups, so that every
    segment of one recording is in one fold (segments of a recording share speakers and room)."""
    order = seeded_order(sorted(set(recordings)), seed=42)
    return {name: i * N_FOLDS // len(order) + 1 for i, name in enumerate(order)}


def prepare_flusense(root: Path) -> list[Item]:
    """Items of FluSense: one per labelled interval of each recording's TextGrid, read as a
    :class:`~icl_audio.recipes.Segment` of the recording (no file is cut on disk; key ``PATH#t=START,END``).

    Accepts: a folder holding ``flusense_data/*.TextGrid`` (or the TextGrids themselves) with the
    recordings ``{name}.wav`` (any audio extension) anywhere below it, e.g. the downloaded audio folder
    beside ``flusense_data/``. Labels: the interval text, trimmed, lower case, hyphens as spaces
    (cough, sneeze, sniffle, throat clearing, speech, silence, gasp, breathe, hiccup, burp); intervals
    labelled etc, vomit, snore, wheeze or nothing are left out. ``fold``: the recording's fold
    (:func:`recording_folds`). Recordings whose audio is missing are skipped (logged).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SupportSetError(f"{TITLE} root {root}: not a folder (expected the official layout: {LAYOUT})")
    grids_dir = root / "flusense_data" if (root / "flusense_data").is_dir() else root
    grids = sorted(grids_dir.glob("*.TextGrid"))
    if not grids:
        raise SupportSetError(f"{TITLE} root {root}: missing flusense_data/*.TextGrid (expected the official layout: {LAYOUT})")
    audio = {}
    for path in sorted(root.rglob("*")):
        if is_audio(path):
            audio.setdefault(path.stem, path)
    folds = recording_folds([g.stem for g in grids])
    items: list[Item] = []
    missing: list[Path] = []
    for grid in grids:
        recording = audio.get(grid.stem)
        if recording is None:
            missing.append(grid.with_suffix(".wav"))
            continue
        for start, end, text in read_textgrid(grid):
            code = text.strip()
            if not code or code.lower() in EXCLUDED or end <= start:
                continue
            items.append(Item(path=recording, labels=(label_words(code),), original_labels=(code,),
                              fold=folds[grid.stem], ref=Segment(recording, start, end)))
    report_missing(f"{TITLE} root {root}", missing, len(grids) - len(missing))
    if not items:
        raise SupportSetError(f"{TITLE} root {root}: the TextGrids hold no labelled segment")
    log.debug("%s root %s: %d segments of %d recordings", TITLE, root, len(items), len(grids) - len(missing))
    return items


def flusense_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of FluSense's hub copy (vtsouval/flusense, one row per segment): labels from ``label`` (etc,
    vomit, snore and wheeze left out, as above); ``fold`` by the file name of each row's audio through
    :func:`recording_folds` (a copy that stores one file per segment thus gets segment-level folds)."""
    folds = recording_folds([row.file_name.rsplit(".", 1)[0] or row.ref.key for row in rows])

    def fields(row: HubRow) -> dict | None:
        code = str(row.values["label"] or "").strip()
        if not code or code.lower() in EXCLUDED:
            return None
        return {"labels": (label_words(code),), "original_labels": (code,),
                "fold": folds[row.file_name.rsplit(".", 1)[0] or row.ref.key]}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="flusense",
    title=TITLE,
    prepare=prepare_flusense,
    multi_label=False,
    protocol="folds",
    clip_seconds=5.0,
    folds=FOLDS,
    layout=LAYOUT,
    hub=HubCopy("vtsouval/flusense", ("label",), flusense_from_hub,
                note="label -> label (etc, vomit, snore, wheeze left out); folds by audio file name"),
    description=(
        "FluSense: AudioSet recordings from hospital waiting areas annotated in Praat with the intervals of "
        "cough, sneeze, sniffle, throat clearing, speech, silence, gasp, breathe, hiccup and burp; a clip is "
        "one labelled interval (median about 1-2.5 s), read from its recording up to 5 s. Protocol: 5 folds "
        "of whole recordings (seeded), leave one fold out."
    ),
)
