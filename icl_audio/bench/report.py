"""Benchmark reports: fold summaries, results.json / results.md, PNG plots, the stdout table; all written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from icl_audio.bench.metrics import mean_std
from icl_audio.fsutil import atomic_write

# Display order: the method first, then the baselines it must beat.
METHOD_ORDER = ("icl", "icl-random-demos", "knn", "linear-probe", "clap-zero-shot", "majority", "random-label")
# Line style of the k-independent methods in the metric-against-k plot (colour, dash pattern).
FLAT_STYLE = {"linear-probe": ("tab:cyan", "-."), "clap-zero-shot": ("tab:pink", ":"),
              "majority": ("black", "--"), "random-label": ("grey", "--")}
MODE_ORDER = ("direct", "channel", None)


def metric_names(multi_label: bool) -> tuple[str, str]:
    """(primary, secondary) metric keys: accuracy / macro-F1, or mAP macro / weighted for multi-label data."""
    return ("map_macro", "map_weighted") if multi_label else ("accuracy", "macro_f1")


METRIC_TITLES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "map_macro": "mAP (macro)", "map_weighted": "mAP (weighted)"}


def config_key(method: str, k: int | None, mode: str | None) -> tuple:
    """Sort key of a (method, k, mode) configuration in tables."""
    return (
        METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER),
        MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER),
        -1 if k is None else k,
    )


def summarize(runs: Sequence[Mapping[str, Any]], multi_label: bool) -> list[dict[str, Any]]:
    """Average each (method, k, mode) over its evaluation units: ``<metric>_mean`` and ``<metric>_std``.

    ``runs``: the per-unit run objects of results.json. The std is the population std over
    units (0 for one unit); ``n_queries`` and ``seconds`` are totals over units.
    """
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["method"], run["k"], run["mode"]), []).append(run)
    out = []
    for (method, k, mode), members in sorted(groups.items(), key=lambda kv: config_key(*kv[0])):
        entry: dict[str, Any] = {
            "method": method,
            "k": k,
            "mode": mode,
            "folds": [r["fold"] for r in members],
            "n_queries": sum(r["n_queries"] for r in members),
            "n_failed": sum(r.get("n_failed", 0) for r in members),
            "seconds": round(sum(r["seconds"] for r in members), 6),
        }
        for metric in metric_names(multi_label):
            mean, std = mean_std([r.get(metric) for r in members])
            entry[f"{metric}_mean"] = mean
            entry[f"{metric}_std"] = std
        out.append(entry)
    return out


def _rows(summary: Sequence[Mapping[str, Any]]) -> list[tuple[str, str | None]]:
    seen: dict[tuple[str, str | None], None] = {}
    for entry in summary:
        seen.setdefault((entry["method"], entry["mode"]), None)
    return sorted(seen, key=lambda mm: config_key(mm[0], None, mm[1]))


def _cell(entry: Mapping[str, Any] | None, metric: str, units: int) -> str:
    if entry is None:
        return "-"
    mean, std = entry.get(f"{metric}_mean"), entry.get(f"{metric}_std")
    if mean is None or mean != mean:  # NaN: no class with positives
        return "n/a"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if units > 1 else "")


def table_grid(results: Mapping[str, Any], metric: str) -> tuple[list[str], list[list[str]]]:
    """The summary as a grid: header ``[method, mode, k=..]`` and one row per (method, mode), in %.

    Methods that do not depend on k (linear-probe, clap-zero-shot, majority, random-label) show their one value under every k,
    so they read as the reference line the method must clear.
    """
    summary = results["summary"]
    ks = list(results["config"]["k"])
    units = len(results["config"]["folds"])
    index = {(e["method"], e["k"], e["mode"]): e for e in summary}
    header = ["method", "mode"] + [f"k={k}" for k in ks]
    grid = []
    for method, mode in _rows(summary):
        row = [method + (" (any k)" if (method, None, mode) in index else ""), mode or "-"]
        for k in ks:
            entry = index.get((method, k, mode)) or index.get((method, None, mode))
            row.append(_cell(entry, metric, units))
        grid.append(row)
    return header, grid


def render_markdown(results: Mapping[str, Any]) -> str:
    """results.md: what was run, the summary tables with baselines beside icl, per-fold numbers, notes."""
    multi = results["multi_label"]
    primary, secondary = metric_names(multi)
    cfg = results["config"]
    units = cfg["folds"]
    unit_word = "folds" if all(isinstance(u, int) for u in units) else "split"
    lines = [
        f"# {results['title']}: in-context learning vs baselines",
        "",
        f"- dataset: `{results['dataset']}` at `{results['root']}` ({results['protocol']} protocol; evaluated {unit_word}: "
        f"{', '.join(str(u) for u in units)})",
        f"- model: `{results['model']['id']}` @ `{results['model'].get('revision')}`; codec: `{results['codec']['id']}` @ "
        f"`{results['codec'].get('revision')}`; icl-audio {results['icl_audio_version']}",
        f"- k: {', '.join(map(str, cfg['k']))}; modes: {', '.join(cfg['mode'])}; methods: {', '.join(cfg['methods'])}; "
        f"seed: {cfg['seed']}; limit: {cfg['limit'] if cfg['limit'] is not None else 'none (every query)'}",
        "",
    ]
    for metric in (primary, secondary):
        header, grid = table_grid(results, metric)
        spread = " (mean ± std over folds)" if len(units) > 1 else ""
        lines += [f"## {METRIC_TITLES[metric]} (%){spread}", "", _md_table(header, grid), ""]
    lines += ["## Per fold", ""]
    header = ["fold", "method", "k", "mode", "queries", METRIC_TITLES[primary], METRIC_TITLES[secondary], "seconds"]
    rows = []
    for run in sorted(results["runs"], key=lambda r: (str(r["fold"]), config_key(r["method"], r["k"], r["mode"]))):
        rows.append([
            str(run["fold"]), run["method"], "-" if run["k"] is None else str(run["k"]), run["mode"] or "-",
            str(run["n_queries"]) + (f" (+{run['n_failed']} unreadable)" if run.get("n_failed") else ""),
            _pct(run.get(primary)), _pct(run.get(secondary)), f"{run['seconds']:.2f}",
        ])
    lines += [_md_table(header, rows), "", "## Notes", ""]
    lines += [f"- {note}" for note in results["notes"]]
    lines += [f"- skipped: {s['method']} at k={s['k']}: {s['reason']}" for s in results["skipped"]]
    lines += ["", "## Files", ""]
    lines += [f"- `{name}`: {what}" for name, what in results["files"].items()]
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{100 * value:.1f}"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def _figure(width: float, height: float):
    # Figure + Agg canvas, never pyplot: no global backend state, no display needed, thread-safe.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def plot_metric_vs_k(results: Mapping[str, Any]) -> bytes:
    """PNG: the primary metric against k, one line per (method, mode) with std error bars.

    k-independent methods (linear-probe, clap-zero-shot, majority, random-label) are horizontal lines.
    """
    metric = metric_names(results["multi_label"])[0]
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    ks = list(results["config"]["k"])
    by_row: dict[tuple, list[Mapping[str, Any]]] = {}
    for entry in results["summary"]:
        by_row.setdefault((entry["method"], entry["mode"]), []).append(entry)
    for (method, mode), entries in sorted(by_row.items(), key=lambda kv: config_key(kv[0][0], None, kv[0][1])):
        label = method + (f" ({mode})" if mode else "")
        if entries[0]["k"] is None:
            mean = entries[0][f"{metric}_mean"]
            if isinstance(mean, float) and mean == mean:
                color, dash = FLAT_STYLE.get(method, ("black", "--"))
                ax.axhline(100 * mean, linestyle=dash, linewidth=1.2, label=label, color=color)
            continue
        entries = sorted((e for e in entries if isinstance(e[f"{metric}_mean"], float) and e[f"{metric}_mean"] == e[f"{metric}_mean"]),
                         key=lambda e: e["k"])
        if not entries:
            continue
        xs = [e["k"] for e in entries]
        ys = [100 * e[f"{metric}_mean"] for e in entries]
        errs = [100 * e[f"{metric}_std"] for e in entries]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=label)
    ax.set_ylim(bottom=0)  # a zoomed axis would make a one-point gap look like a leap
    ax.set_xticks(ks)
    ax.set_xlabel("k (demonstrations / neighbours)")
    ax.set_ylabel(f"{METRIC_TITLES[metric]} (%)")
    ax.set_title(f"{results['title']}: {METRIC_TITLES[metric]} against k")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_confusion(labels: Sequence[str], counts, title: str) -> bytes:
    """PNG: a confusion matrix (rows: true class, columns: predicted), counts annotated when small."""
    import numpy as np

    counts = np.asarray(counts)
    n = len(labels)
    size = min(max(4.0, 0.28 * n + 2.5), 18.0)
    fig = _figure(size, size)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    font = max(4, min(9, int(200 / max(n, 1))))
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=90, fontsize=font)
    ax.set_yticklabels(labels, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    if n <= 20:
        peak = counts.max() if counts.size else 0
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=font,
                            color="white" if counts[i, j] > peak / 2 else "black")
    return _png(fig)


def jsonable(value: Any) -> Any:
    """``value`` with NaN/inf floats as None, so the JSON is strict (no NaN literals)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_reports(out: Path, results: Mapping[str, Any], confusion: tuple[str, Sequence[str], Any] | None) -> None:
    """Write results.json, results.md and the plots into ``out`` (each atomically).

    ``confusion``: (title, labels, counts) of the best single-label configuration, or None.
    """
    out = Path(out)
    atomic_write(out / "results.json", json.dumps(jsonable(results), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write(out / "results.md", render_markdown(results))
    metric = metric_names(results["multi_label"])[0]
    atomic_write(out / f"{metric_plot_name(metric)}", plot_metric_vs_k(results))
    if confusion is not None:
        title, labels, counts = confusion
        atomic_write(out / "confusion.png", plot_confusion(labels, counts, title))


def metric_plot_name(metric: str) -> str:
    """File name of the metric-against-k plot."""
    return "accuracy_vs_k.png" if metric == "accuracy" else "map_vs_k.png"


def _console(file=None):
    """A rich console on ``file`` (stdout by default); wide when not a terminal, so piped tables are not cut."""
    from rich.console import Console

    console = Console(file=file)
    return console if console.is_terminal else Console(file=file, width=200)


def rich_table(title: str, header: Sequence[str], grid: Iterable[Sequence[str]], *, left: int = 1, caption: str | None = None):
    """A rich Table of ``grid`` under ``header``: the first ``left`` columns left-aligned, the others right."""
    from rich.table import Table

    table = Table(title=title, caption=caption, caption_justify="left")
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i < left else "right")
    for row in grid:
        table.add_row(*row)
    return table


def print_summary(results: Mapping[str, Any], file=None) -> None:
    """Print the summary tables (primary and secondary metric) on stdout with rich."""
    console = _console(file)
    units = results["config"]["folds"]
    for metric in metric_names(results["multi_label"]):
        header, grid = table_grid(results, metric)
        spread = ", mean ± std over folds " + ",".join(map(str, units)) if len(units) > 1 else f", {units[0]}"
        console.print(rich_table(f"{results['title']}: {METRIC_TITLES[metric]} (%){spread}", header, grid, left=2))
    for s in results["skipped"]:
        console.print(f"skipped {s['method']} at k={s['k']}: {s['reason']}", markup=False, highlight=False)
