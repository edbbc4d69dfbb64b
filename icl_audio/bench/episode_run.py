"""The episode bench: N-way K-shot episodes over a source's classes, icl beside the few-shot baselines.

Flow (``run_episodes``, called by :func:`icl_audio.bench.arch.run_bench` when episodes are asked for)::

    source items -> the pool (single-label clips; --folds restricts it; MetaAudio: its 10 test classes)
    episodes: drawn (seeded, icl_audio.bench.episodes) or read (--episodes-file: episodes.jsonl or .scp)
      -> out/episodes.jsonl
    runs: (N, K) group x method x mode; every (episode, query) is one JSON line of predictions/<run>.jsonl
    lines already on disk (same run fingerprint, same episode content) are kept: a resume computes the rest
    the clips of the pending episodes (+ the base classes' clips for prototype's centring) are encoded
      ONCE, through the code cache, whatever the number of episodes; embeddings once from the codes
    per pending episode: icl builds one prompt prefix (every demonstration, cropped once) and scores
      every query after it with loglikelihood_shared; prototype / nearest / random-label / clap-zero-shot
    rank 0, after all ranks: merge, per-episode accuracy, mean and 95% interval, reports

The pool of an ARCH dataset is every clip of every fold or split (``--folds`` restricts it): a
training-free learner fits nothing, so no clip has to be held out for training, and per episode the
queries are disjoint from the supports, which is the only separation the protocol needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from icl_audio.bench import baselines
from icl_audio.bench.clap import CLAP_TEMPLATE
from icl_audio.bench.config import BenchConfig, BenchError
from icl_audio.bench.distributed import Dist
from icl_audio.bench.episodes import Episode, class_pool, draw_episodes, load_episode_file, write_episodes
from icl_audio.bench.plan import SCORING_DEFAULTS
from icl_audio.bench.predict import ProgressFactory, _Engine, _quiet_crops, _round_ranked
from icl_audio.bench.store import _open_append, read_lines

if TYPE_CHECKING:
    from icl_audio.recipes import Item, Recipe

log = logging.getLogger("icl_audio.bench")

#: Bumped when the meaning of an episode prediction line changes: old lines are then recomputed.
EPISODE_FORMAT = 1


@dataclass(frozen=True)
class EpisodeRun:
    """One evaluated configuration over the episodes of one (N, K) group."""

    method: str
    mode: str | None
    way: int
    shot: int | None

    @property
    def name(self) -> str:
        """File stem of its predictions: ``episodes.5way1shot.icl.direct``."""
        shot = "mixed" if self.shot is None else str(self.shot)
        return ".".join(["episodes", f"{self.way}way{shot}shot", self.method] + ([self.mode] if self.mode else []))


@dataclass
class EpisodeBench:
    """What a run decided before computing anything: episodes, their clips, runs, fingerprints, lines done."""

    episodes: list[Episode]
    items: dict[str, "Item"]  # key -> the clip (its audio)
    runs: list[EpisodeRun]
    fps: dict[str, str]
    base_keys: tuple[str, ...]  # the clips whose mean embedding centres prototype (empty: the episode's supports)
    pool_classes: tuple[str, ...]
    excluded: dict[str, int]  # classes left out of the pool (too few clips) -> their clip count
    # run -> {(episode content hash, query position)}: keyed by content, not by index, so that a run with
    # fewer episodes (whose K = 5 episodes are numbered from a smaller T) still finds its lines
    done: dict[str, set[tuple[str, int]]] = field(default_factory=dict)

    def group(self, run: EpisodeRun) -> list[Episode]:
        return [e for e in self.episodes if (e.way, e.shot) == (run.way, run.shot)]

    def missing(self, episode: Episode) -> list[EpisodeRun]:
        """The runs of ``episode``'s group that lack a line for some of its queries."""
        return [r for r in self.runs if (r.way, r.shot) == (episode.way, episode.shot)
                and any((episode.fingerprint, i) not in self.done.get(r.name, ()) for i in range(len(episode.queries)))]


# --------------------------------------------------------------------------------------------
# planning


