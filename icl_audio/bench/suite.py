"""`bench suite`: run the ARCH bench over several datasets from one TOML file, beside the X-Codec paper's probes."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from icl_audio.bench import report
from icl_audio.bench.arch import run_bench
from icl_audio.bench.config import BenchConfig, BenchError, validate
from icl_audio.fsutil import atomic_write

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib
from icl_audio.bench.distributed import Dist

#: X-Codec paper (Table 5): linear probes on frozen features, trained on each dataset's full
#: training split; accuracy, or mAP for FSD50K and MTT, in %. A different protocol from ours.
PAPER_LINEAR_PROBES: dict[str, dict[str, float]] = {
    "DAC": {"ESC-50": 27.65, "US8K": 45.16, "FSD50K": 7.08, "VIVAE": 30.80, "FMA": 38.50, "MTT": 27.69, "IRMAS": 30.33,
            "MS-DB": 51.79, "RAVDESS": 37.50, "A-MNIST": 73.59, "SLURP": 7.72, "EMOVO": 23.46},
    "Encodec": {"ESC-50": 30.60, "US8K": 64.47, "FSD50K": 8.63, "VIVAE": 31.59, "FMA": 39.5, "MTT": 26.57, "IRMAS": 28.16,
                "MS-DB": 64.47, "RAVDESS": 31.60, "A-MNIST": 78.71, "SLURP": 8.44, "EMOVO": 25.51},
    "HuBERT-general-audio": {"ESC-50": 69.95, "US8K": 74.87, "FSD50K": 34.27, "VIVAE": 48.35, "FMA": 64.50, "MTT": 43.35,
                             "IRMAS": 49.80, "MS-DB": 74.09, "RAVDESS": 69.10, "A-MNIST": 99.43, "SLURP": 21.27, "EMOVO": 35.03},
    "X-Codec": {"ESC-50": 69.85, "US8K": 75.37, "FSD50K": 34.05, "VIVAE": 49.40, "FMA": 64.63, "MTT": 42.95, "IRMAS": 52.24,
                "MS-DB": 75.63, "RAVDESS": 68.40, "A-MNIST": 99.48, "SLURP": 21.65, "EMOVO": 35.20},
}
#: ARCH's own results page (same columns): linear probes on other frozen backbones.
_ARCH_COLUMNS = ("ESC-50", "US8K", "FSD50K", "VIVAE", "FMA", "MTT", "IRMAS", "MS-DB", "RAVDESS", "A-MNIST", "SLURP", "EMOVO")
ARCH_PUBLISHED: dict[str, dict[str, float]] = {
    name: dict(zip(_ARCH_COLUMNS, values)) for name, values in {
        "hubert-base-ls960": (58.90, 67.28, 24.53, 40.48, 54.63, 38.78, 36.65, 58.46, 65.28, 99.58, 33.75, 40.48),
        "ALM/hubert-base-audioset": (68.80, 79.09, 31.05, 40.06, 65.87, 43.44, 47.67, 67.81, 63.54, 98.84, 20.53, 33.39),
        "wavlm-large": (67.20, 70.92, 32.21, 42.51, 61.13, 41.29, 42.53, 68.00, 71.76, 99.75, 42.34, 45.29),
    }.items()
}
#: Every published row shown beside ours: the X-Codec paper's Table 5, then ARCH's results page.
PUBLISHED = {**{f"{m} (X-Codec paper)": v for m, v in PAPER_LINEAR_PROBES.items()},
             **{f"{m} (ARCH)": v for m, v in ARCH_PUBLISHED.items()}}
#: Our recipe name -> the paper's column.
PAPER_COLUMNS = {
    "esc50": "ESC-50", "us8k": "US8K", "fsd50k": "FSD50K", "vivae": "VIVAE", "fma-small": "FMA", "mtt": "MTT",
    "irmas": "IRMAS", "medley-solos-db": "MS-DB", "ravdess": "RAVDESS", "audiomnist": "A-MNIST", "slurp": "SLURP",
    "emovo": "EMOVO",
}
PROBE_MODEL = "X-Codec"
PROTOCOL_NOTE = (
    f"{PROBE_MODEL} linear probe: published number (X-Codec paper, Table 5) for a linear classifier trained on "
    "frozen codec features over the full training split -- a different protocol. Our columns are in-context "
    "learning with k retrieved demonstrations and no training, and its baselines on the same retrieval; our "
    "linear-probe is ARCH's probe trained on our retrieval embeddings (Llasa's speech-token embeddings), not on "
    "the published backbones."
)

# Settings a suite file may give at top level (shared) or per dataset; key -> BenchConfig field.
_SETTINGS = {"k": "ks", "mode": "modes", "modes": "modes", "methods": "methods", "limit": "limit", "model": "model",
             "codec": "codec", "device": "device", "seed": "seed", "folds": "folds", "protocol": "protocol",
             "clip_seconds": "clip_seconds", "clap_model": "clap_model", "probe_epochs": "probe_epochs",
             "hf": "hf", "config": "hf_config", "audio_root": "audio_root",
             "episodes": "episodes", "way": "way", "shot": "shots", "queries": "queries", "episodes_file": "episodes_file",
             "kfold": "kfold"}
_LISTS = ("ks", "modes", "methods", "folds", "shots")


@dataclass(frozen=True)
class SuiteSpec:
    """A parsed suite file: one BenchConfig per dataset, and the suite's output folder."""

    configs: tuple[BenchConfig, ...]
    out: Path
    source: Path


