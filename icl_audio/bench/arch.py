"""The ARCH benchmark runner: per evaluation unit, one support set and one retrieval, then every method x k x mode.

Flow for one dataset (``run_bench``)::

    recipe.prepare(root) -> items -> evaluation units (folds or "test")
    per unit: support items -> stored support set  `bench-<dataset>-<unit>-<hash>` (built once, by rank 0)
              query items   -> [--limit: seeded subsample, dataset order kept] -> this rank's shard
              query codes (encoding.stream_codes) -> clip embeddings -> neighbours once, with the largest k
              linear probe trained once on the support set's embeddings (same representation)
              per query: every run (method x k x mode) on that same retrieval, one JSON line each

Every clip, support or query, is read up to the dataset's ARCH clip length (``Recipe.clip_seconds``:
ESC-50 5 s, FSD50K 10 s, MTT 30 s, ...), its head kept as ARCH does. Shorter clips are *not* padded
with silence: ARCH pads so that a probe sees fixed-size batches, but here padding would only add
codec tokens of silence to every prompt, spending the context budget on nothing and telling the LLM
that silence is part of the class.
    rank 0, after all ranks: merge the lines per run, compute metrics, write the reports

Predictions are the single source of truth: lines are appended (flushed) as they are computed,
into ``predictions/rank{r}/<run>.jsonl``; the merge writes ``predictions/<run>.jsonl`` in query
order and removes the rank files. Each line carries a fingerprint of everything that made it
(support set name -- itself a hash of root, model, codec and support items --, method, k, mode,
scoring options, seed for the random methods), so a re-run reuses exactly the lines that are
still valid, whatever the number of processes was, and a finished bench only rewrites its report.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from icl_audio.bench import baselines, report
from icl_audio.bench.clap import CLAP_TEMPLATE, DEFAULT_CLAP
from icl_audio.bench.distributed import Dist
from icl_audio.bench.metrics import accuracy, confusion_matrix, macro_f1, mean_average_precision
from icl_audio.constants import DEFAULT_CODEC, DEFAULT_LLM, LLASA_CONTEXT
from icl_audio.errors import ICLAudioError, SupportSetError
from icl_audio.fsutil import atomic_write

if TYPE_CHECKING:
    from icl_audio.recipes import Item, Recipe

log = logging.getLogger("icl_audio.bench")

#: Bumped when the meaning of a prediction line changes: old lines are then recomputed.
FORMAT_VERSION = 1
METHODS = ("icl", "knn", "linear-probe", "clap-zero-shot", "majority", "random-label", "icl-random-demos")
#: What runs without --methods: every method but CLAP (another model, another download).
DEFAULT_METHODS = ("icl", "knn", "linear-probe", "majority", "random-label", "icl-random-demos")
#: Always run: the trained-probe reference on the same representation belongs in every report.
ALWAYS_METHODS = ("linear-probe",)
UNIT_METHODS = ("linear-probe", "clap-zero-shot", "majority", "random-label")  # one run per unit, no k, no mode
ICL_METHODS = ("icl", "icl-random-demos")
RETRIEVAL_METHODS = ("icl", "knn")  # the methods that read the retrieved neighbours
RANDOM_METHODS = ("random-label", "icl-random-demos")
MODES = ("direct", "channel")
DEFAULT_KS = (0, 1, 4, 8)
ENCODE_CHUNK = 32  # query clips decoded and encoded together (bounds memory on big test sets)

# The scoring options every icl run uses (the ICLClassifier defaults apart from the mode); they
# enter the fingerprints so that a change of defaults invalidates stored predictions.
SCORING_DEFAULTS = {"normalize": "sum", "calibrate": False, "template": "default", "max_context": LLASA_CONTEXT}

ProgressFactory = Callable[[int, str], "Callable[[int], None] | None"]


class BenchError(ICLAudioError):
    """A benchmark request that cannot run (bad option, fold not in the dataset, damaged outputs)."""


# ----------------------------------------------------------------------------------------------
# Configuration and option parsing


@dataclass(frozen=True)
class BenchConfig:
    """One `icl-audio bench DATASET` invocation.

    dataset: recipe name (``icl_audio.recipes.RECIPES``); root: its folder in the official layout.
    ks: demonstration counts (k=0 is zero-shot icl); modes: scoring modes of the icl methods.
    folds: evaluation units to run (fold numbers or split names), None for all the dataset has.
    limit: queries per unit (a seeded subsample in dataset order), None for all.
    methods: any of :data:`METHODS`. model / codec: as ``load_lm`` / ``load_codec`` accept them.
    out: output folder (default ``bench-results/<dataset>``). seed: seeds the subsample and the
    random baselines. protocol: None for ARCH's, or "folds"/"splits" where a recipe has both.
    clip_seconds: how much of each clip is read (head kept); None for the dataset's ARCH length.
    clap_model: the CLAP checkpoint of the ``clap-zero-shot`` method (hub id or local folder).
    probe_epochs: epochs of the ``linear-probe`` baseline (ARCH's default 200).
    """

    dataset: str
    root: Path
    ks: tuple[int, ...] = DEFAULT_KS
    modes: tuple[str, ...] = MODES
    folds: tuple[int | str, ...] | None = None
    limit: int | None = None
    methods: tuple[str, ...] = DEFAULT_METHODS
    model: str = DEFAULT_LLM
    codec: str = DEFAULT_CODEC
    out: Path | None = None
    device: str = "auto"
    seed: int = 0
    protocol: str | None = None
    clip_seconds: float | None = None
    clap_model: str = DEFAULT_CLAP
    probe_epochs: int = 200

    @property
    def out_dir(self) -> Path:
        """Where results go."""
        return Path(self.out) if self.out is not None else Path("bench-results") / self.dataset


def parse_ks(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"0,1,4,8"`` (or a list of ints) -> sorted distinct non-negative ints; one-line error otherwise."""
    values = text.split(",") if isinstance(text, str) else list(text)
    out = set()
    for value in values:
        if isinstance(value, str) and not value.strip():
            continue
        try:
            if isinstance(value, bool) or (not isinstance(value, int) and not str(value).strip().lstrip("+").isdigit()):
                raise ValueError
            k = int(value)
        except ValueError:
            raise BenchError(f"--k must be comma-separated integers >= 0 (e.g. 0,1,4,8), got {text!r}") from None
        out.add(k)
    if not out:
        raise BenchError("--k is empty (e.g. --k 0,1,4,8)")
    return tuple(sorted(out))


def parse_choices(text: str | Sequence[str], allowed: Sequence[str], option: str) -> tuple[str, ...]:
    """``"a,b"`` (or a list) -> the distinct values, each one of ``allowed``; one-line error otherwise."""
    values = text.split(",") if isinstance(text, str) else [str(v) for v in text]
    out: list[str] = []
    for value in (v.strip() for v in values):
        if not value:
            continue
        if value not in allowed:
            raise BenchError(f"unknown {option} value {value!r} (choose from: {', '.join(allowed)})")
        if value not in out:
            out.append(value)
    if not out:
        raise BenchError(f"{option} is empty (choose from: {', '.join(allowed)})")
    return tuple(out)


def parse_units(text: str | Sequence[int | str] | None) -> tuple[int | str, ...] | None:
    """``"1,2"`` -> (1, 2); split names ("test") stay strings; None -> None (every unit)."""
    if text is None:
        return None
    values = text.split(",") if isinstance(text, str) else list(text)
    out: list[int | str] = []
    for value in values:
        value = str(value).strip()
        if not value:
            continue
        unit: int | str = int(value) if value.lstrip("+-").isdigit() else value
        if unit not in out:
            out.append(unit)
    if not out:
        raise BenchError("--folds is empty (e.g. --folds 1,2)")
    return tuple(out)


def unit_label(unit: int | str) -> str:
    """``1`` -> ``"fold1"``, ``"test"`` -> ``"test"`` (used in file and support-set names)."""
    return f"fold{unit}" if isinstance(unit, int) else str(unit)


def select_units(recipe: "Recipe", items: Sequence["Item"], requested: Sequence[int | str] | None, root: Path, protocol: str | None = None) -> list[int | str]:
    """The evaluation units to run: the recipe's (those with queries under ``root``), or the requested ones.

    Raises BenchError for a unit the dataset does not define, or one with no clips under ``root``.
    """
    defined = recipe.evaluation_units(None, protocol=protocol)
    present = recipe.evaluation_units(items, protocol=protocol)
    word = "folds" if all(isinstance(u, int) for u in defined) else "splits"
    if requested is None:
        if not present:
            raise BenchError(f"{recipe.name}: no clips of any evaluation unit ({', '.join(map(str, defined))}) under {root}")
        return list(present)
    for unit in requested:
        if unit not in defined:
            kind = "fold" if isinstance(unit, int) else "unit"
            raise BenchError(
                f"dataset {recipe.name!r} has no {kind} {unit!r} (its evaluation {word}: {', '.join(map(str, defined))})"
            )
        if unit not in present:
            raise BenchError(
                f"{recipe.name}: no clips of {unit_label(unit)} under {root} ({word} with clips: {', '.join(map(str, present)) or 'none'})"
            )
    return list(requested)


def subsample(queries: Sequence["Item"], limit: int | None, seed: int) -> list["Item"]:
    """At most ``limit`` queries: a seeded subsample (hash order of the paths), kept in dataset order.

    Hashing the paths (not drawing from a stream) makes the choice stable across versions and
    platforms, and nested: the queries of ``--limit 10`` are among those of ``--limit 20``.
    """
    if limit is None or limit >= len(queries):
        return list(queries)
    from icl_audio.recipes import seeded_order

    chosen = set(seeded_order([str(it.path) for it in queries], seed)[:limit])
    return [it for it in queries if str(it.path) in chosen]


# ----------------------------------------------------------------------------------------------
# Runs and their prediction files


@dataclass(frozen=True)
class RunSpec:
    """One evaluated configuration on one unit: method, k (None: k-independent), mode (None: not icl)."""

    unit: int | str
    method: str
    k: int | None
    mode: str | None

    @property
    def name(self) -> str:
        """File stem of its predictions: ``fold1.icl.k4.direct``, ``test.majority``."""
        parts = [unit_label(self.unit), self.method]
        if self.k is not None:
            parts.append(f"k{self.k}")
        if self.mode is not None:
            parts.append(self.mode)
        return ".".join(parts)


def plan_runs(unit: int | str, methods: Sequence[str], ks: Sequence[int], modes: Sequence[str]) -> tuple[list[RunSpec], list[dict]]:
    """The runs of one unit, and the (method, k) pairs skipped with the reason."""
    runs: list[RunSpec] = []
    skipped: list[dict] = []
    for method in METHODS:
        if method not in methods:
            continue
        if method in UNIT_METHODS:
            runs.append(RunSpec(unit, method, None, None))
            continue
        for k in ks:
            if k == 0 and method == "knn":
                skipped.append({"method": method, "k": 0, "reason": "undefined: a vote needs at least one neighbour"})
                continue
            if k == 0 and method == "icl-random-demos":
                skipped.append({"method": method, "k": 0, "reason": "identical to icl at k=0 (zero-shot, no demonstrations)"})
                continue
            if method in ICL_METHODS:
                runs.extend(RunSpec(unit, method, k, mode) for mode in modes)
            else:
                runs.append(RunSpec(unit, method, k, None))
    return runs, skipped


def run_fingerprint(run: RunSpec, support_name: str, seed: int, max_seconds: float | None = None,
                    extra: dict[str, Any] | None = None) -> str:
    """A short hash of everything that determines the run's predictions (queries are keyed by path).

    max_seconds: the clip length queries are read with; extra: method settings (probe config, CLAP model).
    """
    spec: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "support": support_name,
        "method": run.method,
        "k": run.k,
        "max_seconds": max_seconds,
    }
    if run.method in ICL_METHODS:
        spec["scoring"] = {**SCORING_DEFAULTS, "mode": run.mode}
    if run.method in RANDOM_METHODS:
        spec["seed"] = seed
    if extra:
        spec["method_settings"] = extra
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def support_set_name(dataset: str, unit: int | str, root: Path, model: str, codec: str, items: Sequence["Item"],
                     max_seconds: float | None = None) -> str:
    """``bench-<dataset>-<unit>-<hash>``: the hash covers root, model, codec, clip length and the support items."""
    parts: list[Any] = [str(root), model, codec, [[str(it.path), list(it.labels)] for it in items]]
    if max_seconds is not None:
        parts.append(float(max_seconds))
    payload = json.dumps(parts, ensure_ascii=False)
    return f"bench-{dataset}-{unit_label(unit)}-{hashlib.sha256(payload.encode('utf-8')).hexdigest()[:12]}"


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


