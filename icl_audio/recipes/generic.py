"""Generic support-set sources: a folder with one sub-folder per label, or a CSV of path,label[,split]."""

from __future__ import annotations

import csv
from pathlib import Path

from icl_audio.errors import SupportSetError
from icl_audio.recipes.base import AUDIO_EXTENSIONS, Item, is_audio, report_missing

#: Separator between several labels of one clip in a CSV's label column (multi-label sets).
LABEL_SEPARATOR = ";"


def from_folder(root: Path | str) -> list[Item]:
    """Items from a folder laid out as ``root/<label>/<clip>.<ext>`` (clips may sit in sub-folders).

    Accepts: any folder whose immediate sub-folders are label names (spaces, commas, unicode are
    fine: the folder name is the label, unchanged). Audio extensions: wav, flac, ogg, mp3, aiff/aif,
    au (any case); hidden files are ignored, so are files directly in ``root``.
    Order is deterministic: labels sorted, then files by their path within the label folder.
    Raises SupportSetError if ``root`` is not a folder or holds no audio in label sub-folders.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SupportSetError(f"support folder {root}: not a folder (expected {root}/<label>/<clip>.wav)")
    items: list[Item] = []
    for label_dir in sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                            key=lambda d: d.name):
        label = label_dir.name
        clips = sorted((p for p in label_dir.rglob("*") if is_audio(p)),
                       key=lambda p: p.relative_to(label_dir).as_posix())
        items.extend(Item(path=p, labels=(label,), original_labels=(label,)) for p in clips)
    if not items:
        exts = ", ".join(e.lstrip(".") for e in AUDIO_EXTENSIONS)
        raise SupportSetError(
            f"support folder {root}: no audio files in label sub-folders "
            f"(expected {root}/<label>/<clip>.wav; extensions: {exts})"
        )
    return items


def split_labels(cell: str) -> tuple[str, ...]:
    """Split a label cell on ';' into trimmed, de-duplicated labels (order kept, empties dropped)."""
    out: list[str] = []
    for part in cell.split(LABEL_SEPARATOR):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return tuple(out)


def from_csv(path: Path | str) -> list[Item]:
    """Items from a CSV file with a header row ``path,label[,split][,fold][,speaker]``.

    Accepts: column names in any case and order (``labels`` is an alias of ``label``; other columns
    are ignored); paths absolute or relative to the CSV's own folder; several labels per clip
    separated by ';' (multi-label); labels with commas or quotes quoted the usual CSV way;
    utf-8 with or without BOM. Rows whose audio file does not exist are skipped with a warning.
    Raises SupportSetError for a missing file or column, an empty path/label or non-integer fold
    (naming the line), or when no listed audio exists.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SupportSetError(f"support CSV {path}: no such file")
    base = path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise SupportSetError(f"support CSV {path}: empty file (expected a header path,label[,split])")
            cols = {name.strip().lower(): i for i, name in enumerate(header)}
            if "label" not in cols and "labels" in cols:
                cols["label"] = cols["labels"]
            missing_cols = [c for c in ("path", "label") if c not in cols]
            if missing_cols:
                raise SupportSetError(
                    f"support CSV {path}: missing column {', '.join(repr(c) for c in missing_cols)} "
                    f"(header must be path,label[,split]; found {','.join(header)})"
                )
            items: list[Item] = []
            missing: list[Path] = []
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank lines are harmless (trailing newline, spreadsheet export)

                def cell(name: str) -> str:
                    i = cols.get(name)
                    return row[i].strip() if i is not None and i < len(row) else ""

                rel = cell("path")
                labels = split_labels(cell("label"))
                if not rel:
                    raise SupportSetError(f"support CSV {path}, line {line}: empty path")
                if not labels:
                    raise SupportSetError(f"support CSV {path}, line {line}: empty label for {rel}")
                fold_cell = cell("fold")
                try:
                    fold = int(fold_cell) if fold_cell else None
                except ValueError:
                    raise SupportSetError(
                        f"support CSV {path}, line {line}: fold must be an integer, got {fold_cell!r}"
                    ) from None
                audio = Path(rel).expanduser()
                audio = audio if audio.is_absolute() else base / audio
                if not audio.is_file():
                    missing.append(audio)
                    continue
                items.append(Item(path=audio, labels=labels, original_labels=labels,
                                  split=cell("split") or None, fold=fold, speaker=cell("speaker") or None))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SupportSetError(f"support CSV {path}: cannot read: {e}") from None
    if not items and not missing:
        raise SupportSetError(f"support CSV {path}: no rows after the header")
    report_missing(f"support CSV {path}", missing, len(items))
    return items