def _setting(cfg: BenchConfig, key: str, value: Any, where: str, base_dir: Path = Path(".")) -> BenchConfig:
    field = _SETTINGS.get(key)
    if field is None:
        raise BenchError(f"{where}: unknown setting {key!r} (known: root, out, {', '.join(sorted(_SETTINGS))})")
    if field in _LISTS and isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if field in _LISTS and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if field == "episodes_file" and isinstance(value, str):
        value = Path(value).expanduser()
        value = value if value.is_absolute() else base_dir / value
    return replace(cfg, **{field: value})


def load_suite(path: Path, *, out: Path | None = None) -> SuiteSpec:
    """Read a suite TOML file. Accepted shape::

        k = [0, 1, 4, 8]           # shared settings, all optional: k, mode, methods, limit, model,
        limit = 200                #   codec, device, seed, folds, protocol, out; episodes, way, shot,
        out = "bench-results"      #   queries, episodes_file, kfold
        [datasets]
        esc50 = "/data/ESC-50-master"                    # name = root
        fsd50k = { root = "/data/FSD50K", limit = 100 }  # or a table: root + per-dataset settings
        gtzan = { hf = "marsyas/gtzan" }                 # or its hub copy (hf, config) in place of root
        arca23k-fsd = { root = "/data/ARCA23K", audio_root = "/data/FSD50K" }
        meta = { dataset = "esc50", root = "/data/ESC-50-master", protocol = "metaaudio", episodes = 1000 }
        mine = { folder = "/data/my-sounds", episodes = 200, way = 5, shot = [1, 5] }  # own data
        calls = { csv = "/data/calls.csv", kfold = 5 }

    A table may name its recipe with ``dataset`` (so one dataset can appear twice, e.g. its folds and
    its episodes), or give the user's own data as ``folder`` or ``csv`` instead of ``root``. The
    shared ``k``, ``limit`` and ``methods`` belong to the fold protocol: entries that run episodes
    ignore them (give ``methods`` in the entry).
    Relative roots, sources, episode files and ``out`` are taken relative to the file. Every config
    is validated here, so a typo fails before the first dataset runs.
    """
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchError(f"suite file {path}: not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"suite file {path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"suite file {path}: invalid TOML ({exc})") from None
    from icl_audio.recipes import get_recipe

    base_dir = path.resolve().parent
    datasets = data.pop("datasets", None)
    if not isinstance(datasets, dict) or not datasets:
        raise BenchError(f"suite file {path}: needs a [datasets] table, e.g. esc50 = \"/data/ESC-50-master\"")
    file_out = data.pop("out", None)
    if out is not None:
        suite_out = Path(out)
    elif file_out is not None:
        if not isinstance(file_out, str):
            raise BenchError(f"suite file {path}: out must be a folder path (a string)")
        suite_out = Path(file_out).expanduser()
        suite_out = suite_out if suite_out.is_absolute() else base_dir / suite_out
    else:
        suite_out = Path("bench-results")
    configs = []
    for name, entry in datasets.items():
        where = f"suite file {path}, [datasets] {name}"
        if isinstance(entry, str):
            entry = {"root": entry}
        entry = dict(entry) if isinstance(entry, dict) else entry
        kinds = [k for k in ("folder", "csv") if isinstance(entry, dict) and k in entry]
        if isinstance(entry, dict) and kinds:
            if len(kinds) > 1 or "root" in entry or "dataset" in entry or "hf" in entry:
                raise BenchError(f"{where}: give one of root or hf (a dataset), folder or csv")
            if not isinstance(entry[kinds[0]], str):
                raise BenchError(f"{where}: {kinds[0]} must be a path (a string)")
            source = Path(entry.pop(kinds[0])).expanduser()
            cfg = BenchConfig(dataset=kinds[0], root=source if source.is_absolute() else base_dir / source,
                              source=kinds[0], out=Path(suite_out) / name)
        else:
            if not isinstance(entry, dict) or not isinstance(entry.get("root", entry.get("hf")), str):
                raise BenchError(f"{where}: give the dataset folder, e.g. {name} = \"/data/{name}\" or {{ root = \"...\" }}, "
                                 "its hub copy { hf = \"OWNER/NAME\" } (own data: { folder = \"...\" } or { csv = \"...\" })")
            given = entry.pop("dataset", None)
            recipe = get_recipe(str(given if given is not None else name))
            entry = {k: (_relative(v, base_dir) if k in ("root", "audio_root") and isinstance(v, str) else v)
                     for k, v in entry.items()}
            cfg = BenchConfig(dataset=recipe.name, root=entry.pop("root", None),
                              out=Path(suite_out) / (recipe.name if given is None else name))
        for key, value in data.items():
            cfg = _setting(cfg, key, value, f"suite file {path}", base_dir)
        for key, value in entry.items():
            cfg = _setting(cfg, key, value, where, base_dir)
        if cfg.is_episodes:  # the shared fold settings do not apply to an episode entry (its own do, and fail)
            cfg = replace(cfg, **{f: None for k, f in (("k", "ks"), ("limit", "limit"), ("methods", "methods"))
                                  if k not in entry})
        validate(cfg)
        configs.append(cfg)
    return SuiteSpec(tuple(configs), Path(suite_out), path)


def _relative(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def headline(results: Mapping[str, Any]) -> dict[str, Any]:
    """One dataset's row: the primary metric of icl (best k/mode), knn (best k), majority, random-label."""
    metric = results["metrics"][0]

    def best(method: str) -> dict[str, Any] | None:
        entries = [e for e in results["summary"] if e["method"] == method and _num(e.get(f"{metric}_mean")) is not None]
        if not entries:
            return None
        top = max(entries, key=lambda e: e[f"{metric}_mean"])
        return {"value": top[f"{metric}_mean"], "std": top.get(f"{metric}_std"), "k": top["k"], "mode": top["mode"]}

    paper = PAPER_COLUMNS.get(results["dataset"])
    return {
        "dataset": results["dataset"],
        "title": results["title"],
        "metric": metric,
        "folds": results["config"]["folds"],
        "icl": best("icl"),
        "icl-random-demos": best("icl-random-demos"),
        "knn": best("knn"),
        "linear-probe": best("linear-probe"),
        "clap-zero-shot": best("clap-zero-shot"),
        "majority": best("majority"),
        "random-label": best("random-label"),
        "paper_column": paper,
        "paper_linear_probe": PAPER_LINEAR_PROBES[PROBE_MODEL].get(paper) if paper else None,
    }


def _num(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and value == value else None


def run_suite(spec: SuiteSpec, *, dist: Dist | None = None, progress_factory=None) -> dict[str, Any] | None:
    """Run every dataset of ``spec`` in turn; rank 0 writes suite.json / suite.md and returns the rows."""
    dist = dist or Dist()
    rows, episode_rows = [], []
    for cfg in spec.configs:
        outcome = run_bench(cfg, dist=dist, progress_factory=progress_factory)
        if outcome.results is None:
            continue
        if outcome.results["protocol"] in ("episodes", "metaaudio"):
            episode_rows.append(episode_headline(outcome.results, cfg.out_dir.name))
        else:
            rows.append(headline(outcome.results))
    if not dist.is_main:
        return None
    result = {"suite": str(spec.source), "probe_model": PROBE_MODEL, "note": PROTOCOL_NOTE, "rows": rows,
              "episode_rows": episode_rows, "paper_linear_probes": PAPER_LINEAR_PROBES, "arch_published": ARCH_PUBLISHED}
    atomic_write(spec.out / "suite.json", json.dumps(report.jsonable(result), indent=2, ensure_ascii=False) + "\n")
    md = ["# ARCH suite: in-context learning beside the published linear probes", ""]
    grids = (suite_grid(result), published_grid(result)) if rows else ()
    for header, grid in grids + ((episode_suite_grid(result),) if episode_rows else ()):
        md += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        md += ["| " + " | ".join(row) + " |" for row in grid] + [""]
    if rows:
        md += [f"- {PROTOCOL_NOTE}", "- icl / knn: the best k (and mode) among those run, chosen on the evaluated folds "
               "themselves (an optimistic pick; results.md of each dataset has every k).",
               "- metric: accuracy, or mAP (macro) for multi-label datasets; in %, mean over folds.",
               "- second table: the published rows (X-Codec paper Table 5; ARCH's results page) over the same datasets, "
               "with our linear-probe and best icl beneath them."]
    if episode_rows:
        md += ["- episodes: accuracy in %, mean ± 95% interval (1.96 x std / sqrt(episodes)) over each source's "
               "N-way K-shot episodes; results.md of each source has the details (and MetaAudio's published rows)."]
    atomic_write(spec.out / "suite.md", "\n".join(md) + "\n")
    return result


def episode_headline(results: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One episode bench's rows for the suite: every method and mode at every N-way K-shot."""
    keep = ("method", "mode", "way", "shot", "episodes", "accuracy_mean", "accuracy_ci95", "seconds_per_query")
    return {"name": name, "title": results["title"], "protocol": results["protocol"],
            "runs": [{k: r.get(k) for k in keep} for r in results["runs"]]}


def episode_suite_grid(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The episode table: one row per source, method and mode; one column per N-way K-shot."""
    from icl_audio.bench.episode_report import _cell, _order

    groups = list(dict.fromkeys((r["way"], r["shot"]) for row in result["episode_rows"] for r in row["runs"]))
    header = ["source", "method", "mode"] + [f"{w}-way {'?' if k is None else k}-shot" for w, k in groups]
    grid = []
    for row in result["episode_rows"]:
        index = {(r["method"], r["mode"], r["way"], r["shot"]): r for r in row["runs"]}
        label = row["title"] + (" (MetaAudio)" if row["protocol"] == "metaaudio" else "")
        for method, mode in sorted(dict.fromkeys((r["method"], r["mode"]) for r in row["runs"]), key=lambda mm: _order(*mm)):
            grid.append([label, method, mode or "-"] + [_cell(index.get((method, mode, w, k))) for w, k in groups])
    return header, grid


def _fmt(entry: Mapping[str, Any] | None, show_k: bool = True) -> str:
    if entry is None or _num(entry.get("value")) is None:
        return "-"
    where = []
    if show_k and entry.get("k") is not None:
        where.append(f"k={entry['k']}")
    if show_k and entry.get("mode"):
        where.append(entry["mode"])
    return f"{100 * entry['value']:.1f}" + (f" ({', '.join(where)})" if where else "")


def suite_grid(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The suite table: one row per dataset, our methods then the paper's probe (different protocol, marked †)."""
    clap = any(row.get("clap-zero-shot") for row in result["rows"])
    header = ["dataset", "metric", "icl (best k)", "icl random demos", "knn (best k)", "linear probe"]
    header += ["CLAP zero-shot"] if clap else []
    header += ["majority", "random label", f"{PROBE_MODEL} linear probe †"]
    grid = []
    for row in result["rows"]:
        paper = row.get("paper_linear_probe")
        cells = [row["title"], report.METRIC_TITLES[row["metric"]], _fmt(row["icl"]), _fmt(row["icl-random-demos"]),
                 _fmt(row["knn"]), _fmt(row.get("linear-probe"), False)]
        cells += [_fmt(row.get("clap-zero-shot"), False)] if clap else []
        cells += [_fmt(row["majority"], False), _fmt(row["random-label"], False), f"{paper:.2f}" if paper is not None else "-"]
        grid.append(cells)
    return header, grid


def published_grid(result: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Published linear probes (rows) over the suite's datasets (columns), then our linear-probe and best icl."""
    rows = [r for r in result["rows"] if r.get("paper_column")]
    header = ["model (%)"] + [r["paper_column"] for r in rows]
    grid = [[name] + [f"{values[r['paper_column']]:.2f}" if r["paper_column"] in values else "-" for r in rows]
            for name, values in PUBLISHED.items()]
    grid.append(["linear-probe (ours: Llasa speech-token embeddings)"] + [_fmt(r.get("linear-probe"), False) for r in rows])
    grid.append(["icl (ours, best k)"] + [_fmt(r.get("icl"), False) for r in rows])
    return header, grid


def print_suite(result: Mapping[str, Any], file=None) -> None:
    """Print the suite table on stdout, the protocol difference spelled out under it."""
    console = report._console(file)
    if result["rows"]:
        console.print(report.rich_table("ARCH suite (%): in-context learning and baselines vs published linear probes",
                                        *suite_grid(result), left=2, caption="† " + PROTOCOL_NOTE))
        console.print(report.rich_table("Published linear probes (other backbones, full training split) and ours",
                                        *published_grid(result)))
    if result.get("episode_rows"):
        console.print(report.rich_table("N-way K-shot episodes: accuracy (%), mean ± 95% interval",
                                        *episode_suite_grid(result), left=3))