@dataclass
class Unit:
    """One evaluation unit's support items, queries, runs and the predictions already on disk."""

    unit: int | str
    support_items: list["Item"]
    queries: list["Item"]
    support_name: str
    runs: list[RunSpec]
    fps: dict[str, str]
    done: dict[str, set[str]] = field(default_factory=dict)  # run name -> query paths with a valid line

    def missing(self, position: int) -> list[RunSpec]:
        """The runs that still lack a prediction for the query at ``position``."""
        key = str(self.queries[position].path)
        return [r for r in self.runs if key not in self.done.get(r.name, {})]

    def pending(self, dist: Dist | None = None) -> list[int]:
        """Query positions (of ``dist``'s shard, or all) that still lack some prediction."""
        return [p for p in range(len(self.queries)) if (dist is None or dist.owns(p)) and self.missing(p)]


def _prediction_files(out: Path, run: RunSpec) -> list[Path]:
    pred = out / "predictions"
    return [pred / f"{run.name}.jsonl", *sorted(pred.glob(f"rank*/{run.name}.jsonl"))]


def scan_done(out: Path, unit: Unit) -> None:
    """Fill ``unit.done`` with the queries that have a valid line (matching fingerprint) in the final or rank files."""
    for run in unit.runs:
        fp = unit.fps[run.name]
        unit.done[run.name] = {line["query"] for path in _prediction_files(out, run) for line in read_lines(path) if line["fp"] == fp}