def _pool_items(cfg: BenchConfig, recipe: "Recipe", items: Sequence["Item"]) -> tuple[list["Item"], list["Item"]]:
    """(the clips episodes are drawn from, the base classes' clips that centre prototype)."""
    if recipe.multi_label or any(len(it.labels) != 1 for it in items):
        raise BenchError(f"{recipe.title or recipe.name}: episodes need single-label clips (N-way classification); "
                         "this data is multi-label")
    if cfg.folds is not None:
        wanted = set(cfg.folds)
        items = [it for it in items if it.fold in wanted or it.split in wanted]
        if not items:
            raise BenchError(f"{recipe.name}: no clips in --folds {','.join(map(str, cfg.folds))}")
    if cfg.protocol != "metaaudio":
        return list(items), []
    from icl_audio.bench import metaaudio

    codes = {it.original_labels[0] for it in items}
    absent = [c for c in metaaudio.TEST_CLASSES if c not in codes]
    if absent:
        raise BenchError(f"--protocol metaaudio: MetaAudio's test classes {', '.join(absent)} have no clips under {cfg.root}")
    base = metaaudio.base_classes(codes)
    return ([it for it in items if it.original_labels[0] in metaaudio.TEST_CLASSES],
            [it for it in items if it.original_labels[0] in base])


def _episodes(cfg: BenchConfig, root: Path, pool: Sequence["Item"]) -> tuple[list[Episode], tuple[str, ...], dict[str, int]]:
    """The episodes to run (drawn or read), the classes drawn from, and the classes left out."""
    if cfg.episodes_file is not None:
        episodes = load_episode_file(cfg.episodes_file, root if root.is_dir() else None, cfg.seed)
        if cfg.episodes is not None:
            episodes = episodes[: cfg.episodes]
        return episodes, tuple(sorted({c.label for e in episodes for c in e.support})), {}
    need = max(cfg.shots) + cfg.queries
    classes, excluded = class_pool(pool, min_clips=need)
    if len(classes) < cfg.way:
        small = f" ({len(excluded)} classes have fewer than {need} clips)" if excluded else ""
        raise BenchError(f"{cfg.way}-way {max(cfg.shots)}-shot episodes with {cfg.queries} "
                         f"{'query' if cfg.queries == 1 else 'queries'} per class need {cfg.way} classes of at least "
                         f"{need} clips; there are {len(classes)}{small}")
    if excluded:
        log.warning("%d classes have fewer than %d clips and are not drawn: %s", len(excluded), need,
                    ", ".join(sorted(excluded)[:10]))
    episodes = draw_episodes(classes, episodes=cfg.episodes, way=cfg.way, shots=cfg.shots, queries=cfg.queries,
                             seed=cfg.seed)
    return episodes, tuple(sorted(classes)), excluded


def _resolver(items: Sequence["Item"], root: Path):
    """``key -> Item``: the source's own clips by key, or by path relative to the root (episode files
    written on another machine), or else an audio file named by the key (absolute or under ``root``)."""
    from icl_audio.recipes import Item

    by_key = {it.key: it for it in items}
    by_rel: dict[str, "Item"] = {}
    for it in items:
        try:
            by_rel[Path(it.key).relative_to(root).as_posix()] = it
        except ValueError:
            pass

    def resolve(key: str, label: str) -> "Item":
        if key in by_key:
            return by_key[key]
        parts = Path(key).parts
        for i in range(len(parts)):  # the longest tail of the key that names a clip of the source
            hit = by_rel.get(Path(*parts[i:]).as_posix())
            if hit is not None:
                return hit
        path = Path(key).expanduser()
        path = path if path.is_absolute() else root / path
        if path.is_file():
            return Item(path=path, labels=(label,), original_labels=(label,))
        raise BenchError(f"episode clip {key}: not a clip of the source under {root}, nor an audio file")

    return resolve


