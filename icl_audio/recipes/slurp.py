"""SLURP recipe: spoken smart-home commands, intent (scenario_action) labels, official train/devel/test, real audio."""

from __future__ import annotations

import json
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import (
    TEST, TRAIN, VAL, HubCopy, Item, Recipe, _Collector, hub_label_and_split, readable, report_missing,
)

TITLE = "SLURP"
LAYOUT = ("{train,devel,test}.jsonl beside slurp_real/, or the repository layout "
          "dataset/slurp/{train,devel,test}.jsonl with audio/slurp_real/")
#: Official split file -> canonical split name.
SPLIT_FILES = {"train.jsonl": TRAIN, "devel.jsonl": VAL, "test.jsonl": TEST}


def _find(root: Path) -> tuple[Path, Path]:
    """(folder of the jsonl files, slurp_real audio folder) for either supported layout."""
    for jdir in (root, root / "dataset" / "slurp", root / "slurp"):
        if all((jdir / name).is_file() for name in SPLIT_FILES):
            break
    else:
        have = [d for d in (root, root / "dataset" / "slurp", root / "slurp")
                if any((d / n).is_file() for n in SPLIT_FILES)]
        where = have[0] if have else root
        missing = [n for n in SPLIT_FILES if not (where / n).is_file()]
        rel = where.relative_to(root).as_posix() if where != root else ""
        raise SupportSetError(
            f"{TITLE} root {root}: missing {', '.join((rel + '/' if rel else '') + m for m in missing)} "
            f"(expected the official layout: {LAYOUT})"
        )
    candidates = (jdir / "slurp_real", root / "slurp_real", root / "audio" / "slurp_real")
    for adir in candidates:
        if adir.is_dir():
            return jdir, adir
    raise SupportSetError(
        f"{TITLE} root {root}: missing slurp_real/ audio folder (looked in "
        f"{', '.join(str(c) for c in dict.fromkeys(candidates))}; expected the official layout: {LAYOUT})"
    )


def prepare_slurp(root: Path) -> list[Item]:
    """Items of SLURP: one per real recording listed in ``recordings[]`` of each jsonl line.

    Accepts: a folder with ``train.jsonl``, ``devel.jsonl``, ``test.jsonl`` beside ``slurp_real/``,
    or the SLURP repository with ``dataset/slurp/*.jsonl`` and ``audio/slurp_real/``.
    Labels: the ``intent`` (scenario_action) made readable ("alarm_set" -> "alarm set");
    ``original_labels`` the intent code. ``split``: train, devel -> "val", test. Only real
    recordings (``slurp_real``; the synthetic set is never read); missing audio is skipped.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SupportSetError(f"{TITLE} root {root}: not a folder (expected the official layout: {LAYOUT})")
    jdir, adir = _find(root)
    out = _Collector()
    for name, split in SPLIT_FILES.items():
        path = jdir / name
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SupportSetError(f"{TITLE}: cannot read {path}: {e}") from None
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                intent = str(rec["intent"]).strip()
                files = [str(r["file"]) for r in rec.get("recordings", [])]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise SupportSetError(f"{TITLE}: {path}, line {n}: not a SLURP record ({e})") from None
            for f in files:
                out.add(adir / f, labels=(readable(intent),), original_labels=(intent,), split=split)
    report_missing(f"{TITLE} root {root}", out.missing, len(out.items))
    return out.items


RECIPE = Recipe(
    name="slurp",
    title=TITLE,
    prepare=prepare_slurp,
    multi_label=False,
    protocol="splits",
    clip_seconds=10.0,
    folds=None,
    splits=(TRAIN, VAL, TEST),
    layout=LAYOUT,
    hub=HubCopy("marcel-gohsen/slurp", ("intent",), hub_label_and_split(TITLE, "intent"),
                note="intent -> label (underscores as spaces); hub splits train/devel/test -> train/val/test"),
    description=(
        "SLURP: spoken commands to a home assistant; label = intent (scenario_action, e.g. "
        "'alarm set', 'weather query'), about 60 classes. ARCH protocol: official train / devel / "
        "test (item splits train / val / test), real recordings only, one item per recording."
    ),
)