# ----------------------------------------------------------------------------------------------
# The expensive part: models, support sets, queries


class _Engine:
    """Lazily loaded models shared by every unit of one bench run.

    ``max_seconds``: the clip length support clips and queries are read with (the dataset's ARCH length).
    """

    def __init__(self, cfg: BenchConfig, dist: Dist, max_seconds: float | None = None):
        self.cfg, self.dist, self.max_seconds = cfg, dist, max_seconds
        self._clf = None
        self._clap = None
        self._probes: dict[str, Any] = {}

    @property
    def device(self) -> str:
        return self.dist.device(self.cfg.device) if self.dist.world > 1 else self.cfg.device

    def classifier(self, mode: str = "direct"):
        """An ICLClassifier sharing the loaded LM and codec (loads them on first use)."""
        from icl_audio.classifier import ICLClassifier

        if self._clf is None:
            self._clf = ICLClassifier(self.cfg.model, self.cfg.codec, device=self.device, mode="direct",
                                      max_seconds=self.max_seconds)
            self._clf.codec_model  # loads the LM too and checks that the pair matches
        if mode == "direct":
            return self._clf
        return ICLClassifier(self.cfg.model, self.cfg.codec, device=self.device, mode=mode,
                             lm=self._clf.lm, codec_model=self._clf.codec_model, max_seconds=self.max_seconds)

    def clap(self):
        """The CLAP zero-shot scorer (loaded on first use; a missing model is one line)."""
        if self._clap is None:
            from icl_audio.bench.clap import ClapZeroShot

            self._clap = ClapZeroShot(self.cfg.clap_model, device=self.device)
        return self._clap

    def ensure_support(self, unit: Unit, multi_label: bool, root: Path, dataset: str, progress_factory: ProgressFactory | None) -> None:
        """Build the unit's support set unless it is stored already (resumable through the code cache)."""
        from icl_audio import support as store

        if store.exists(unit.support_name):
            return
        clf = self.classifier()
        with _quiet_crops():
            summary = store.build_named_set(
                unit.support_name, unit.support_items, model=self.cfg.model, codec=self.cfg.codec, device=self.device,
                multi_label=multi_label, progress_factory=progress_factory, lm=clf.lm, codec_model=clf.codec_model,
                max_seconds=self.max_seconds,
                extra={"dataset": dataset, "clip_seconds": self.max_seconds,
                       "source": {"kind": "bench", "dataset": dataset, "root": str(root), "unit": unit.unit}},
            )
        if summary["skipped"]:
            log.warning("%s: %d support clips could not be read and were left out (e.g. %s)",
                        unit.support_name, len(summary["skipped"]), summary["skipped"][0][1])

    def probe(self, name: str, support):
        """The linear probe of support set ``name``, trained once (a pure function of the set and the config)."""
        from icl_audio.bench.probe import train_probe

        if name not in self._probes:
            self._probes = {name: train_probe(support.embeddings, support.labels, multi_label=support.multi_label,
                                             classes=support.classes, config=self.probe_config())}
        return self._probes[name]

    def probe_config(self):
        from icl_audio.bench.probe import ProbeConfig

        return ProbeConfig(epochs=self.cfg.probe_epochs, seed=self.cfg.seed)

    def compute(self, unit: Unit, out: Path, *, progress_factory: ProgressFactory | None, on_prediction) -> int:
        """Compute this rank's missing predictions of ``unit``, appending each line as it is made."""
        from icl_audio import support as store
        from icl_audio.encoding import stream_codes
        from icl_audio.retrieval import Neighbor, clip_embeddings

        positions = unit.pending(self.dist)
        if not positions:
            return 0
        support = store.load_support_set(unit.support_name)
        candidates = support.classes
        modes = sorted({r.mode for r in unit.runs if r.mode is not None})
        clfs = {mode: self.classifier(mode).fit_support(support) for mode in modes}
        encoder = self.classifier()
        lm = encoder.lm

        # Query codes through the one streaming path (bounded memory, code cache: queries of one
        # fold are support clips of the others), read up to the dataset's clip length.
        codes: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        bar = progress_factory(len(positions), f"encoding {unit_label(unit.unit)} queries") if progress_factory else None
        with _quiet_crops():
            for enc in stream_codes((unit.queries[p].path for p in positions), encoder.codec_model, cache=encoder.cache,
                                    max_seconds=self.max_seconds, progress=bar):
                if enc.codes is None:
                    errors[positions[enc.index]] = str(enc.error)
                else:
                    codes[positions[enc.index]] = np.asarray(enc.codes)
        ok = [p for p in positions if p in codes]
        embeddings = clip_embeddings(lm, [codes[p] for p in ok]) if ok else np.zeros((0, support.embeddings.shape[1]), np.float32)
        row_of = {p: i for i, p in enumerate(ok)}
        kmax = max([r.k for r in unit.runs if r.method in RETRIEVAL_METHODS and r.k] or [0])
        neighbours = support.index.search(embeddings, kmax) if kmax > 0 and ok else [[] for _ in ok]
        clap = self._clap_rankings(unit, positions, candidates, progress_factory, support.multi_label)

        work = sum(len(unit.missing(p)) for p in positions)
        bar = progress_factory(work, f"predicting {unit_label(unit.unit)}") if progress_factory else None
        files: dict[str, Any] = {}
        computed = 0
        try:
            for p in positions:
                item = unit.queries[p]
                key = str(item.path)
                for run in unit.missing(p):
                    started = time.perf_counter()
                    line: dict[str, Any] = {"fp": unit.fps[run.name], "i": p, "query": key, "truth": list(item.labels)}
                    if run.method == "clap-zero-shot":
                        # CLAP reads the audio itself (48 kHz): its own errors, not the codec's.
                        line.update(clap[p])
                    elif p in errors:
                        line["error"] = errors[p]
                    else:
                        q = row_of[p]
                        line.update(self._predict(run, key, codes[p], embeddings[q], neighbours[q], support, candidates, clfs, Neighbor,
                                                  unit.support_name))
                    # The probe's training (once per unit) counts in the first line that needed it.
                    line["seconds"] = round(time.perf_counter() - started, 6)
                    handle = files.get(run.name)
                    if handle is None:
                        handle = files[run.name] = _open_append(out / "predictions" / f"rank{self.dist.rank}" / f"{run.name}.jsonl")
                    handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                    handle.flush()  # a kill loses at most this line; a torn line is ignored on resume
                    unit.done.setdefault(run.name, set()).add(key)
                    computed += 1
                    if bar:
                        bar(1)
                    if on_prediction is not None:
                        on_prediction(run, key)
        finally:
            for handle in files.values():
                handle.close()
        return computed

    def _clap_rankings(self, unit: Unit, positions: Sequence[int], candidates, progress_factory,
                       multi_label: bool) -> dict[int, dict[str, Any]]:
        """CLAP's ranked labels (or read error) for the positions that lack a clap-zero-shot line."""
        runs = [r for r in unit.runs if r.method == "clap-zero-shot"]
        todo = [p for p in positions if any(r in unit.missing(p) for r in runs)]
        if not todo:
            return {}
        clap = self.clap()
        bar = progress_factory(len(todo), f"CLAP {unit_label(unit.unit)}") if progress_factory else None
        out: dict[int, dict[str, Any]] = {}
        for p, result in zip(todo, clap.rank_files([unit.queries[p].path for p in todo], candidates,
                                                   max_seconds=self.max_seconds, multi_label=multi_label, progress=bar)):
            out[p] = {"error": result} if isinstance(result, str) else {"ranked": _round_ranked(result), "demonstrations": []}
        return out

    def _predict(self, run, key, query_codes, query_embedding, retrieved, support, candidates, clfs, Neighbor,
                 support_name: str) -> dict[str, Any]:
        if run.method == "icl":
            pred = clfs[run.mode].predict_codes(query_codes, retrieved[: run.k], candidates, source=key)
            return _icl_fields(pred)
        if run.method == "icl-random-demos":
            rng = baselines.query_rng(self.cfg.seed, run.method, key)
            picks = baselines.random_demos(len(support), run.k, rng)
            sims = support.embeddings[picks] @ query_embedding if picks else []
            demos = [Neighbor(i, float(s)) for i, s in zip(picks, sims)]
            pred = clfs[run.mode].predict_codes(query_codes, demos, candidates, source=key)
            return _icl_fields(pred)
        if run.method == "knn":
            used = retrieved[: run.k]
            ranked = baselines.knn_vote([support.labels[n.index] for n in used], [n.similarity for n in used], candidates)
            return {"ranked": _round_ranked(ranked), "demonstrations": [_demo(support, n) for n in used]}
        if run.method == "linear-probe":
            return {"ranked": _round_ranked(self.probe(support_name, support).rank(query_embedding)[0]), "demonstrations": []}
        if run.method == "majority":
            return {"ranked": _round_ranked(baselines.majority(support.labels, candidates)), "demonstrations": []}
        if run.method == "random-label":
            rng = baselines.query_rng(self.cfg.seed, run.method, key)
            return {"ranked": _round_ranked(baselines.random_label(candidates, rng)), "demonstrations": []}
        raise AssertionError(run.method)


