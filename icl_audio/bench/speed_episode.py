"""`bench speed --episode`: what sharing an episode's demonstrations saves, at the real Llasa-1B shape.

An N-way K-shot episode shows the same N x K demonstrations to each of its queries. Scored one
prompt per query, every query recomputes the demonstrations' keys and values; scored with
:func:`icl_audio.engine.loglikelihood_shared`, they are computed once per episode and each query
only adds its own tokens. Both are timed here on one episode of random codes (250 tokens per clip,
a 5 s clip), cropped into the 2,048-token context once, as the episode bench builds it.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from icl_audio.bench.machine import load_average, run_facts
from icl_audio.bench.speed import CLIP_TOKENS, ESC50_LABELS
from icl_audio.constants import LLASA_CONTEXT


log = logging.getLogger("icl_audio.bench")


def _log(msg: str) -> None:
    log.info(msg)  # progress: the CLI shows the bench logger's INFO lines on stderr


def _episode(lm, way: int, shot: int, queries: int, mode: str, seed: int = 0):
    from icl_audio.prompt import Demo, PromptBuilder

    rng = np.random.default_rng(seed)
    n_codes = min(lm.layout.n_speech, 65_536)
    labels = list(ESC50_LABELS[:way])
    order = rng.permutation(way * shot)
    demos = [Demo(rng.integers(0, n_codes, CLIP_TOKENS), labels[i % way]) for i in order]
    query_codes = [rng.integers(0, n_codes, CLIP_TOKENS) for _ in range(way * queries)]
    return PromptBuilder(lm, "llasa").build_episode(demos, query_codes, sorted(labels), mode=mode, max_context=LLASA_CONTEXT)


EXACT_MODEL = dict(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=2, intermediate_size=1024, head_dim=32,
                   dtype="float32", seed=1)


def run_episode_speed_bench(way: int = 5, shot: int = 5, queries: int = 1, reps: int = 2, *, mode: str = "direct",
                            model_kwargs: dict | None = None, exact_kwargs: dict | None = None) -> dict:
    """Time one N-way K-shot episode scored one prompt per query (a) and with the shared prefix (b).

    ``way``/``shot``/``queries``: the episode's shape (``queries`` per class). ``mode``: "direct" or
    "channel". Each of ``reps`` rounds runs a b b a (or b a a b); ``speedup`` is the median of the
    per-round ratios a/b and ``saving`` = 1 - b/a. ``max_abs_diff``: the largest difference between
    the two, in nats, over every query and label, in fp32 on a smaller model with the same
    vocabulary and prompt. ``model_kwargs`` / ``exact_kwargs`` override
    :func:`~icl_audio.families.llasa.build_random_lm`'s shape for the timing / the exactness model (tests use tiny
    ones). Returns a flat dict (JSON-ready).
    """

    from icl_audio.engine import loglikelihood, loglikelihood_shared, make_plan, verified_path
    from icl_audio.families.llasa import build_random_lm

    if way < 2 or shot < 1 or queries < 1 or reps < 1:
        raise ValueError("way must be >= 2, shot, queries and reps >= 1")
    load_start = load_average()
    _log("building a random model of the Llasa-1B shape ...")
    t0 = time.perf_counter()
    lm = build_random_lm(**(model_kwargs or {}))
    build_s = time.perf_counter() - t0
    ep = _episode(lm, way, shot, queries, mode)
    parts = [(q.prefix, q.targets) for q in ep.queries]
    _log(f"{way}-way {shot}-shot, {len(parts)} queries: shared prefix {len(ep.shared)} tokens, "
         f"{ep.demo_tokens[0]} audio tokens kept per demonstration; warming up ...")
    loglikelihood(lm, ep.shared[:128], ep.queries[0].targets[:2], hidden_ids=ep.hidden_ids)
    loglikelihood_shared(lm, ep.shared[:128], parts[:1], hidden_ids=ep.hidden_ids)  # proves the shared path once
    path = verified_path(lm)

    def per_query(lm=lm):
        return [loglikelihood(lm, ep.shared + prefix, targets, hidden_ids=ep.hidden_ids) for prefix, targets in parts]

    def shared(lm=lm):
        return loglikelihood_shared(lm, ep.shared, parts, hidden_ids=ep.hidden_ids)

    times = {per_query: [], shared: []}
    ratios = []
    for r in range(reps):
        _log(f"round {r + 1}/{reps}: (a) one prompt per query, (b) the shared prefix ...")
        spent = {per_query: 0.0, shared: 0.0}
        for fn in ((per_query, shared, shared, per_query) if r % 2 == 0 else (shared, per_query, per_query, shared)):
            t0 = time.perf_counter()
            fn()
            spent[fn] += time.perf_counter() - t0
        for fn in spent:
            times[fn].append(spent[fn] / 2)
        ratios.append(spent[per_query] / spent[shared])
    a, b = float(np.median(times[per_query])), float(np.median(times[shared]))
    # Tokens through the model, from the plans alone: the noise-free side of the saving.
    plans = [make_plan(ep.shared + prefix, targets, hidden_ids=ep.hidden_ids) for prefix, targets in parts]
    fed_per_query = sum(len(p.prefix) + p.trie_tokens for p in plans)
    n_shared = len([t for t in ep.shared if t not in ep.hidden_ids])
    fed_shared = n_shared + sum(len(p.prefix) - n_shared + p.trie_tokens for p in plans)
    speedup = float(np.median(ratios))
    dtype = str(lm.dtype).replace("torch.", "")
    reuse = exact_kwargs is not None and exact_kwargs == model_kwargs  # tests: one tiny model for both
    small = lm if reuse else None
    del lm, per_query, shared, times  # free the 2.7 GB model before the next

    _log("exactness: fp32, smaller model, every query and label ...")
    small = small or build_random_lm(**(exact_kwargs or EXACT_MODEL))
    got = loglikelihood_shared(small, ep.shared, parts, hidden_ids=ep.hidden_ids)
    ref = [loglikelihood(small, ep.shared + prefix, targets, hidden_ids=ep.hidden_ids, path="plain") for prefix, targets in parts]
    max_abs_diff = max(abs(x[0] - y[0]) for g, r in zip(got, ref) for x, y in zip(g, r))
    return {
        "mode": mode,
        "way": way,
        "shot": shot,
        "queries": len(parts),
        "engine_path": path,
        "shared_prefix_tokens": len(ep.shared),
        "demo_tokens_kept": ep.demo_tokens[0],
        "query_tokens_kept": ep.queries[0].query_tokens,
        "cropped": ep.cropped,
        "per_query_prompts_seconds_median": round(a, 3),
        "shared_prefix_seconds_median": round(b, 3),
        "speedup": round(speedup, 3),
        "fed_tokens_per_query_prompts": fed_per_query,
        "fed_tokens_shared": fed_shared,
        "fed_tokens_ratio": round(fed_per_query / fed_shared, 3),
        "speedup_each": [round(x, 3) for x in ratios],
        "saving": round(1 - b / a, 4),
        "seconds_per_query_per_query_prompts": round(a / len(parts), 3),
        "seconds_per_query_shared": round(b / len(parts), 3),
        "max_abs_diff": float(f"{max_abs_diff:.3g}"),
        "max_abs_diff_model": "fp32 hidden {hidden_size}, {num_layers} layers".format(**(exact_kwargs or EXACT_MODEL)),
        "reps": reps,
        "dtype": dtype,
        "model_build_seconds": round(build_s, 1),
        **run_facts(load_start),
    }
