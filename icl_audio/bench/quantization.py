"""Quantisation at the real size: peak memory, seconds per query and score difference from fp32 of the
LLM loaded in bf16, int8 and nf4, with random weights at Llasa-1B's exact shape.

Each mode runs in a process of its own (so that its peak memory is its own), loading the same random
model (``random-llasa-1b``, saved once into the cache) through :func:`icl_audio.models.load_random_lm`
and scoring the speed bench's prompt (k demonstrations of 250 audio tokens, a 250-token query,
ESC-50's label names) with the engine. The fp32 run is the reference the others are compared with:
the same weights (bf16 values), computed in fp32.

Random weights have none of the outlier features LLM.int8() was designed around, so the score
differences are those of quantisation noise on a model without outliers: real weights may differ.

Run: ``icl-audio bench speed --quant fp32,bf16,int8,nf4 [--labels 50 --k 4 --reps 2 --json]`` (a list
of modes; fp32 is always added as the reference); for one mode's timings with the engine's overhead
ratio, ``icl-audio bench speed --quant int8`` (a single mode).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

from icl_audio.bench.machine import cpu_name, load_average, reset_peak, status_mb

MODES = ("fp32", "bf16", "int8", "nf4")


def measure_mode(mode: str, *, labels: int = 50, k: int = 4, reps: int = 2, model_kwargs: dict | None = None) -> dict:
    """Load the random model in ``mode`` (fp32, bf16, int8, nf4) in this process and time the engine
    scoring one query over ``labels`` labels, ``reps`` times after a warm-up. Returns the figures and
    the label scores (JSON-ready)."""
    import torch

    from icl_audio.bench.speed import esc50_labels, speed_prompt
    from icl_audio.engine import loglikelihood
    from icl_audio.models import load_random_lm

    quant = mode if mode in ("int8", "nf4") else None
    dtype = {"fp32": "float32", "bf16": "bfloat16"}.get(mode)
    start = time.perf_counter()
    lm = load_random_lm(quant=quant, dtype=dtype, device="cpu", **(model_kwargs or {}))
    load_seconds = time.perf_counter() - start
    loaded = _memory()
    prompt = speed_prompt(lm, esc50_labels(labels), k)
    prefix, targets = list(prompt.prefix), list(prompt.targets)
    loglikelihood(lm, prefix[:128], targets[:2])  # warm-up: allocations, proofs of the fast paths
    reset = reset_peak()  # from here on the peak is the scoring's (with the model resident)
    times, scores = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        scores = [s for s, _ in loglikelihood(lm, prefix, targets)]
        times.append(time.perf_counter() - t0)
    return {
        "mode": mode,
        "compute_dtype": str(lm.dtype).replace("torch.", ""),
        "load_seconds": round(load_seconds, 1),
        # VmHWM: the most resident memory the process had while loading (what the machine must hold).
        "load_peak_rss_mb": loaded["VmHWM"],
        # After loading: anonymous memory (the model's own tensors) and pages of the checkpoint file
        # still mapped (page cache the kernel may reclaim, re-read when touched).
        "rss_anon_after_load_mb": loaded["RssAnon"],
        "rss_file_after_load_mb": loaded["RssFile"],
        "scoring_peak_rss_mb": _memory()["VmHWM"] if reset else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "seconds_per_query": round(float(np.median(times)), 2),
        "seconds_each": [round(t, 2) for t in times],
        "prompt_tokens": len(prefix),
        "threads": torch.get_num_threads(),
        "scores": scores,
    }


def _memory() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process in whole MB (Linux; empty elsewhere)."""
    figures = {key: status_mb(key) for key in ("VmHWM", "VmRSS", "RssAnon", "RssFile")}
    return {key: int(mb) for key, mb in figures.items() if mb is not None}