def _fingerprint(cfg: BenchConfig, run: EpisodeRun, max_seconds: float, base_keys: Sequence[str]) -> str:
    spec: dict[str, Any] = {"format": EPISODE_FORMAT, "model": cfg.model, "codec": cfg.codec, "max_seconds": max_seconds,
                            "method": run.method}
    if run.method == "icl":
        spec["scoring"] = {**SCORING_DEFAULTS, "mode": run.mode}
    if run.method == "prototype":
        spec["centre"] = hashlib.sha256("\n".join(base_keys).encode("utf-8")).hexdigest()[:16] if base_keys else "support"
    if run.method == "clap-zero-shot":
        spec["clap"] = {"model": cfg.clap_model, "template": CLAP_TEMPLATE}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def plan_episodes(cfg: BenchConfig, recipe: "Recipe", items: Sequence["Item"], root: Path, max_seconds: float) -> EpisodeBench:
    """Everything :func:`run_episodes` computes from, decided without a model (pure apart from reading files)."""
    pool, base = _pool_items(cfg, recipe, items)
    episodes, classes, excluded = _episodes(cfg, root, pool)
    resolve = _resolver(items, root)
    clips: dict[str, "Item"] = {}
    for e in episodes:
        for c in e.support + e.queries:
            if c.key not in clips:
                clips[c.key] = resolve(c.key, c.label)
    base_keys = tuple(sorted(it.key for it in base))
    clips.update({it.key: it for it in base})
    runs = []
    for way, shot in dict.fromkeys((e.way, e.shot) for e in episodes):
        for method in cfg.methods:
            runs += [EpisodeRun(method, mode, way, shot) for mode in (cfg.modes if method == "icl" else (None,))]
    fps = {r.name: _fingerprint(cfg, r, max_seconds, base_keys) for r in runs}
    return EpisodeBench(episodes, clips, runs, fps, base_keys, classes, excluded)


def _prediction_files(out: Path, run: EpisodeRun) -> list[Path]:
    pred = out / "predictions"
    return [pred / f"{run.name}.jsonl", *sorted(pred.glob(f"rank*/{run.name}.jsonl"))]


def _valid_lines(out: Path, bench: EpisodeBench, run: EpisodeRun) -> dict[tuple[str, int], dict]:
    """The run's lines on disk that still hold: same run fingerprint, an episode of this run (by content).
    ``(episode content hash, i) -> line``."""
    efps = {e.fingerprint for e in bench.group(run)}
    found: dict[tuple[str, int], dict] = {}
    for path in _prediction_files(out, run):
        for line in read_lines(path):
            efp, i = line.get("efp"), line.get("i")
            if line["fp"] == bench.fps[run.name] and efp in efps and isinstance(i, int):
                found.setdefault((efp, i), line)
    return found


def scan_episodes_done(out: Path, bench: EpisodeBench) -> None:
    """Fill ``bench.done`` from the prediction files (final and per-rank)."""
    for run in bench.runs:
        bench.done[run.name] = set(_valid_lines(out, bench, run))


# --------------------------------------------------------------------------------------------
# computing


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - np.max(x))
    return z / z.sum()


