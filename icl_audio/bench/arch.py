"""The bench runner: the fold protocol (per evaluation unit, one support set and one retrieval, then every
method x k x mode), or N-way K-shot episodes (:mod:`icl_audio.bench.episode_run`), on any source.

Flow of the fold protocol for one source (``run_bench``)::

    source (resolve_source: a registered recipe + root, the user's folder/CSV, or a caller's recipe + items)
      -> items -> evaluation units (folds or "test")
    per unit: support items -> stored support set  `bench-<dataset>-<unit>-<hash>` (built once, by rank 0)
              query items   -> [--limit: seeded subsample, dataset order kept] -> this rank's shard
              query codes (encoding.stream_codes) -> clip embeddings -> neighbours once, with the largest k
              linear probe trained once on the support set's embeddings (same representation)
              per query: every run (method x k x mode) on that same retrieval, one JSON line each
    rank 0, after all ranks: merge the lines per run, compute metrics, write the reports

Every clip, support or query, is read up to the dataset's ARCH clip length (``Recipe.clip_seconds``:
ESC-50 5 s, FSD50K 10 s, MTT 30 s, ...), its head kept as ARCH does. Shorter clips are *not* padded
with silence: ARCH pads so that a probe sees fixed-size batches, but here padding would only add
codec tokens of silence to every prompt, spending the context budget on nothing and telling the LLM
that silence is part of the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from icl_audio.bench.clap import CLAP_TEMPLATE
from icl_audio.bench.config import ALWAYS_METHODS, BenchConfig, BenchError, validate
from icl_audio.bench.distributed import Dist
from icl_audio.bench.plan import Unit, plan_runs, run_fingerprint, select_units, subsample, support_set_name, unit_label
from icl_audio.bench.predict import ProgressFactory, _Engine
from icl_audio.bench.results import finish
from icl_audio.bench.store import scan_done
from icl_audio.errors import SupportSetError

if TYPE_CHECKING:
    from icl_audio.recipes import Item, Recipe


@dataclass(frozen=True)
class BenchOutcome:
    """What a bench invocation did: the results (rank 0; None on other ranks) and the work done."""

    results: dict[str, Any] | None
    computed: int  # prediction lines computed by this invocation (rank 0: by all processes; others: by this one)
    reused: int  # prediction lines found on disk from earlier runs (all shards)
    out: Path


def run_bench(
    cfg: BenchConfig,
    *,
    dist: Dist | None = None,
    progress_factory: ProgressFactory | None = None,
    on_prediction: Callable[[Any, str], None] | None = None,
    recipe: "Recipe | None" = None,
    items: "Sequence[Item] | None" = None,
    source: str | None = None,
) -> BenchOutcome:
    """Run (or resume) the bench of one source; rank 0 writes and returns the results.

    ``cfg``: what to run (the fold protocol, or episodes when ``cfg.is_episodes``). ``recipe``,
    ``items`` and ``source`` (naming where they come from): a source built at run time (``bench hf``,
    or any caller's; see :func:`icl_audio.bench.sources.resolve_source`), in place of ``cfg.dataset``'s
    recipe reading ``cfg.root`` / ``cfg.hf`` or ``cfg.source``. ``dist``: this process's rank (default: a
    one-process run). ``progress_factory(total, text)`` returns a ``progress(n)`` callback (e.g.
    ``ProgressBars.bar``). ``on_prediction(run, query)`` is called after each newly computed
    prediction with its run (``.name``) and query key (tests count and interrupt with it).
    """
    from icl_audio.bench.sources import resolve_source

    cfg = validate(cfg)
    dist = dist or Dist()
    recipe, items, root = resolve_source(cfg, recipe, items, source)
    if cfg.is_episodes:
        from icl_audio.bench.episode_run import run_episodes

        return run_episodes(cfg, recipe, items, root, dist=dist, progress_factory=progress_factory,
                            on_prediction=on_prediction)
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
