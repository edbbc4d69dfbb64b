"""Episode results (rank 0): per-episode accuracy, mean and 95% interval per method, mode and K; the reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from icl_audio.bench import report
from icl_audio.bench.clap import CLAP_TEMPLATE
from icl_audio.bench.config import BenchConfig
from icl_audio.bench.metrics import mean_ci95
from icl_audio.fsutil import atomic_write

if TYPE_CHECKING:
    from icl_audio.bench.episode_run import EpisodeBench
    from icl_audio.recipes import Recipe

METHOD_ORDER = ("icl", "prototype", "nearest", "clap-zero-shot", "random-label")


def episode_stats(lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The figures of one run from its lines (one per episode and query).

    An episode's accuracy is the fraction of its readable queries whose top label is the truth;
    episodes without a readable query are left out (``n_failed`` counts their lines too). icl lines
    add the crop figures: tokens kept per demonstration (mean over episodes of the episode's mean,
    and the smallest), query tokens kept, and how many episodes were cropped.
    """
    per_episode: dict[int, list[bool]] = {}
    failed = 0
    seconds = 0.0
    cropped: set[int] = set()
    leaked: set[int] = set()
    demo_means: dict[int, float] = {}
    demo_min: list[int] = []
    query_tokens: list[int] = []
    for line in lines:
        seconds += float(line.get("seconds", 0.0))
        e = int(line["episode"])
        if line.get("query_in_support"):
            leaked.add(e)
        if "error" in line or not line.get("ranked"):
            failed += 1
            continue
        per_episode.setdefault(e, []).append(line["ranked"][0][0] == line["truth"][0])
        if "demo_tokens" in line:
            kept = [int(x) for x in line["demo_tokens"]]
            demo_means[e] = sum(kept) / max(len(kept), 1)
            demo_min.append(min(kept, default=0))
            query_tokens.append(int(line.get("query_tokens", 0)))
            if line.get("cropped"):
                cropped.add(e)
    accuracies = [sum(hits) / len(hits) for hits in per_episode.values()]
    mean, std, ci95 = mean_ci95(accuracies)
    stats: dict[str, Any] = {
        "episodes": len(per_episode),
        "n_queries": len(lines) - failed,
        "n_failed": failed,
        "accuracy_mean": mean,
        "accuracy_std": std,
        "accuracy_ci95": ci95,
        "seconds": round(seconds, 6),
        "seconds_per_query": round(seconds / len(lines), 6) if lines else None,
        "episodes_query_in_support": len(leaked),
    }
    if demo_means:
        stats.update({
            "demo_tokens_mean": round(sum(demo_means.values()) / len(demo_means), 2),
            "demo_tokens_min": min(demo_min),
            "query_tokens_mean": round(sum(query_tokens) / len(query_tokens), 2),
            "cropped_episodes": len(cropped),
        })
    return stats


def _model_meta(engine, out: Path, cfg: BenchConfig) -> tuple[dict, dict]:
    """Model and codec ids/revisions: from the loaded models, else the previous results.json, else the names asked for."""
    clf = getattr(engine, "_clf", None) if engine is not None else None
    if clf is not None and clf._lm is not None and clf._codec is not None:
        from icl_audio.support import model_meta

        meta = model_meta(clf.codec_model, clf.lm)
        return {**meta["model"], "requested": cfg.model}, {**meta["codec"], "requested": cfg.codec}
    try:
        previous = json.loads((out / "results.json").read_text(encoding="utf-8"))
        return previous["model"], previous["codec"]
    except (OSError, ValueError, KeyError, TypeError):
        return {"id": cfg.model, "revision": None, "requested": cfg.model}, {"id": cfg.codec, "revision": None, "requested": cfg.codec}


