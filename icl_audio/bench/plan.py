"""Run planning: evaluation units, query subsampling, the runs of a unit, their fingerprints and support-set names."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from icl_audio.bench.config import ICL_METHODS, METHODS, RANDOM_METHODS, UNIT_METHODS, BenchError
from icl_audio.constants import LLASA_CONTEXT

if TYPE_CHECKING:
    from icl_audio.bench.distributed import Dist
    from icl_audio.recipes import Item, Recipe

#: Bumped when the meaning of a prediction line changes: old lines are then recomputed.
FORMAT_VERSION = 1

# The scoring options every icl run uses (the ICLClassifier defaults apart from the mode); they
# enter the fingerprints so that a change of defaults invalidates stored predictions.
SCORING_DEFAULTS = {"normalize": "sum", "calibrate": False, "template": "default", "max_context": LLASA_CONTEXT}


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

    chosen = set(seeded_order([it.key for it in queries], seed)[:limit])
    return [it for it in queries if it.key in chosen]


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
    parts: list[Any] = [str(root), model, codec, [[it.key, list(it.labels)] for it in items]]
    if max_seconds is not None:
        parts.append(float(max_seconds))
    payload = json.dumps(parts, ensure_ascii=False)
    return f"bench-{dataset}-{unit_label(unit)}-{hashlib.sha256(payload.encode('utf-8')).hexdigest()[:12]}"


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
        key = self.queries[position].key
        return [r for r in self.runs if key not in self.done.get(r.name, {})]

    def pending(self, dist: Dist | None = None) -> list[int]:
        """Query positions (of ``dist``'s shard, or all) that still lack some prediction."""
        return [p for p in range(len(self.queries)) if (dist is None or dist.owns(p)) and self.missing(p)]