@contextmanager
def _quiet_crops():
    """Silence load_audio's "keeping the first N s" warning: cropping to the clip length is the protocol here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* s long, keeping the first .* \(max_seconds\)")
        yield


def _score(x: float) -> float:
    # 6 significant digits keep files small and make the merged file byte-stable; metrics are
    # always computed from the files, so every run (1 or N processes, resumed or not) agrees.
    return float(f"{float(x):.6g}")


def _round_ranked(ranked) -> list[list]:
    return [[label, _score(score)] for label, score in ranked]


def _demo(support, n) -> dict[str, Any]:
    return {"path": support.sources[n.index], "label": support.label_text(n.index), "similarity": _score(n.similarity)}


def _icl_fields(pred) -> dict[str, Any]:
    return {
        "ranked": _round_ranked(zip(pred.labels, pred.scores)),
        "demonstrations": [{"path": d.source, "label": d.label, "similarity": _score(d.similarity)} for d in pred.demonstrations],
        "prompt_tokens": int(pred.prompt_tokens),
        "demos_used": int(pred.demos_used),
        "cropped": bool(pred.cropped),
    }


# ----------------------------------------------------------------------------------------------
# Merge and metrics (rank 0)


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
        line = found.get(str(item.path))
        if line is None:
            raise BenchError(f"{run.name}: no prediction for {item.path} (a process stopped early? re-run the same command to resume)")
        # Truth from the current metadata: a relabelled query is then scored against its new label.
        lines.append({**line, "i": position, "truth": list(item.labels)})
    atomic_write(files[0], "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    for path in files[1:]:
        path.unlink(missing_ok=True)
    return lines


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
    notes.append(
        f"clips: support clips and queries read up to {clip_seconds:g} s, the head kept"
        + (" (ARCH's length for this dataset)" if cfg.clip_seconds is None else f" (--clip-seconds; ARCH uses {recipe.clip_seconds:g} s)")
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


# ----------------------------------------------------------------------------------------------
# Entry point


@dataclass(frozen=True)
class BenchOutcome:
    """What a bench invocation did: the results (rank 0; None on other ranks) and the work done."""

    results: dict[str, Any] | None
    computed: int  # prediction lines computed by this invocation (rank 0: by all processes; others: by this one)
    reused: int  # prediction lines found on disk from earlier runs (all shards)
    out: Path


def validate(cfg: BenchConfig) -> BenchConfig:
    """Check and normalise a config's options (one-line BenchError on anything wrong)."""
    from dataclasses import replace

    ks = parse_ks(cfg.ks)
    modes = parse_choices(cfg.modes, MODES, "--mode")
    methods = parse_choices(cfg.methods, METHODS, "--methods")
    methods += tuple(m for m in ALWAYS_METHODS if m not in methods)
    if cfg.clip_seconds is not None and (isinstance(cfg.clip_seconds, bool) or not isinstance(cfg.clip_seconds, (int, float))
                                         or not 0 < cfg.clip_seconds <= 3600):
        raise BenchError(f"--clip-seconds must be a number of seconds in (0, 3600], got {cfg.clip_seconds!r}")
    if isinstance(cfg.probe_epochs, bool) or not isinstance(cfg.probe_epochs, int) or cfg.probe_epochs < 1:
        raise BenchError(f"--probe-epochs must be a positive integer, got {cfg.probe_epochs!r}")
    if not isinstance(cfg.clap_model, str) or not cfg.clap_model.strip():
        raise BenchError(f"--clap-model must be a hub id or a folder, got {cfg.clap_model!r}")
    if cfg.limit is not None and (isinstance(cfg.limit, bool) or not isinstance(cfg.limit, int) or cfg.limit < 1):
        raise BenchError(f"--limit must be a positive integer, got {cfg.limit!r}")
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise BenchError(f"--seed must be an integer, got {cfg.seed!r}")
    return replace(cfg, ks=ks, modes=modes, methods=methods, folds=parse_units(cfg.folds))


