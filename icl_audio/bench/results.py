"""Merge and metrics (rank 0): score every run from its merged lines, build results.json, write the reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from icl_audio.bench import report
from icl_audio.bench.clap import CLAP_TEMPLATE
from icl_audio.bench.config import BenchConfig
from icl_audio.bench.distributed import Dist
from icl_audio.bench.metrics import accuracy, confusion_matrix, macro_f1, mean_average_precision
from icl_audio.bench.plan import Unit
from icl_audio.bench.predict import _Engine
from icl_audio.bench.store import merge_run
from icl_audio.errors import ICLAudioError

if TYPE_CHECKING:
    from icl_audio.recipes import Recipe


def score_run(lines: Sequence[dict], multi_label: bool) -> tuple[dict[str, Any], tuple[list[str], list[str]] | None]:
    """Metrics of one run's lines (unreadable queries excluded and counted), and (truth, predicted) if single-label."""
    scored = [x for x in lines if "error" not in x and x.get("ranked")]
    metrics: dict[str, Any] = {"n_queries": len(scored), "n_failed": len(lines) - len(scored)}
    if not scored:
        nan = float("nan")
        metrics.update({"map_macro": nan, "map_weighted": nan} if multi_label else {"accuracy": nan, "macro_f1": nan})
        return metrics, None
    if multi_label:
        result = mean_average_precision([x["truth"] for x in scored], [dict((l, s) for l, s in x["ranked"]) for x in scored])
        metrics.update({"map_macro": result["map_macro"], "map_weighted": result["map_weighted"], "map_classes": result["classes"]})
        return metrics, None
    truth = [x["truth"][0] for x in scored]
    predicted = [x["ranked"][0][0] for x in scored]
    metrics.update({"accuracy": accuracy(truth, predicted), "macro_f1": macro_f1(truth, predicted)})
    return metrics, (truth, predicted)


def _model_meta(units: Sequence[Unit], out: Path, cfg: BenchConfig) -> tuple[dict, dict, dict[str, int]]:
    """Model and codec ids/revisions from the support-set manifests (else the previous results.json)."""
    from icl_audio import support as store

    model = codec = None
    clips: dict[str, int] = {}
    for unit in units:
        if store.exists(unit.support_name):
            try:
                manifest = store.read_manifest(unit.support_name)
            except ICLAudioError:
                continue
            clips[unit.support_name] = int(manifest["clips"])
            if model is None:
                model = {k: manifest["model"].get(k) for k in ("id", "revision", "requested")}
                codec = {k: manifest["codec"].get(k) for k in ("id", "revision", "fingerprint", "requested")}
    if model is None:
        try:
            previous = json.loads((out / "results.json").read_text(encoding="utf-8"))
            model, codec = previous["model"], previous["codec"]
        except (OSError, ValueError, KeyError, TypeError):
            model = {"id": cfg.model, "revision": None, "requested": cfg.model}
            codec = {"id": cfg.codec, "revision": None, "requested": cfg.codec}
    return model, codec, clips


NOTES_SINGLE = [
    "accuracy: top-1 label equals the true label; macro-F1: unweighted mean of per-class F1 over every class "
    "present in the truth or the predictions of the fold.",
]
NOTES_MULTI = [
    "mAP: average precision per class over all queries from the per-label scores (ties enter together, as in "
    "scikit-learn); classes without a positive query are skipped; macro = plain mean, weighted = weighted by "
    "each class's number of positive queries.",
]
NOTES_COMMON = [
    "support = the training part of each unit (every other fold, or the train split); queries = the held-out "
    "fold or the test split.",
    "every method of a fold uses the same retrieval (neighbours of each query searched once, with the largest k; "
    "smaller k take the nearest prefix). icl = the method; knn = similarity-weighted vote of the same k "
    "neighbours; majority = training label frequencies; random-label = uniform random scores (chance); "
    "icl-random-demos = icl with k uniformly random support clips instead of the retrieved ones.",
    "linear-probe = ARCH's probe (one linear layer; AdamW lr 1e-3, 10% warm-up then linear decay, batch 32, a fixed "
    "number of epochs, the last kept; cross-entropy or per-label binary cross-entropy) trained on the whole support "
    "set's retrieval embeddings (mean-pooled speech-token embeddings, standardised): what a trained probe gets from "
    "the representation the method retrieves with. It is not the published probes, which use other backbones.",
    "modes apply to the icl methods only; icl at k=0 is zero-shot.",
    "fold averages are means with the population std (ddof=0) over the evaluated units.",
    "seconds = time spent predicting (scoring) the run's queries, summed over queries and processes; it excludes "
    "the shared query encoding and retrieval.",
]