class _EpisodeEngine:
    """The loaded models, the encoded clips and the per-method predictions of one episode."""

    def __init__(self, cfg: BenchConfig, engine: _Engine, bench: EpisodeBench):
        self.cfg, self.engine, self.bench = cfg, engine, bench
        self.codes: dict[str, np.ndarray] = {}
        self.errors: dict[str, str] = {}
        self.embeddings: dict[str, np.ndarray] = {}
        self.centre: np.ndarray | None = None
        self.clap_scores: dict[str, np.ndarray | str] = {}
        self._clap_labels: tuple[str, ...] = ()

    def encode(self, keys: Sequence[str], progress_factory: ProgressFactory | None) -> None:
        """Codes and embeddings of ``keys``, each clip through the codec once (the code cache remembers)."""
        from icl_audio.encoding import stream_codes
        from icl_audio.retrieval import clip_embeddings

        clf = self.engine.classifier()
        clf.scorer.prepare()  # the scorer's one-time state before the codec's first chunk (icl_audio.memory)
        keys = [k for k in dict.fromkeys(keys) if k not in self.codes and k not in self.errors]
        bar = progress_factory(len(keys), "encoding episode clips") if progress_factory and keys else None
        with _quiet_crops():
            for enc in stream_codes((self.bench.items[k].audio for k in keys), clf.codec_model, cache=clf.cache,
                                    max_seconds=self.engine.max_seconds, progress=bar):
                key = keys[enc.index]
                if enc.codes is None:
                    self.errors[key] = str(enc.error)
                else:
                    self.codes[key] = np.asarray(enc.codes)
        ok = [k for k in keys if k in self.codes]
        for key, row in zip(ok, clip_embeddings(clf.lm, [self.codes[k] for k in ok]) if ok else []):
            self.embeddings[key] = row
        base = [k for k in self.bench.base_keys if k in self.embeddings]
        if base and self.centre is None:
            self.centre = np.mean([self.embeddings[k] for k in base], axis=0)

    def clap(self, keys: Sequence[str], labels: Sequence[str], progress_factory: ProgressFactory | None) -> None:
        """CLAP's scores of each query clip over every label of the episodes (each clip read once)."""
        keys = [k for k in dict.fromkeys(keys) if k not in self.clap_scores]
        if not keys:
            return
        clap = self.engine.clap()
        bar = progress_factory(len(keys), "CLAP") if progress_factory else None
        import os

        paths: list[Any] = [self.bench.items[k].audio for k in keys]
        text = [os.fspath(p) if isinstance(p, (str, os.PathLike)) else p for p in paths]
        for key, result in zip(keys, clap.rank_files(text, list(labels), max_seconds=self.engine.max_seconds, progress=bar)):
            self.clap_scores[key] = result if isinstance(result, str) else np.array([dict(result)[l] for l in labels])
        self._clap_labels = tuple(labels)

    def predict(self, episode: Episode, runs: Sequence[EpisodeRun]) -> dict[str, list[dict[str, Any]]]:
        """Each run's lines for every query of ``episode`` (a line per query, in query order)."""
        labels = list(episode.labels)
        broken = next((c for c in episode.support if c.key in self.errors), None)
        out: dict[str, list[dict[str, Any]]] = {}
        for run in runs:
            started = time.perf_counter()
            if broken is not None and run.method != "clap-zero-shot":
                lines = [{"error": f"support clip unreadable: {self.errors[broken.key]}"} for _ in episode.queries]
            elif run.method == "icl":
                lines = self._icl(episode, labels, run.mode)
            elif run.method in ("prototype", "nearest"):
                lines = self._embedding_baseline(episode, labels, run.method)
            elif run.method == "random-label":
                lines = [{"ranked": _round_ranked(baselines.random_label(labels, baselines.query_rng(episode.seed, run.method, q.key))),
                          "demonstrations": []} for q in episode.queries]
            elif run.method == "clap-zero-shot":
                lines = [self._clap_line(q.key, labels) for q in episode.queries]
            else:
                raise AssertionError(run.method)
            # One episode's work (the shared prompt prefix, above all) counts equally in its queries' lines.
            seconds = (time.perf_counter() - started) / len(episode.queries)
            for line in lines:
                line["seconds"] = round(seconds, 6)
            out[run.name] = lines
        return out

    def _icl(self, episode: Episode, labels: list[str], mode: str) -> list[dict[str, Any]]:
        from icl_audio.engine import loglikelihood_shared
        from icl_audio.prompt import Demo

        clf = self.engine.classifier()
        builder = clf.scorer.builder
        ok = [i for i, q in enumerate(episode.queries) if q.key in self.codes]
        lines: list[dict[str, Any]] = [{"error": self.errors.get(q.key, "unreadable")} for q in episode.queries]
        if not ok:
            return lines
        demos = [Demo(self.codes[c.key], c.label) for c in episode.support]
        prompt = builder.build_episode(demos, [self.codes[episode.queries[i].key] for i in ok], labels, mode=mode,
                                       max_context=SCORING_DEFAULTS["max_context"])
        results = loglikelihood_shared(clf.lm, prompt.shared, [(q.prefix, q.targets) for q in prompt.queries],
                                       hidden_ids=prompt.hidden_ids)
        for i, part, raw in zip(ok, prompt.queries, results):
            probs = _softmax(np.array([s for s, _ in raw], dtype=np.float64))  # normalize "sum", uncalibrated
            order = np.argsort(-probs, kind="stable")
            lines[i] = {
                "ranked": _round_ranked((labels[j], probs[j]) for j in order),
                "prompt_tokens": len(prompt.shared) + len(part.prefix),
                "demo_tokens": list(prompt.demo_tokens),
                "query_tokens": part.query_tokens,
                "demos_used": prompt.demos_used,
                "cropped": bool(prompt.cropped or part.cropped),
            }
        return lines

    def _embedding_baseline(self, episode: Episode, labels: list[str], method: str) -> list[dict[str, Any]]:
        support = np.stack([self.embeddings[c.key] for c in episode.support])
        support_labels = [c.label for c in episode.support]
        ok = [i for i, q in enumerate(episode.queries) if q.key in self.embeddings]
        lines: list[dict[str, Any]] = [{"error": self.errors.get(q.key, "unreadable")} for q in episode.queries]
        if not ok:
            return lines
        queries = np.stack([self.embeddings[episode.queries[i].key] for i in ok])
        if method == "prototype":
            ranked = baselines.prototype(support, support_labels, queries, labels, centre=self.centre)
        else:
            ranked = baselines.nearest(support, support_labels, queries, labels)
        for i, r in zip(ok, ranked):
            lines[i] = {"ranked": _round_ranked(r), "demonstrations": []}
        return lines

    def _clap_line(self, key: str, labels: list[str]) -> dict[str, Any]:
        scores = self.clap_scores[key]
        if isinstance(scores, str):
            return {"error": scores}
        # CLAP's softmax over every label, renormalised over the episode's: the softmax over these alone.
        picked = np.array([scores[self._clap_labels.index(label)] for label in labels])
        picked = picked / picked.sum()
        order = sorted(range(len(labels)), key=lambda j: (-picked[j], j))
        return {"ranked": _round_ranked((labels[j], picked[j]) for j in order), "demonstrations": []}


