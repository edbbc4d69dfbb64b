"""Scorer speed bench: the engine against the arithmetic floor of its job and against naive per-label forwards.

The floor is what any exact scorer must compute, done the plainest way:
* direct: one forward over the prompt (the head on its last row);
* channel: the prompt once, then each label's continuation (label + query audio) against the prompt's
  cache, and the LM head in fp32 at the scored rows.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from icl_audio.bench.machine import load_average, run_facts
from icl_audio.constants import LLASA_CONTEXT
log = logging.getLogger("icl_audio.bench")

# The 50 ESC-50 classes, written with spaces as a support set would name them.
ESC50_LABELS = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea waves", "crackling fire", "crickets", "chirping birds", "water drops", "wind",
    "pouring water", "toilet flush", "thunderstorm", "crying baby", "sneezing", "clapping", "breathing",
    "coughing", "footsteps", "laughing", "brushing teeth", "snoring", "drinking sipping",
    "door wood knock", "mouse click", "keyboard typing", "door wood creaks", "can opening",
    "washing machine", "vacuum cleaner", "clock alarm", "clock tick", "glass breaking",
    "helicopter", "chainsaw", "siren", "car horn", "engine", "train", "church bells", "airplane",
    "fireworks", "hand saw",
)
CLIP_TOKENS = 250  # a 5 s clip at 50 tokens/s


def esc50_labels(n: int) -> list[str]:
    out = list(ESC50_LABELS[:n])
    i = 2
    while len(out) < n:  # more than 50: numbered variants, still multi-token texts
        out.extend(f"{lab} {i}" for lab in ESC50_LABELS[: n - len(out)])
        i += 1
    return out


def speed_prompt(lm: Any, labels: list[str], k: int, mode: str = "direct", seed: int = 0):
    from icl_audio.prompt import Demo, PromptBuilder

    rng = np.random.default_rng(seed)
    n_codes = min(lm.layout.n_speech, 65_536)
    demos = [Demo(rng.integers(0, n_codes, CLIP_TOKENS), labels[i % len(labels)]) for i in range(k)]
    query = rng.integers(0, n_codes, CLIP_TOKENS)
    # <|eot_id|> attended to: the floor and the engine then feed exactly the same tokens.
    return PromptBuilder(lm, "llasa", mask_eot=False).build(demos, query, labels, mode=mode, max_context=LLASA_CONTEXT)


def _channel_floor(lm: Any, prefix: list[int], targets: list) -> None:
    """The plainest exact channel-mode scoring: prompt once, each continuation against its cache, fp32 head."""
    import torch

    from icl_audio.hf_compat import llama as compat

    model = lm.model
    decoder, weight = model.get_decoder(), model.get_output_embeddings().weight
    kw = compat.cache_keyword(decoder)
    n = len(prefix)
    with torch.inference_mode():
        out = decoder(input_ids=torch.tensor([prefix]), use_cache=True)
        kv = compat.cache_tensors(compat.output_cache(out))
        for t in targets:
            ids = list(t.ids[:-1])
            hidden = decoder(input_ids=torch.tensor([ids]), position_ids=torch.arange(n, n + len(ids))[None],
                             use_cache=True, **{kw: compat.cache_from_tensors(kv)}).last_hidden_state[0]
            rows = hidden[t.score_from - 1:].float()
            for v0 in range(0, weight.shape[0], 16384):  # fp32 logits, a slice of the vocabulary at a time
                torch.logsumexp(rows @ weight[v0:v0 + 16384].float().t(), dim=-1)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _log(msg: str) -> None:
    log.info(msg)  # progress: the CLI shows the bench logger's INFO lines on stderr


def _flops_ratio(config: Any, n_prompt: int, n_trie: int, n_rows: int) -> float:
    """Engine / one-forward arithmetic (multiply-adds), from the shapes alone: what the timing ratio
    would be if every matmul ran equally fast. Noise-free evidence next to the measured ratio.

    The engine feeds ``n_prompt + n_trie`` positions; its last layer computes keys and values for all
    of them but everything else only for the ``n_rows`` rows the LM head reads."""
    h, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    hd, heads, kv = config.head_dim, config.num_attention_heads, config.num_key_value_heads
    kv_cost = 2 * h * kv * hd  # k and v projections, per position and layer
    rest = 2 * h * heads * hd + 3 * h * inter  # q and o projections + MLP
    pair = heads * hd * 2  # QK and PV per (query, key) pair and layer
    causal = n_prompt * (n_prompt + 1) // 2
    head = h * config.vocab_size
    n = n_prompt + n_trie
    a = layers * n_prompt * (kv_cost + rest) + layers * causal * pair + head
    b = (layers * n * kv_cost + (layers - 1) * n * rest + n_rows * rest
         + (layers - 1) * (causal + n_trie * n) * pair + n_rows * n * pair + n_rows * head)
    return b / a


def run_speed_bench(labels: int = 50, k: int = 4, reps: int = 7, *, mode: str = "direct",
                    model_kwargs: dict | None = None, quant: str | None = None) -> dict:
    """Time scoring at the real Llasa-1B shape (random weights, bf16 where the CPU has it, CPU).

    ``labels``: candidate labels (ESC-50 names; beyond 50, numbered variants). ``k``: demonstrations of
    250 audio tokens each, plus a 250-token query. ``mode``: "direct" or "channel". Measures (a) the
    arithmetic floor (module docstring), (b) the engine scoring all labels, (c) naive full forwards per label
    (one label timed per round, times the number of labels). Each of ``reps`` rounds runs a b b a
    (or b a a b) then c; ``overhead_ratio`` and ``naive_speedup`` are medians of the per-round ratios
    b/a and c/b; ``flops_ratio`` is b/a in arithmetic, from the shapes alone. ``max_abs_diff`` compares
    engine and naive over all labels in fp32 on a smaller model with the same vocabulary and prompt.
    ``model_kwargs`` override :func:`~icl_audio.families.llasa.build_random_lm`'s shape (tests use a tiny one).
    ``quant`` ("int8", "nf4"): the model is the same random model saved once and loaded quantised
    (:func:`icl_audio.models.load_random_lm`). Returns a flat dict (JSON-ready).
    """
    import torch

    from icl_audio.families.llasa import build_random_lm
    from icl_audio.engine import loglikelihood, loglikelihood_naive, make_plan, verified_path

    if labels < 1 or k < 0 or reps < 1:
        raise ValueError("labels and reps must be >= 1 and k >= 0")
    if mode not in ("direct", "channel"):
        raise ValueError(f"unknown mode {mode!r}: use direct or channel")
    names = esc50_labels(labels)
    load_start = load_average()  # the machine may be shared: reported with the timings

    _log("building a random model of the Llasa-1B shape ...")
    t0 = time.perf_counter()
    if quant is None:
        lm = build_random_lm(**(model_kwargs or {}))  # default: hidden 2048, 16 layers, 32/8 heads, MLP 8192, vocab 193,800
    else:
        from icl_audio.models import load_random_lm

        lm = load_random_lm(quant=quant, **(model_kwargs or {}))
    build_s = time.perf_counter() - t0
    prompt = speed_prompt(lm, names, k, mode)
    prefix = list(prompt.prefix)
    targets = list(prompt.targets)
    model = lm.model
    shape = model.config
    ids = torch.tensor([prefix])

    decoder, head = model.get_decoder(), model.get_output_embeddings()
    _log(f"prompt {len(prefix)} tokens, {labels} labels; warming up ...")
    with torch.inference_mode():
        head(decoder(input_ids=ids[:, :128], use_cache=False).last_hidden_state[0, -1:])
    loglikelihood(lm, prefix[:128], targets[:2])
    path = verified_path(lm)

    def forward_once(decoder=decoder, head=head, lm=lm):
        if mode == "channel":
            return _channel_floor(lm, prefix, targets)
        # The fastest plain way to get next-token logits over the prompt: decoder, then the head on
        # the last position only, given as a 2-D input (HF's own forward passes it 3-D, which on CPU in
        # bf16 copies the whole 193,800 x 2048 head per call: ~5 s, and would flatter the engine).
        with torch.inference_mode():
            head(decoder(input_ids=ids, use_cache=False).last_hidden_state[0, -1:])

    engine_result: list = []

    def engine_once(lm=lm):
        engine_result[:] = loglikelihood(lm, prefix, targets)

    # The machine may be shared: what other processes do changes the speed of a whole pass by 2x or
    # more, within seconds. So each round times (a) and (b) twice in mirrored order (a b b a, then
    # b a a b: a steady drift cancels out), the ratio is taken within the round, and the reported
    # figure is the median over the rounds. One naive label (c) closes each round.
    times_a: list[float] = []
    times_b: list[float] = []
    times_c: list[float] = []
    ratios: list[float] = []
    naive_result: dict[int, tuple[float, int]] = {}
    for r in range(reps):
        _log(f"round {r + 1}/{reps}: (a) the arithmetic floor, (b) engine over {labels} labels, "
             f"(c) naive forward for one label ...")
        a_first = (forward_once, engine_once, engine_once, forward_once)
        order = a_first if r % 2 == 0 else (engine_once, forward_once, forward_once, engine_once)
        spent = {forward_once: 0.0, engine_once: 0.0}
        for fn in order:
            spent[fn] += _timed(fn)
        times_a.append(spent[forward_once] / 2)
        times_b.append(spent[engine_once] / 2)
        ratios.append(spent[engine_once] / spent[forward_once])
        i = r % labels
        t0 = time.perf_counter()
        naive_result[i] = loglikelihood_naive(lm, prefix, targets[i:i + 1])[0]
        times_c.append((time.perf_counter() - t0) * labels)  # extrapolated to all labels
    overhead = float(np.median(ratios))
    speedup = float(np.median([tc / tb for tb, tc in zip(times_b, times_c)]))
    a, b, c = (float(np.median(t)) for t in (times_a, times_b, times_c))
    bf16_diff = max(abs(engine_result[i][0] - v[0]) for i, v in naive_result.items())
    dtype = str(lm.dtype).replace("torch.", "")
    del lm, model, decoder, head, forward_once, engine_once  # free the 2.7 GB model before the next

    _log("exactness: fp32, smaller model, all labels ...")
    small = build_random_lm(hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=2, intermediate_size=1024,
                            head_dim=32, dtype="float32", seed=1)
    exact = loglikelihood(small, prefix, targets)
    naive = loglikelihood_naive(small, prefix, targets)
    max_abs_diff = max(abs(x[0] - y[0]) for x, y in zip(exact, naive))

    label_tokens = [len(t.ids) for t in targets]
    plan = make_plan(prefix, targets)
    flops = _flops_ratio(shape, len(prefix), plan.trie_tokens, plan.head_rows) if mode == "direct" else None
    return {
        "mode": mode,
        "quant": quant,
        "engine_path": path,
        "prompt_tokens": len(prefix),
        "labels": labels,
        "k": k,
        "scored_tokens_per_label": round(float(np.mean(label_tokens)), 2),
        "trie_tokens": plan.trie_tokens,
        "head_rows": plan.head_rows,
        "passes": 1 + len(plan.passes),
        "flops_ratio": None if flops is None else round(flops, 4),
        "forward_seconds_median": round(a, 3),
        "engine_seconds_median": round(b, 3),
        "naive_seconds_median": round(c, 2),
        "naive_labels_timed": len(naive_result),
        "naive_extrapolated": len(naive_result) < labels,
        "overhead_ratio": round(overhead, 4),
        "overhead_ratio_each": [round(x, 3) for x in ratios],
        "reps": reps,
        "forward_seconds_each": [round(x, 3) for x in times_a],
        "engine_seconds_each": [round(x, 3) for x in times_b],
        "naive_seconds_each": [round(x, 1) for x in times_c],
        "naive_speedup": round(speedup, 2),
        "max_abs_diff": float(f"{max_abs_diff:.3g}"),
        "max_abs_diff_model": "fp32 hidden 256, 4 layers, vocab 193,800",
        "bf16_engine_vs_naive_diff": float(f"{bf16_diff:.3g}"),
        "seconds_per_query": round(b, 3),  # median engine time: one query, all labels
        "dtype": dtype,
        "model_build_seconds": round(build_s, 1),
        **run_facts(load_start),
    }

