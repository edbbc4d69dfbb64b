"""GTZAN recipe: 1,000 30-s music excerpts in 10 genres; the fault-filtered artist-conditional split."""

from __future__ import annotations

import re
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import TEST, TRAIN, VAL, HubCopy, HubRow, Item, Recipe, hub_items, is_audio, log

TITLE = "GTZAN"
LAYOUT = "genres/{genre}/{genre}.000NN.au (the original archive) or genres_original/{genre}/{genre}.000NN.wav"
GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
#: Genre folder name -> the words the LLM reads.
LABELS = {g: ("hip hop" if g == "hiphop" else g) for g in GENRES}

# The fault-filtered split of Kereliuk, Sturm & Larsen, "Deep learning and music adversaries" (IEEE TMM
# 2015; lists in github.com/coreyker/dnn-mgr, gtzan/{train,valid,test}_filtered.txt): 443 / 197 / 290
# excerpts. It keeps each artist on one side and leaves out the 70 excerpts Sturm found repeated,
# mislabelled or distorted; a random split of GTZAN puts one artist's songs (and repeated excerpts) on
# both sides and overstates accuracy. Excerpt numbers per genre, as ranges.
_FILTERED = {
    TRAIN: {"blues": "29-49,73-97", "classical": "30-33,43-48,50-67,80-99", "country": "19-26,28-29,65-99",
            "disco": "5,15-20,22-37,39-45,47,49,53-54,56-57,59,61,70,73-74,89",
            "hiphop": "2-25,28-29,31-38,41-42,55-61,77-80", "jazz": "0-1,11-24,41,47-72",
            "metal": "2-3,5,21,24,35,46-57,59-66,69,71-72,79-80,84,86,89-99",
            "pop": "2-9,11-12,16-20,23-29,31-36,38-42,44,46,49-50,80,97-99",
            "reggae": "0-2,4,6,9,11-12,14-32,42-45,49-51,54-60,63,69", "rock": "0-9,16-26,57-70,91-99"},
    VAL: {"blues": "0-11,50-60", "classical": "0-10,68-76", "country": "0-7,9-18,27,41-42,45,49",
          "disco": "0,2-4,6-14,46,48,52,67-68,72,75,90,95", "hiphop": "81-98", "jazz": "2-10,25-32",
          "metal": "0-1,6-11,16-20,36-37,68,76-77,81-82", "pop": "10,53,55,58-62,81,83-86",
          "reggae": "61-62,70,72,74,76-78,85,92-99", "rock": "38,49-56,71-85"},
    TEST: {"blues": "12-28,61-72,98-99", "classical": "11-29,34-41,49,77-79",
           "country": "30-40,43-44,46-48,50-51,53-64", "disco": "1,21,58,62-66,69,76-88,91-94,96-97,99",
           "hiphop": "0,26-27,30,40,43-45,51-54,62-75,99", "jazz": "73-99",
           "metal": "12-15,22-23,25-33,38-39,67,70,73-75,78,83,85,87-88",
           "pop": "0-1,13-14,43,63-66,69-79,82,88-96", "reggae": "34-40,46-48,52-53,64-68,71,79,82-84,87-90",
           "rock": "10-15,27-37,39-48,86-90"},
}


def _expand(ranges: str) -> list[int]:
    out: list[int] = []
    for part in ranges.split(","):
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


#: "blues.00029" -> "train" for the 930 excerpts of the filtered split.
FILTERED_SPLIT: dict[str, str] = {f"{genre}.{n:05d}": split for split, genres in _FILTERED.items()
                                  for genre, ranges in genres.items() for n in _expand(ranges)}
_NAME = re.compile(r"^([a-z]+)\.(\d{5})\.(wav|au)$", re.IGNORECASE)