def _notes(cfg: BenchConfig, recipe: "Recipe", bench: "EpisodeBench", max_seconds: float) -> list[str]:
    metaaudio = cfg.protocol == "metaaudio"
    notes = [
        "accuracy: per episode, the fraction of its queries whose top-ranked label is the true one; accuracy_mean: "
        "the mean over episodes; accuracy_ci95 = 1.96 x std / sqrt(episodes), population std (ddof=0) over the "
        "per-episode accuracies, as in the few-shot literature (MetaAudio reports mean +- this interval).",
    ]
    if cfg.episodes_file is not None:
        notes.append(f"episodes: read from {cfg.episodes_file} (run exactly as listed; copied to episodes.jsonl); "
                     "candidates of an episode = the distinct labels of its demonstrations.")
    else:
        notes.append(
            f"episodes: {cfg.way} classes drawn uniformly without replacement from the pool's classes, then per class "
            f"{cfg.queries} {'query' if cfg.queries == 1 else 'queries'} and K support clips, disjoint (hash orders of "
            f"the episode's seed; run seed {cfg.seed}); the supports shown in one seeded order per episode; the K = "
            f"{', '.join(map(str, cfg.shots))} episodes of one index share classes and queries. episodes.jsonl lists every "
            "episode (support in prompt order, the seed its random baselines use); --episodes-file replays it.")
    if metaaudio:
        notes.append("pool (MetaAudio): its 10 fixed ESC-50 test classes (vacuum_cleaner, sneezing, thunderstorm, crow, "
                     "glass_breaking, church_bells, cow, dog, airplane, engine), every clip of them; its 35 training classes "
                     "only centre the prototype baseline (SimpleShot's base classes); its 5 validation classes are unused.")
    elif cfg.episodes_file is None:
        where = f"folds/splits {','.join(map(str, cfg.folds))} of " if cfg.folds else \
            ("every fold and split of " if cfg.source is None else "")
        notes.append(f"pool: every clip of {where}{recipe.title or recipe.name}, all its classes: a training-free "
                     "learner fits nothing, so no clip is held out for training; within an episode queries and supports "
                     "are disjoint.")
    if bench.excluded:
        notes.append("classes with too few clips for an episode, not drawn: "
                     + ", ".join(f"{k} ({v})" for k, v in sorted(bench.excluded.items())))
    notes.append(
        "icl: the episode's N x K demonstrations in its order, then the query; the candidates are the episode's N labels; "
        f"scoring as the fold protocol's icl ({SCORING_DEFAULTS_TEXT}). The prompt must fit Llasa's 2,048-token "
        "context: when the demonstrations do not fit, every clip of the episode is cropped to one common length "
        "(its centre kept), once per episode, every demonstration kept (K shown), each query keeping up to twice a "
        "demonstration's share. demo_tokens_mean: audio tokens kept per demonstration (50 per second); "
        "cropped_episodes: how many episodes were cropped (their lines say cropped: true). The queries of an episode "
        "share the demonstrations' keys and values, computed once per episode.")
    centre = ("the mean embedding of the base classes' clips" if bench.base_keys
              else "the mean embedding of the episode's support clips (the source has no classes outside the evaluation)")
    notes.append("prototype: SimpleShot CL2N on the retrieval embeddings (mean-pooled speech-token embeddings): centred by "
                 f"{centre}, L2-normalised, nearest class mean (Euclidean). nearest: the label of the most similar support "
                 "clip (cosine, 1-NN). random-label: uniform random scores, seeded by the episode's seed and the query.")
    if "clap-zero-shot" in cfg.methods:
        notes.append(f"clap-zero-shot: {cfg.clap_model}, each label as \"{CLAP_TEMPLATE.format(label='<label>')}\", ranked "
                     "among the episode's N labels; no support clip is used.")
    notes.append(f"clips: read up to {max_seconds:g} s, the head kept; shorter clips are not padded.")
    notes.append("seconds_per_query: time spent predicting, per query line (an episode's shared work split over its "
                 "queries); it excludes encoding the clips, which happens once per clip.")
    leaks = sorted({e.index for e in bench.episodes if e.leaked})
    if leaks:
        notes.append(f"{len(leaks)} of {len(bench.episodes)} episodes have a query that is also one of their demonstrations "
                     f"(kept as listed, lines marked query_in_support; episodes {', '.join(map(str, leaks[:20]))}"
                     f"{' ...' if len(leaks) > 20 else ''}): their accuracy is not a held-out measure.")
    if metaaudio:
        from icl_audio.bench import metaaudio as ma

        notes.append(f"published rows: {ma.SOURCE}; {ma.INPUTS_NOTE}. Not the same experiment: the bar to compare against.")
    return notes


SCORING_DEFAULTS_TEXT = "summed log-likelihood of each label, uncalibrated, softmax over the candidates"


