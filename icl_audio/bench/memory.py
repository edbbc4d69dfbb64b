"""Memory bench: the peak resident memory of each stage of a job, at the real model shapes.

For each support-set size asked for, one fresh process runs the stages of a job in order and
measures each::

    load LLM          the LLM (default: random weights at Llasa-1B's exact shape, in bf16 where the CPU has it)
    prepare scorer    the engine's proofs and its fp32 head once (Scorer.prepare, as classify runs it first)
    load codec        the codec (default: random weights at XCodec2's exact shape)
    encode            N synthetic speech-like clips through icl_audio.encoding.stream_codes and a code cache
    embed             icl_audio.retrieval.clip_embeddings of the N clips
    index             the FAISS index over them, written to disk as a stored support set's is
    score direct      one query: retrieval, prompt, every label scored (direct mode)
    score channel     the same query in channel mode

A support-set build is encode + embed + index: its peak is the largest of theirs (``build_peak_mb``;
``build_peak_above_start_mb``: above the memory held when the build started).
Comparing sizes (``--clips 10,200``) shows what grows with the number of clips.

**How peaks are measured.** Peak RSS, from the kernel's own high-water mark: before each stage the
mark is reset (``/proc/self/clear_refs``, value 5, Linux >= 4.0) and after it ``VmHWM`` in
``/proc/self/status`` is the stage's peak, to the page, however short the spike (a sampling thread
would miss allocations that live a few milliseconds, as the LM head's blocks do). Where the mark
cannot be reset (not Linux), the figure is ``ru_maxrss``, the process's peak so far: a stage's figure
is then only its own when it sets a new peak (``method`` says which was used). Each size runs in its
own process, so one size's freed-but-kept memory (malloc arenas, oneDNN scratchpads) never counts
in another's figures; the children use the CLI's allocator settings when the parent has them.

The models load through :func:`icl_audio.models.load_lm` / :func:`icl_audio.models.load_codec`,
the loading entry of every job: ``random-llasa-1b`` and ``random-xcodec2`` (random weights at the
real shapes, saved once into the cache and read back with ``from_pretrained``), ``debug``, hub ids
and folders; ``--quant int8|nf4`` loads the LLM quantised as a real checkpoint would be.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from icl_audio.bench.machine import cpu_name, load_average, maxrss_mb, reset_peak, status_mb

log = logging.getLogger("icl_audio.bench")

STAGES = ("load LLM", "prepare scorer", "load codec", "encode", "embed", "index", "score direct", "score channel")
BUILD_STAGES = ("encode", "embed", "index")
RANDOM_LLM = "random-llasa-1b"
RANDOM_CODEC = "random-xcodec2"


@dataclass(frozen=True)
class MemoryBenchConfig:
    """What to measure. ``clips``: support-set sizes, one process each; ``seconds``: length of each
    synthetic clip; ``labels``: candidate labels scored per query (ESC-50 names); ``k``:
    demonstrations per prompt; ``model``/``codec``: names for :func:`build_llm`/:func:`build_codec`;
    ``quant``: None (the model's dtype), "int8" or "nf4" (bitsandbytes)."""

    clips: tuple[int, ...] = (10,)
    seconds: float = 5.0
    labels: int = 10
    k: int = 4
    model: str = RANDOM_LLM
    codec: str = RANDOM_CODEC
    quant: str | None = None

    def __post_init__(self) -> None:
        if not self.clips or any(int(n) < 1 for n in self.clips):
            raise ValueError("clips: one or more support sizes, each at least 1")
        if not self.seconds > 0 or self.labels < 1 or self.k < 0:
            raise ValueError("seconds must be > 0, labels >= 1 and k >= 0")


# --------------------------------------------------------------------------------------------
# measuring


class PeakMeter:
    """Peak resident memory of a block of code (see the module docstring for the method)."""

    def __init__(self) -> None:
        self.method = "vmhwm-reset" if reset_peak() and status_mb("VmHWM") is not None else "ru_maxrss"

    def rss(self) -> float:
        """Resident memory now, in MB (the peak so far where the current figure is not available)."""
        now = status_mb("VmRSS")
        return now if now is not None else maxrss_mb()

    def measure(self, name: str, work, figures: dict) -> Any:
        """Run ``work()``; record its stage figures in ``figures[name]``; return its result."""
        before = self.rss()
        if self.method == "vmhwm-reset":
            reset_peak()
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
        peak = status_mb("VmHWM") if self.method == "vmhwm-reset" else maxrss_mb()
        figures[name] = {
            "rss_before_mb": round(before, 1),
            "peak_mb": round(peak, 1),
            "peak_above_before_mb": round(peak - before, 1),
            "rss_after_mb": round(self.rss(), 1),
            "seconds": round(seconds, 2),
        }
        log.info("%s: peak %.0f MB (%+.0f MB), %.1f s", name, peak, peak - before, seconds)
        return result


# --------------------------------------------------------------------------------------------
# the models: the hook where other names (quantised, random real shapes) plug in


def build_llm(name: str, *, quant: str | None = None):
    """The LLM for ``name`` on CPU, through :func:`icl_audio.models.load_lm` like every job:
    ``random-llasa-1b`` (random weights at Llasa-1B's exact shape, saved once into the cache and read
    back with ``from_pretrained``), ``debug``, a hub id or a folder; ``quant`` "int8" or "nf4"."""
    from icl_audio.models import load_lm

    return load_lm(name, device="cpu", quant=quant)


def build_codec(name: str):
    """The codec for ``name`` on CPU, through :func:`icl_audio.models.load_codec`: ``random-xcodec2``
    (random weights at XCodec2's exact shape, saved once), ``debug``, a hub id or a folder."""
    from icl_audio.models import load_codec

    return load_codec(name, device="cpu")


# --------------------------------------------------------------------------------------------
# one size, in this process


def measure_stages(config: MemoryBenchConfig, n_clips: int) -> dict:
    """Run every stage for a support set of ``n_clips`` clips in this process; returns per-stage figures."""
    import numpy as np

    from icl_audio.bench.codec import speech_like_clip
    from icl_audio.bench.speed import esc50_labels
    from icl_audio.codecache import CodeCache
    from icl_audio.encoding import stream_codes
    from icl_audio.retrieval import Index, clip_embeddings, retrieve
    from icl_audio.scoring import Demo, Scorer, ScoringOptions

    meter = PeakMeter()
    figures: dict[str, dict] = {}
    labels = esc50_labels(config.labels)
    support_labels = [labels[i % len(labels)] for i in range(n_clips)]
    baseline = meter.rss()
    with tempfile.TemporaryDirectory(prefix="icl-audio-memory-bench-") as tmp:
        lm = meter.measure("load LLM", lambda: build_llm(config.model, quant=config.quant), figures)
        direct = Scorer(lm, ScoringOptions(mode="direct"))
        meter.measure("prepare scorer", direct.prepare, figures)
        codec = meter.measure("load codec", lambda: build_codec(config.codec), figures)
        clips = (speech_like_clip(seed, config.seconds) for seed in range(n_clips + 1))  # decoded lazily

        def encode() -> list:
            return [item.codes for item in stream_codes(clips, codec, cache=CodeCache(Path(tmp) / "codes"),
                                                        max_seconds=None)]

        codes = meter.measure("encode", encode, figures)
        query, support_codes = codes[0], codes[1:]
        embeddings = meter.measure("embed", lambda: clip_embeddings(lm, support_codes), figures)

        def index() -> Index:
            built = Index(embeddings)
            built.write(Path(tmp) / "index.faiss")
            return built

        built = meter.measure("index", index, figures)
        support = _Support(built, tuple((lab,) for lab in support_labels))

        def score(mode: str):
            def run():
                (neighbours,) = retrieve(support, clip_embeddings(lm, [query]), config.k)
                demos = [Demo(support_codes[n.index], support_labels[n.index]) for n in neighbours]
                return Scorer(lm, ScoringOptions(mode=mode)).score(demos, query, labels)
            return run

        for mode in ("direct", "channel"):
            meter.measure(f"score {mode}", score(mode), figures)
    return {
        "clips": n_clips,
        "method": meter.method,
        "process_start_rss_mb": round(baseline, 1),
        "stages": figures,
        "build_peak_mb": max(figures[s]["peak_mb"] for s in BUILD_STAGES),
        "build_peak_above_start_mb": round(max(figures[s]["peak_mb"] for s in BUILD_STAGES)
                                           - figures[BUILD_STAGES[0]]["rss_before_mb"], 1),
        "codes_per_clip": round(float(np.mean([len(c) for c in support_codes])), 1),
    }


class _Support:
    """What :func:`icl_audio.retrieval.retrieve` reads of a support set: its index and labels."""

    def __init__(self, index, labels):
        self.index, self.labels = index, labels

    def __len__(self) -> int:
        return len(self.labels)


# --------------------------------------------------------------------------------------------
# every size, each in a fresh process


def _measure_in_child(config: MemoryBenchConfig, n_clips: int) -> dict:
    """:func:`measure_stages` in a fresh Python process (progress on this process's stderr)."""
    from icl_audio import memory

    request = {"config": {**asdict(config), "clips": list(config.clips)}, "n_clips": n_clips,
               "keep_freed_memory": memory.allocator_tuned()}
    out = subprocess.run([sys.executable, "-m", "icl_audio.bench.memory"], input=json.dumps(request),
                         stdout=subprocess.PIPE, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the memory bench's process for {n_clips} clips failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_memory_bench(config: MemoryBenchConfig = MemoryBenchConfig(), *, isolate: bool = True) -> dict:
    """Measure every stage for each size of ``config.clips``, each in a fresh process (``isolate``;
    False: all in this process, one after the other, for tests). Returns a JSON-ready dict: one
    entry per size under ``sizes``, and ``build_peak_growth_mb``: the largest size's build peak
    minus the smallest's."""
    import torch

    sizes = sorted({int(n) for n in config.clips})
    load_start = load_average()
    results = {}
    for n in sizes:
        log.info("memory bench: %d clips of %g s, model %s, codec %s ...", n, config.seconds, config.model, config.codec)
        results[str(n)] = _measure_in_child(config, n) if isolate else measure_stages(config, n)
    peaks = [results[str(n)]["build_peak_mb"] for n in sizes]
    return {
        "model": config.model,
        "codec": config.codec,
        "seconds_per_clip": config.seconds,
        "labels": config.labels,
        "k": config.k,
        "quant": config.quant,
        "method": results[str(sizes[0])]["method"],
        "isolated": isolate,
        "sizes": results,
        "build_peak_growth_mb": round(peaks[-1] - peaks[0], 1),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "loadavg_1min_start": load_start,
        "loadavg_1min_end": load_average(),
        "torch": torch.__version__,
    }


def format_table(result: dict) -> str:
    """The result as a plain-text table: one row per stage; per size, the stage's peak RSS and how far
    it rose above the memory at the stage's start (MB)."""
    sizes = list(result["sizes"])
    head = ["stage"] + [f"{n} clips: peak (+start)" for n in sizes]
    rows = [[stage] + [f"{result['sizes'][n]['stages'][stage]['peak_mb']:.0f} "
                       f"({result['sizes'][n]['stages'][stage]['peak_above_before_mb']:+.0f})" for n in sizes]
            for stage in STAGES]
    rows.append(["support build (encode+embed+index)"] + [
        f"{result['sizes'][n]['build_peak_mb']:.0f} ({result['sizes'][n]['build_peak_above_start_mb']:+.0f})"
        for n in sizes])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"build peak growth, {sizes[0]} -> {sizes[-1]} clips: {result['build_peak_growth_mb']:+.0f} MB "
                 f"(model {result['model']}, codec {result['codec']}, {result['seconds_per_clip']:g} s clips; "
                 f"peaks by {result['method']}; {result['cpu']}, {result['threads']} threads)")
    return "\n".join(lines)


def _child_main() -> None:
    request = json.loads(sys.stdin.read())
    handler = logging.StreamHandler(sys.stderr)  # this bench's progress only, not every library's INFO lines
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if request.get("keep_freed_memory"):
        from icl_audio.memory import keep_freed_memory

        keep_freed_memory()
    config = request["config"]
    config = MemoryBenchConfig(**{**config, "clips": tuple(config["clips"])})
    print(json.dumps(measure_stages(config, int(request["n_clips"]))))


if __name__ == "__main__":
    _child_main()