def _genre_root(root: Path) -> Path:
    if not root.is_dir():
        raise SupportSetError(f"{TITLE} root {root}: not a folder (expected the official layout: {LAYOUT})")
    for base in (root, root / "genres", root / "genres_original", root / "Data" / "genres_original",
                 root / "gtzan_genre" / "genres"):
        if any((base / g).is_dir() for g in GENRES):
            return base
    raise SupportSetError(f"{TITLE} root {root}: missing the genre folders {', '.join(GENRES)} "
                          f"(expected the official layout: {LAYOUT})")


def prepare_gtzan(root: Path) -> list[Item]:
    """Items of GTZAN: every excerpt found in ``{genre}/{genre}.000NN.{wav,au}``.

    Accepts: the folder holding the genre folders (``genres/`` of the original archive, with .au files;
    ``genres_original/`` of the common .wav copy), or a folder above it. Labels: the genre ("hiphop" ->
    "hip hop"); ``split``: train / val / test from the fault-filtered split (FILTERED_SPLIT), None for
    the 70 excerpts it leaves out: they are items (a support set may use them) but take no part in the
    split protocol. A .wav and an .au of one excerpt count once (the .wav).
    """
    base = _genre_root(Path(root).expanduser())
    found: dict[str, Path] = {}
    skipped = 0
    for genre in GENRES:
        folder = base / genre
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            m = _NAME.match(path.name)
            if not m or m.group(1).lower() != genre or not is_audio(path):
                skipped += path.suffix.lower() in (".wav", ".au")
                continue
            stem = f"{genre}.{m.group(2)}"
            if stem not in found or path.suffix.lower() == ".wav":
                found[stem] = path
    if skipped:
        log.warning("%s root %s: skipped %d file(s) not named {genre}.000NN.wav/.au", TITLE, base, skipped)
    if not found:
        raise SupportSetError(f"{TITLE} root {base}: no excerpts in the genre folders (expected {LAYOUT})")
    return [Item(path=path, labels=(LABELS[stem.split(".")[0]],), original_labels=(stem.split(".")[0],),
                 split=FILTERED_SPLIT.get(stem)) for stem, path in sorted(found.items())]


def gtzan_from_hub(rows: "list[HubRow]") -> list[Item]:
    """Items of GTZAN's hub copy (marsyas/gtzan): the genre from ``genre`` (a ClassLabel), the split from
    the fault-filtered lists by the excerpt's file name (``blues.00029.wav``) kept in its audio path or
    ``file`` column; a copy without file names cannot follow the split and is refused."""
    def fields(row: HubRow) -> dict | None:
        genre = str(row.values["genre"] or "").strip().lower()
        if genre not in LABELS:
            return None
        name = row.file_name or str(row.values.get("file") or "").replace("\\", "/").rsplit("/", 1)[-1]
        m = _NAME.match(name)
        if not m:
            raise SupportSetError(f"{row.ref.key}: no {{genre}}.000NN file name in its audio path or 'file' column: "
                                  "the fault-filtered split cannot be applied")
        return {"labels": (LABELS[genre],), "original_labels": (genre,),
                "split": FILTERED_SPLIT.get(f"{m.group(1).lower()}.{m.group(2)}")}

    return hub_items(TITLE, rows, fields)


RECIPE = Recipe(
    name="gtzan",
    title=TITLE,
    prepare=prepare_gtzan,
    multi_label=False,
    protocol="splits",
    clip_seconds=10.0,
    folds=None,
    splits=(TRAIN, VAL, TEST),
    layout=LAYOUT,
    hub=HubCopy("marsyas/gtzan", ("genre",), gtzan_from_hub,
                optional=("file",),
                note="genre -> label; split: the fault-filtered lists by file name"),
    description=(
        "GTZAN: 10 genres (blues, classical, country, disco, hip hop, jazz, metal, pop, reggae, rock), 100 "
        "excerpts of 30 s each, read up to 10 s. Protocol: the fault-filtered artist-conditional split of "
        "Kereliuk, Sturm & Larsen (2015): 443 train / 197 val / 290 test; the 70 excerpts it excludes "
        "(repeated, mislabelled, distorted) are items but neither support nor queries."
    ),
)