def finish(cfg: BenchConfig, recipe: "Recipe", root: Path, units: Sequence[Unit], skipped: Sequence[dict], out: Path) -> dict[str, Any]:
    """Merge every run, compute its metrics and write the reports; returns the results.json content."""
    from icl_audio import __version__

    model, codec, clips = _model_meta(units, out, cfg)
    runs = []
    confusions: dict[tuple, list[tuple[list[str], list[str]]]] = {}
    for unit in units:
        for run in unit.runs:
            lines = merge_run(out, unit, run)
            metrics, pairs = score_run(lines, recipe.multi_label)
            if pairs is not None:
                confusions.setdefault((run.method, run.k, run.mode), []).append(pairs)
            runs.append({
                "dataset": recipe.name,
                "fold": unit.unit,
                "method": run.method,
                "k": run.k,
                "mode": run.mode,
                **metrics,
                "seconds": round(sum(float(x.get("seconds", 0.0)) for x in lines), 6),
                "support_set": unit.support_name,
                "support_clips": clips.get(unit.support_name),
                "predictions": f"predictions/{run.name}.jsonl",
                "model_id": model.get("id"),
                "model_revision": model.get("revision"),
                "codec_id": codec.get("id"),
                "codec_revision": codec.get("revision"),
                "icl_audio_version": __version__,
            })
    summary = report.summarize(runs, recipe.multi_label)
    primary = report.metric_names(recipe.multi_label)[0]
    notes = list(NOTES_MULTI if recipe.multi_label else NOTES_SINGLE) + NOTES_COMMON
    clip_seconds = float(cfg.clip_seconds if cfg.clip_seconds is not None else recipe.clip_seconds)
    from icl_audio.recipes import RECIPES

    arch = RECIPES.get(recipe.name) is recipe
    if not arch:  # a source made at run time: say how its units were made (k-fold, its own folds or split)
        notes.append(f"source: {recipe.description}")
    length = (" (ARCH's length for this dataset)" if arch else " (the default read length)") if cfg.clip_seconds is None \
        else (f" (--clip-seconds; ARCH uses {recipe.clip_seconds:g} s)" if arch else " (--clip-seconds)")
    notes.append(
        f"clips: support clips and queries read up to {clip_seconds:g} s, the head kept" + length
        + "; shorter clips are not padded (silence would only add codec tokens to the prompts)."
    )
    if "clap-zero-shot" in cfg.methods:
        notes.append(f"clap-zero-shot: {cfg.clap_model}, each label as the text \"{CLAP_TEMPLATE.format(label='<label>')}\", "
                     "queries ranked by audio-text similarity; no support clip is used.")
    if cfg.limit is not None:
        notes.append(
            f"--limit {cfg.limit}: at most {cfg.limit} queries per unit, a seeded subsample (seed {cfg.seed}, hash order "
            "of the paths) kept in dataset order; the support sets are not limited."
        )
    confusion = None
    if confusions:
        best = max(
            (e for e in summary if (e["method"], e["k"], e["mode"]) in confusions and e[f"{primary}_mean"] == e[f"{primary}_mean"]),
            key=lambda e: (e[f"{primary}_mean"], -report.config_key(e["method"], e["k"], e["mode"])[0]),
            default=None,
        )
        if best is not None:
            pairs = confusions[(best["method"], best["k"], best["mode"])]
            truth = [t for ts, _ in pairs for t in ts]
            predicted = [p for _, ps in pairs for p in ps]
            labels, counts = confusion_matrix(truth, predicted)
            title = (f"{recipe.title or recipe.name}: {best['method']}"
                     + (f" k={best['k']}" if best["k"] is not None else "") + (f" {best['mode']}" if best["mode"] else "")
                     + f" (best mean accuracy {100 * best['accuracy_mean']:.1f}%; folds summed)")
            confusion = (title, labels, counts)
            notes.append(f"confusion.png: {title}.")
    files = {
        "results.json": "every run (dataset x fold x method x k x mode) and the fold summary",
        "results.md": "this report",
        report.metric_plot_name(primary): f"{report.METRIC_TITLES[primary]} against k per method",
        "predictions/<fold>.<method>[.k<k>][.<mode>].jsonl": "one line per query: query path, truth, ranked labels "
        "with scores, demonstrations",
    }
    if confusion is not None:
        files["confusion.png"] = "confusion matrix of the best single-label configuration"
    results = {
        "dataset": recipe.name,
        "title": recipe.title or recipe.name,
        "root": str(root),
        "protocol": cfg.protocol or recipe.protocol,
        "multi_label": recipe.multi_label,
        "metrics": list(report.metric_names(recipe.multi_label)),
        "model": model,
        "codec": codec,
        "icl_audio_version": __version__,
        "config": {
            "k": list(cfg.ks),
            "mode": list(cfg.modes),
            "methods": list(cfg.methods),
            "folds": [u.unit for u in units],
            "limit": cfg.limit,
            "seed": cfg.seed,
            "clip_seconds": clip_seconds,
            "linear_probe": _Engine(cfg, Dist()).probe_config().fingerprint(),
            **({"clap_model": cfg.clap_model} if "clap-zero-shot" in cfg.methods else {}),
        },
        "runs": runs,
        "summary": summary,
        "skipped": list(skipped),
        "notes": notes,
        "files": files,
    }
    report.write_reports(out, results, confusion)
    for rank_dir in (out / "predictions").glob("rank*"):
        try:
            rank_dir.rmdir()  # only once empty: files of runs outside this configuration stay
        except OSError:
            pass
    return results