def finish_episodes(cfg: BenchConfig, recipe: "Recipe", root: Path, bench: "EpisodeBench", out: Path,
                    max_seconds: float, engine=None) -> dict[str, Any]:
    """Merge every run, compute its figures and write results.json / results.md / accuracy_vs_shot.png."""
    from icl_audio import __version__
    from icl_audio.bench.episode_run import merge_episode_run

    model, codec = _model_meta(engine, out, cfg)
    runs = []
    for run in bench.runs:
        lines = merge_episode_run(out, bench, run)
        runs.append({
            "dataset": recipe.name, "method": run.method, "mode": run.mode, "way": run.way, "shot": run.shot,
            "k": run.shot, **episode_stats(lines), "predictions": f"predictions/{run.name}.jsonl",
            "model_id": model.get("id"), "model_revision": model.get("revision"), "codec_id": codec.get("id"),
            "codec_revision": codec.get("revision"), "icl_audio_version": __version__,
        })
    runs.sort(key=lambda r: (r["way"], r["shot"] or 0, *_order(r["method"], r["mode"])))
    published = None
    if cfg.protocol == "metaaudio":
        from icl_audio.bench import metaaudio as ma

        published = {"source": ma.SOURCE, "inputs": ma.INPUTS_NOTE,
                     "rows": [{"method": m, **{f"{k}shot": {"accuracy": a, "ci95": c} for k, (a, c) in v.items()}}
                              for m, v in ma.PUBLISHED]}
    results = {
        "dataset": recipe.name,
        "title": recipe.title or recipe.name,
        "root": str(root),
        "protocol": "metaaudio" if cfg.protocol == "metaaudio" else "episodes",
        "multi_label": False,
        "metrics": ["accuracy"],
        "model": model,
        "codec": codec,
        "icl_audio_version": __version__,
        "config": {
            "episodes": cfg.episodes, "way": cfg.way, "shot": list(cfg.shots), "queries": cfg.queries,
            "episodes_file": None if cfg.episodes_file is None else str(cfg.episodes_file),
            "mode": list(cfg.modes), "methods": list(cfg.methods), "seed": cfg.seed, "clip_seconds": max_seconds,
            "folds": None if cfg.folds is None else list(cfg.folds), "pool_classes": list(bench.pool_classes),
            "excluded_classes": dict(bench.excluded),
            "prototype_centre": "base classes" if bench.base_keys else "episode supports",
            **({"clap_model": cfg.clap_model} if "clap-zero-shot" in cfg.methods else {}),
        },
        "runs": runs,
        "summary": runs,  # one entry per method, mode and (N, K) already: nothing to average over
        "published": published,
        "notes": _notes(cfg, recipe, bench, max_seconds),
        "files": {
            "results.json": "every run (method x mode x N-way K-shot) with its mean, std and 95% interval over episodes",
            "results.md": "this report",
            "accuracy_vs_shot.png": "accuracy against K per method, 95% intervals",
            "episodes.jsonl": "one line per episode: seed, support clips in prompt order, queries",
            "predictions/episodes.<N>way<K>shot.<method>[.<mode>].jsonl": "one line per episode and query: episode, "
            "query, truth, ranked labels with scores (icl: prompt tokens, tokens kept per demonstration, cropped)",
        },
    }
    atomic_write(out / "results.json", json.dumps(report.jsonable(results), indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write(out / "results.md", render_episode_markdown(results))
    atomic_write(out / "accuracy_vs_shot.png", plot_accuracy_vs_shot(results))
    for rank_dir in (out / "predictions").glob("rank*"):
        try:
            rank_dir.rmdir()
        except OSError:
            pass
    return results


def _order(method: str, mode: str | None) -> tuple[int, int]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER),
            report.MODE_ORDER.index(mode) if mode in report.MODE_ORDER else len(report.MODE_ORDER))


def _cell(run: Mapping[str, Any] | None) -> str:
    if run is None:
        return "-"
    mean, ci = run.get("accuracy_mean"), run.get("accuracy_ci95")
    if mean is None or mean != mean:
        return "n/a"
    return f"{100 * mean:.2f} ± {100 * ci:.2f}"