def _write_lines(out: Path, dist: Dist, bench: EpisodeBench, episode: Episode, predicted: dict[str, list[dict]],
                 files: dict[str, Any], on_prediction) -> int:
    written = 0
    for run in bench.runs:
        lines = predicted.get(run.name)
        if lines is None:
            continue
        for i, (query, line) in enumerate(zip(episode.queries, lines)):
            if (episode.fingerprint, i) in bench.done[run.name]:
                continue
            full = {"fp": bench.fps[run.name], "episode": episode.index, "efp": episode.fingerprint, "i": i,
                    "query": query.key, "truth": [query.label], **line}
            if i in episode.leaked:
                full["query_in_support"] = True
            handle = files.get(run.name)
            if handle is None:
                handle = files[run.name] = _open_append(out / "predictions" / f"rank{dist.rank}" / f"{run.name}.jsonl")
            handle.write(json.dumps(full, ensure_ascii=False) + "\n")
            handle.flush()  # a kill loses at most this line; a torn line is ignored on resume
            bench.done[run.name].add((episode.fingerprint, i))
            written += 1
            if on_prediction is not None:
                on_prediction(run, query.key)
    return written


def compute_episodes(cfg: BenchConfig, bench: EpisodeBench, engine: _Engine, out: Path, dist: Dist, *,
                     progress_factory: ProgressFactory | None, on_prediction) -> int:
    """Compute this rank's missing lines, appending each as it is made; returns how many were written."""
    pending = [e for p, e in enumerate(bench.episodes) if dist.owns(p) and bench.missing(e)]
    if not pending:
        return 0
    work = _EpisodeEngine(cfg, engine, bench)
    missing = {e.index: {r.method for r in bench.missing(e)} for e in pending}
    # The clips of every episode that some codes-reading method still lacks, each encoded once.
    keys = [c.key for e in pending if missing[e.index] & {"icl", "prototype", "nearest"} for c in e.support + e.queries]
    if any("prototype" in m for m in missing.values()):
        keys += list(bench.base_keys)
    if keys:
        work.encode(keys, progress_factory)
    clap_keys = [q.key for e in pending if "clap-zero-shot" in missing[e.index] for q in e.queries]
    if clap_keys:
        work.clap(clap_keys, sorted({label for e in bench.episodes for label in e.labels}), progress_factory)
    bar = progress_factory(len(pending), "episodes") if progress_factory else None
    files: dict[str, Any] = {}
    written = 0
    try:
        for episode in pending:
            predicted = work.predict(episode, bench.missing(episode))
            written += _write_lines(out, dist, bench, episode, predicted, files, on_prediction)
            if bar:
                bar(1)
    finally:
        for handle in files.values():
            handle.close()
    return written