def compared_modes(text: str) -> tuple[str, ...] | None:
    """What ``bench speed --quant TEXT`` asks for: a list (or fp32/bf16 alone) is a comparison of those
    modes, returned in order without repeats; a single other name (int8, nf4) is None, one quantised
    model to time. An unknown mode in a list is a one-line ModelError."""
    from icl_audio.errors import ModelError

    if "," not in text and text.strip().lower() not in ("fp32", "bf16"):
        return None
    modes = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        named = ", ".join(unknown) if unknown else repr(text)
        raise ModelError(f"--quant: unknown mode {named}; compare any of {', '.join(MODES)}")
    return modes


def run_quant_bench(*, labels: int = 50, k: int = 4, reps: int = 2, modes=MODES, model_kwargs: dict | None = None,
                    log=None) -> dict:
    """:func:`measure_mode` for each of ``modes`` in a child process, then each mode's score
    difference from the fp32 run (max and mean absolute difference over the labels, in nats, and
    whether the best label is the same). ``model_kwargs``: another shape (tests use a tiny one)."""
    from icl_audio.models import load_random_lm

    say = log or logging.getLogger("icl_audio.bench").info  # progress: INFO lines of the bench logger
    # Built (and its tokenizer proven) once here, so no child pays for it inside its figures.
    say("preparing the random model (built once into the cache) ...")
    load_random_lm(dtype="bfloat16", **(model_kwargs or {}))
    if "fp32" not in modes:  # the reference every other mode is compared with
        modes = ("fp32", *modes)
    results: dict[str, dict] = {}
    for mode in modes:
        say(f"{mode}: loading and scoring in a fresh process ...")
        args = json.dumps({"mode": mode, "labels": labels, "k": k, "reps": reps, "model_kwargs": model_kwargs})
        out = subprocess.run([sys.executable, "-m", "icl_audio.bench.quantization", "--child", args],
                             capture_output=True, text=True, env=os.environ.copy())
        if out.returncode != 0:
            raise RuntimeError(f"{mode} run failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    reference = np.array(results["fp32"]["scores"]) if "fp32" in results else None
    for mode, r in results.items():
        scores = np.array(r.pop("scores"))
        if reference is not None and mode != "fp32":
            diff = np.abs(scores - reference)
            r["max_abs_diff_vs_fp32"] = float(f"{diff.max():.4g}")
            r["mean_abs_diff_vs_fp32"] = float(f"{diff.mean():.4g}")
            r["same_best_label_as_fp32"] = bool(scores.argmax() == reference.argmax())
    return {
        "weights": "random (Llasa-1B's shape)" if not model_kwargs else f"random {model_kwargs}",
        "labels": labels,
        "k": k,
        "reps": reps,
        "modes": results,
        "cpu": cpu_name(),
        "machine": platform.machine(),
        "loadavg_1min_end": load_average(),
    }


def format_table(result: dict) -> str:
    """The comparison as plain-text lines, one per mode (``--json`` gives every figure)."""
    lines = [f"{result['weights']}; {result['cpu']}; {result['labels']} labels, k={result['k']}"]
    for mode, r in result["modes"].items():
        diff = "reference" if mode == "fp32" else (
            f"max |diff| vs fp32 {r['max_abs_diff_vs_fp32']:.4g} nats (mean {r['mean_abs_diff_vs_fp32']:.4g}), "
            f"same best label: {'yes' if r['same_best_label_as_fp32'] else 'no'}")
        lines.append(f"{mode:5s} {r['compute_dtype']:9s} load peak {r['load_peak_rss_mb']:6d} MB, scoring peak "
                     f"{r['scoring_peak_rss_mb']:6d} MB, {r['seconds_per_query']:7.2f} s/query, {diff}")
    return "\n".join(lines)


def _child(argv: list[str]) -> int:
    """The per-mode process of :func:`run_quant_bench`: ``--child JSON`` -> one JSON line."""
    logging.getLogger("icl_audio").setLevel(logging.ERROR)  # the random-weights note: known here
    spec: dict[str, Any] = json.loads(argv[argv.index("--child") + 1])
    print(json.dumps(measure_mode(spec["mode"], labels=spec["labels"], k=spec["k"], reps=spec["reps"],
                                  model_kwargs=spec["model_kwargs"])))
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