def episode_grid(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The summary as a grid: ``[method, mode, <N>-way <K>-shot ..., s/query]``, accuracy % ± 95% interval."""
    runs = results["runs"]
    groups = list(dict.fromkeys((r["way"], r["shot"]) for r in runs))
    rows = sorted(dict.fromkeys((r["method"], r["mode"]) for r in runs), key=lambda mm: _order(*mm))
    index = {(r["method"], r["mode"], r["way"], r["shot"]): r for r in runs}
    header = ["method", "mode"] + [f"{w}-way {'?' if k is None else k}-shot" for w, k in groups] + ["s/query"]
    grid = []
    for method, mode in rows:
        cells = [index.get((method, mode, w, k)) for w, k in groups]
        secs = [c["seconds_per_query"] for c in cells if c and c.get("seconds_per_query") is not None]
        grid.append([method, mode or "-"] + [_cell(c) for c in cells] + [f"{sum(secs) / len(secs):.3g}" if secs else "-"])
    return header, grid


def published_grid(results: Mapping[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """MetaAudio's published rows in the same columns (5-way 1-shot, 5-way 5-shot), or None."""
    published = results.get("published")
    if not published:
        return None
    shots = [1, 5]
    header = ["published (MetaAudio)"] + [f"5-way {k}-shot" for k in shots]
    grid = []
    for row in published["rows"]:
        cells = []
        for k in shots:
            value = row.get(f"{k}shot")
            cells.append("-" if value is None else f"{value['accuracy']:.2f}"
                         + (f" ± {value['ci95']:.2f}" if value.get("ci95") is not None else ""))
        grid.append([row["method"] + " †"] + cells)
    return header, grid


def _crop_rows(results: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for r in results["runs"]:
        if "demo_tokens_mean" in r:
            rows.append([r["method"], r["mode"] or "-", f"{r['way']}-way {r['shot']}-shot", f"{r['demo_tokens_mean']:.1f}",
                         str(r["demo_tokens_min"]), f"{r['query_tokens_mean']:.1f}", f"{r['cropped_episodes']} of {r['episodes']}"])
    return rows


def render_episode_markdown(results: Mapping[str, Any]) -> str:
    """results.md of an episode bench: what was run, the table (± 95% intervals), crops, published rows, notes."""
    cfg = results["config"]
    model, codec = results["model"], results["codec"]
    title = "MetaAudio ESC-50 protocol" if results["protocol"] == "metaaudio" else "N-way K-shot episodes"
    lines = [f"# {results['title']}: {title}", ""]
    lines += [f"- root: `{results['root']}`",
              f"- model: `{model.get('id')}` (revision `{model.get('revision')}`); codec: `{codec.get('id')}` "
              f"(revision `{codec.get('revision')}`)",
              f"- episodes: {results['runs'][0]['episodes'] if results['runs'] else 0} per configuration"
              + (f", from `{cfg['episodes_file']}`" if cfg.get("episodes_file") else
                 f"; {cfg['way']}-way, K = {', '.join(map(str, cfg['shot']))}, {cfg['queries']} query(ies) per class, seed {cfg['seed']}"),
              f"- methods: {', '.join(cfg['methods'])}; modes (icl): {', '.join(cfg['mode'])}; clips up to {cfg['clip_seconds']:g} s",
              f"- icl-audio {results['icl_audio_version']}", ""]
    header, grid = episode_grid(results)
    lines += ["## Accuracy (%, mean ± 95% interval over episodes)", "", report._md_table(header, grid), ""]
    crops = _crop_rows(results)
    if crops:
        lines += ["## Context budget (icl)", "",
                  report._md_table(["method", "mode", "episodes", "tokens kept per demonstration (mean)", "(min)",
                                    "query tokens (mean)", "cropped episodes"], crops), ""]
    published = published_grid(results)
    if published is not None:
        lines += ["## Published († other protocols' inputs: log-mel spectrograms and trained backbones)", "",
                  report._md_table(*published), ""]
    lines += ["## Notes", ""] + [f"- {note}" for note in results["notes"]]
    lines += ["", "## Files", ""] + [f"- `{name}`: {what}" for name, what in results["files"].items()]
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_shot(results: Mapping[str, Any]) -> bytes:
    """PNG: accuracy against K, one line per (method, mode), 95% intervals as error bars."""
    fig = report._figure(6.4, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    by_row: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in results["runs"]:
        if r["shot"] is not None and r["accuracy_mean"] == r["accuracy_mean"]:
            by_row.setdefault((r["method"], r["mode"]), []).append(r)
    for (method, mode), runs in sorted(by_row.items(), key=lambda kv: _order(*kv[0])):
        runs = sorted(runs, key=lambda r: r["shot"])
        ax.errorbar([r["shot"] for r in runs], [100 * r["accuracy_mean"] for r in runs],
                    yerr=[100 * r["accuracy_ci95"] for r in runs], marker="o", capsize=3,
                    label=method + (f" ({mode})" if mode else ""))
    ax.set_ylim(0, 100)
    ax.set_xlabel("K (support clips per class)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{results['title']}: {results['runs'][0]['way'] if results['runs'] else ''}-way accuracy against K")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return report._png(fig)


def print_episode_summary(results: Mapping[str, Any], file=None) -> None:
    """Print the episode table (and MetaAudio's published rows) on stdout with rich."""
    console = report._console(file)
    header, grid = episode_grid(results)
    n = results["runs"][0]["episodes"] if results["runs"] else 0
    console.print(report.rich_table(f"{results['title']}: accuracy (%), mean ± 95% interval over {n} episodes", header, grid,
                                    left=2))
    for r in results["runs"]:
        if r.get("cropped_episodes"):
            console.print(f"{r['method']} {r['mode']} {r['way']}-way {r['shot']}-shot: {r['cropped_episodes']} of "
                          f"{r['episodes']} episodes cropped to fit the context, {r['demo_tokens_mean']:.0f} audio tokens kept "
                          f"per demonstration ({r['demo_tokens_mean'] / 50:.2f} s)", markup=False, highlight=False)
    published = published_grid(results)
    if published is not None:
        console.print(report.rich_table("Published, MetaAudio ESC-50 (%)", *published))
        console.print(f"† {results['published']['inputs']}", markup=False, highlight=False, soft_wrap=True)
