"""The expensive part: models, support sets, queries -- computing and appending a unit's prediction lines."""

from __future__ import annotations

import json
import logging
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from icl_audio.bench import baselines
from icl_audio.bench.config import RETRIEVAL_METHODS, BenchConfig
from icl_audio.bench.distributed import Dist
from icl_audio.bench.plan import Unit, unit_label
from icl_audio.bench.store import _open_append

log = logging.getLogger("icl_audio.bench")


ProgressFactory = Callable[[int, str], "Callable[[int], None] | None"]


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
        """An ICLClassifier sharing the loaded LM and codec (loads them on first use, as a checked pair)."""
        from icl_audio.classifier import ICLClassifier
        from icl_audio.models import load_pair

        if self._clf is None:
            pair = load_pair(self.cfg.model, self.cfg.codec, device=self.device)
            self._clf = ICLClassifier(self.cfg.model, self.cfg.codec, device=self.device, mode="direct",
                                      max_seconds=self.max_seconds, lm=pair.lm, codec_model=pair.codec)
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
        from icl_audio.retrieval import Neighbor, clip_embeddings, retrieve

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
            for enc in stream_codes((unit.queries[p].audio for p in positions), encoder.codec_model, cache=encoder.cache,
                                    max_seconds=self.max_seconds, progress=bar):
                if enc.codes is None:
                    errors[positions[enc.index]] = str(enc.error)
                else:
                    codes[positions[enc.index]] = np.asarray(enc.codes)
        ok = [p for p in positions if p in codes]
        embeddings = clip_embeddings(lm, [codes[p] for p in ok]) if ok else np.zeros((0, support.embeddings.shape[1]), np.float32)
        row_of = {p: i for i, p in enumerate(ok)}
        kmax = max([r.k for r in unit.runs if r.method in RETRIEVAL_METHODS and r.k] or [0])
        neighbours = retrieve(support, embeddings, kmax) if kmax > 0 and ok else [[] for _ in ok]
        clap = self._clap_rankings(unit, positions, candidates, progress_factory, support.multi_label)

        work = sum(len(unit.missing(p)) for p in positions)
        bar = progress_factory(work, f"predicting {unit_label(unit.unit)}") if progress_factory else None
        files: dict[str, Any] = {}
        computed = 0
        try:
            for p in positions:
                item = unit.queries[p]
                key = item.key
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
        for p, result in zip(todo, clap.rank_files([unit.queries[p].audio for p in todo], candidates,
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