def merge_episode_run(out: Path, bench: EpisodeBench, run: EpisodeRun) -> list[dict]:
    """The run's lines in (episode, query) order into ``predictions/<run>.jsonl``; rank files removed.

    Lines of the same run for episodes outside this invocation (an earlier ``--episodes 1000`` rerun
    with 100) are kept after them, for a later run to reuse; lines of other settings are dropped.
    Returns this invocation's lines. Raises BenchError if one is missing (a process stopped early).
    """
    from icl_audio.fsutil import atomic_write

    found = _valid_lines(out, bench, run)
    current = {e.fingerprint for e in bench.group(run)}
    kept: dict[tuple, dict] = {}
    for path in _prediction_files(out, run):
        for line in read_lines(path):
            if line["fp"] == bench.fps[run.name] and line.get("efp") not in current:
                kept.setdefault((line.get("efp"), line.get("i")), line)
    lines = []
    for e in bench.group(run):
        for i, query in enumerate(e.queries):
            line = found.get((e.fingerprint, i))
            if line is None:
                raise BenchError(f"{run.name}: no prediction for episode {e.index}, query {query.key} (a process stopped "
                                 "early? re-run the same command to resume)")
            lines.append({**line, "episode": e.index, "truth": [query.label]})
    files = _prediction_files(out, run)
    atomic_write(files[0], "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines + list(kept.values())))
    for path in files[1:]:
        path.unlink(missing_ok=True)
    return lines


def run_episodes(cfg: BenchConfig, recipe: "Recipe", items: Sequence["Item"], root: Path, *, dist: Dist,
                 progress_factory: ProgressFactory | None = None,
                 on_prediction: Callable[[EpisodeRun, str], None] | None = None):
    """Run (or resume) the episode bench of one source; rank 0 writes and returns the results.

    ``cfg``: a validated episode config (``cfg.is_episodes``); ``recipe``/``items``: the source and its
    clips; ``root``: the folder keys are relative to (``.scp`` lists, episode files from another machine).
    Returns :class:`icl_audio.bench.arch.BenchOutcome`.
    """
    from icl_audio.bench.arch import BenchOutcome
    from icl_audio.bench.episode_report import finish_episodes

    max_seconds = float(cfg.clip_seconds if cfg.clip_seconds is not None else recipe.clip_seconds)
    bench = plan_episodes(cfg, recipe, items, root, max_seconds)
    out = cfg.out_dir.expanduser().resolve()
    if "clap-zero-shot" in cfg.methods:
        from icl_audio.bench.clap import resolve_clap

        resolve_clap(cfg.clap_model)  # a missing CLAP model fails now, in one line, before anything loads
    if dist.is_main:
        write_episodes(out / "episodes.jsonl", bench.episodes)
    scan_episodes_done(out, bench)
    total = sum(len(e.queries) for r in bench.runs for e in bench.group(r))
    reused = sum(len(d) for d in bench.done.values())
    if dist.world > 1:
        dist.start(dist.device(cfg.device))
    engine = _Engine(cfg, dist, max_seconds)
    # Models load on rank 0 first, so that locally built ones (debug) are never written by two processes.
    if dist.is_main and any(bench.missing(e) for e in bench.episodes):
        engine.classifier()
    dist.barrier()
    computed = compute_episodes(cfg, bench, engine, out, dist, progress_factory=progress_factory, on_prediction=on_prediction)
    dist.barrier()
    if not dist.is_main:
        return BenchOutcome(None, computed, reused, out)
    results = finish_episodes(cfg, recipe, root, bench, out, max_seconds, engine)
    return BenchOutcome(results, total - reused, reused, out)