def run_bench(
    cfg: BenchConfig,
    *,
    dist: Dist | None = None,
    progress_factory: ProgressFactory | None = None,
    on_prediction: Callable[[RunSpec, str], None] | None = None,
) -> BenchOutcome:
    """Run (or resume) the ARCH benchmark of one dataset; rank 0 writes and returns the results.

    ``dist``: this process's rank (default: a one-process run). ``progress_factory(total, text)``
    returns a ``progress(n)`` callback (e.g. ``ProgressBars.bar``). ``on_prediction(run, query)``
    is called after each newly computed prediction (tests count and interrupt with it).
    """
    from icl_audio.recipes import get_recipe

    cfg = validate(cfg)
    dist = dist or Dist()
    recipe = get_recipe(cfg.dataset)
    root = Path(cfg.root).expanduser().resolve()
    items = recipe.prepare(root)
    if cfg.protocol is not None and cfg.protocol not in ("folds", "splits"):
        raise BenchError(f"unknown --protocol {cfg.protocol!r} (choose from: folds, splits)")
    chosen = select_units(recipe, items, cfg.folds, root, cfg.protocol)
    out = cfg.out_dir.expanduser().resolve()
    if "clap-zero-shot" in cfg.methods:
        from icl_audio.bench.clap import resolve_clap

        resolve_clap(cfg.clap_model)  # a missing CLAP model fails now, in one line, before anything loads
    max_seconds = float(cfg.clip_seconds if cfg.clip_seconds is not None else recipe.clip_seconds)
    method_settings = {"linear-probe": _Engine(cfg, dist).probe_config().fingerprint(),
                       "clap-zero-shot": {"model": cfg.clap_model, "template": CLAP_TEMPLATE}}

    units: list[Unit] = []
    skipped: list[dict] = []
    for u in chosen:
        support_items, queries = recipe.split_items(items, u)
        if not support_items:
            raise SupportSetError(f"{recipe.name} {unit_label(u)}: no training clips under {root} to take demonstrations from")
        runs, skipped_here = plan_runs(u, cfg.methods, cfg.ks, cfg.modes)
        if not any(r.method not in ALWAYS_METHODS for r in runs) and any(m not in ALWAYS_METHODS for m in cfg.methods):
            raise BenchError(f"nothing to run: --methods {','.join(cfg.methods)} with --k {','.join(map(str, cfg.ks))} "
                             "(knn and icl-random-demos need a k >= 1)")
        if not skipped:
            skipped = skipped_here
        name = support_set_name(recipe.name, u, root, cfg.model, cfg.codec, support_items, max_seconds)
        unit = Unit(u, support_items, subsample(queries, cfg.limit, cfg.seed), name, runs,
                    {r.name: run_fingerprint(r, name, cfg.seed, max_seconds, method_settings.get(r.method)) for r in runs})
        scan_done(out, unit)
        units.append(unit)
    reused = sum(len(unit.queries) * len(unit.runs) - sum(len(unit.missing(p)) for p in range(len(unit.queries))) for unit in units)

    if dist.world > 1:
        dist.start(dist.device(cfg.device))
    engine = _Engine(cfg, dist, max_seconds)
    # Phase 1 (rank 0 alone): build the support sets that some rank will need, and load the
    # models once first, so that locally built models (debug) are never written by two processes.
    if dist.is_main and any(unit.pending() for unit in units):
        engine.classifier()
        for unit in units:
            if unit.pending():
                engine.ensure_support(unit, recipe.multi_label, root, recipe.name, progress_factory)
    dist.barrier()
    computed = 0
    for unit in units:
        computed += engine.compute(unit, out, progress_factory=progress_factory, on_prediction=on_prediction)
    dist.barrier()
    if not dist.is_main:
        return BenchOutcome(None, computed, reused, out)
    results = finish(cfg, recipe, root, units, skipped, out)
    # Every line now exists, so what was not reused was computed now, by one process or another.
    total = sum(len(unit.queries) * len(unit.runs) for unit in units)
    return BenchOutcome(results, total - reused, reused, out)
