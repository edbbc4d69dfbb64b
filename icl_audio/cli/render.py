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
