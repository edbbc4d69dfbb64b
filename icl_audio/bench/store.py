"""The prediction store: JSONL files of prediction lines, appended per rank, scanned on resume, merged by rank 0.

Predictions are the single source of truth: lines are appended (flushed) as they are computed,
into ``predictions/rank{r}/<run>.jsonl``; the merge writes ``predictions/<run>.jsonl`` in query
order and removes the rank files. Each line carries a fingerprint of everything that made it
(support set name -- itself a hash of root, model, codec and support items --, method, k, mode,
scoring options, seed for the random methods), so a re-run reuses exactly the lines that are
still valid, whatever the number of processes was, and a finished bench only rewrites its report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from icl_audio.bench.config import BenchError
from icl_audio.fsutil import atomic_write

if TYPE_CHECKING:
    from icl_audio.bench.plan import RunSpec, Unit


def read_lines(path: Path) -> list[dict]:
    """The prediction lines of one file; unparsable lines (a torn last line after a kill) are ignored."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for chunk in raw.split(b"\n"):
        if not chunk.strip():
            continue
        try:
            line = json.loads(chunk)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("query"), str) and isinstance(line.get("fp"), str):
            out.append(line)
    return out


def _open_append(path: Path):
    """Open a rank file for appending, first cutting a torn last line so the next line starts clean."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            data = f.read()
            if not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    return open(path, "a", encoding="utf-8")


def _prediction_files(out: Path, run: RunSpec) -> list[Path]:
    pred = out / "predictions"
    return [pred / f"{run.name}.jsonl", *sorted(pred.glob(f"rank*/{run.name}.jsonl"))]


def scan_done(out: Path, unit: Unit) -> None:
    """Fill ``unit.done`` with the queries that have a valid line (matching fingerprint) in the final or rank files."""
    for run in unit.runs:
        fp = unit.fps[run.name]
        unit.done[run.name] = {line["query"] for path in _prediction_files(out, run) for line in read_lines(path) if line["fp"] == fp}


def merge_run(out: Path, unit: Unit, run: RunSpec) -> list[dict]:
    """Collect the run's lines from every file, write ``predictions/<run>.jsonl`` in query order, drop rank files.

    Raises BenchError if a query has no line (a rank did not finish).
    """
    fp = unit.fps[run.name]
    found: dict[str, dict] = {}
    files = _prediction_files(out, run)
    for path in files:
        for line in read_lines(path):
            if line["fp"] == fp:
                found.setdefault(line["query"], line)
    lines = []
    for position, item in enumerate(unit.queries):
        line = found.get(item.key)
        if line is None:
            raise BenchError(f"{run.name}: no prediction for {item.key} (a process stopped early? re-run the same command to resume)")
        # Truth from the current metadata: a relabelled query is then scored against its new label.
        lines.append({**line, "i": position, "truth": list(item.labels)})
    atomic_write(files[0], "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    for path in files[1:]:
        path.unlink(missing_ok=True)
    return lines
