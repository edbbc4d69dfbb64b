"""Small rich helpers shared by the CLI commands (tables to stdout, progress to stderr)."""

from __future__ import annotations

import sys
from typing import Any, Mapping


def print_mapping(title: str, data: Mapping[str, Any]) -> None:
    """Print a two-column key/value table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("key")
    table.add_column("value", justify="right")
    for key, value in data.items():
        table.add_row(str(key), f"{value:.4g}" if isinstance(value, float) else str(value))
    Console().print(table)


def stderr_console():
    """A rich console on stderr, for progress and logs."""
    from rich.console import Console

    return Console(stderr=True)


class ProgressBars:
    """Rich progress bars with ETA on stderr; ``bar(total, description)`` gives a ``progress(n)`` callback.

    Disabled (callbacks do nothing) when ``enabled`` is false, e.g. for ``--quiet``.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._progress = None

    def __enter__(self) -> "ProgressBars":
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=stderr_console(),
                transient=False,
                # Results go to the real stdout as they come (`--json` streams), not through the bar.
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def bar(self, total: int, description: str):
        if self._progress is None:
            return None
        task = self._progress.add_task(description, total=total)
        return lambda n=1: self._progress.advance(task, n)


def hint_for(exc: BaseException) -> str | None:
    """The command to run next for a library error, if there is one (the library names no CLI syntax)."""
    hfdata = sys.modules.get("icl_audio.hfdata")
    if hfdata is not None and isinstance(exc, hfdata.LabelColumnError):
        return f"name it with `icl-audio support build NAME --hf {exc.source[len('hf:'):]} --label-column COLUMN`"
    support = sys.modules.get("icl_audio.support_set")  # not imported: none of its errors can be this one
    if support is None:
        return None
    name = getattr(exc, "set_name", None)
    if isinstance(exc, support.DamagedSetError):
        return f"rebuild it with `icl-audio support build {name} ...` or remove it with `icl-audio support rm {name}`"
    if isinstance(exc, support.NotBuiltError):
        return f"build it once with `icl-audio support build {name} --dataset {name} --root /path/to/{name}`"
    if isinstance(exc, support.NoSuchSetError):
        return "see `icl-audio support list`"
    if isinstance(exc, support.ModelMismatchError):
        return f"`icl-audio support rm {name}` removes it"
    return None


def print_prediction_table(prediction: Any, top: int | None, console: Any = None) -> None:
    """Print one clip's ranked labels on stdout: its path on a line of its own, then the table.

    The path is printed with soft wrapping (never broken by rich; a narrow terminal folds it), so a
    long path is not cut mid-name the way a table title would be.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    console.print(Text(prediction.audio, style="bold"), soft_wrap=True)
    table = Table()
    table.add_column("rank", justify="right")
    table.add_column("label", overflow="fold")
    table.add_column("score", justify="right")
    n = len(prediction.labels) if top is None else top
    for rank, (label, score) in enumerate(zip(prediction.labels[:n], prediction.scores[:n]), start=1):
        # Labels and paths are user text: rendered as Text so "[...]" is never read as markup.
        table.add_row(str(rank), Text(label), f"{score:.3f}")
    console.print(table)
    if prediction.demonstrations:
        demos = ", ".join(f"{d.label} ({d.similarity:.2f})" for d in prediction.demonstrations)
        console.print(f"  demonstrations: {demos}", highlight=False, markup=False)
