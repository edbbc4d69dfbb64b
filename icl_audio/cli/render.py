"""Small rich helpers shared by the CLI commands (tables to stdout, progress to stderr)."""

from __future__ import annotations

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
