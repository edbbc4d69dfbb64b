"""The two speed benches (`bench speed`, `bench codec`) run end to end at tiny shapes.

The real shapes take minutes and their timings mean nothing on a shared CI machine; here the same code
runs on small models, and what does not depend on timing is checked: the figures are all there, the
engine agrees with the naive reference, the codes agree with the plain transformers path.
"""

from __future__ import annotations

import pytest

from icl_audio.bench.codec import run_codec_bench
from icl_audio.bench.speed import _flops_ratio, run_speed_bench

TINY_LM = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, head_dim=16,
               vocab_size=None, dtype="float32")


def test_speed_bench_tiny(shared_tokenizer):
    r = run_speed_bench(labels=6, k=1, reps=2, model_kwargs=TINY_LM)
    assert r["labels"] == 6 and r["k"] == 1 and r["reps"] == 2
    assert r["prompt_tokens"] >= 2 * 250  # one demonstration and the query, 250 audio tokens each
    assert r["trie_tokens"] > 0 and r["head_rows"] == r["trie_tokens"] + 1  # every fed node predicts
    assert r["max_abs_diff"] <= 1e-3
    assert len(r["overhead_ratio_each"]) == len(r["forward_seconds_each"]) == 2
    assert r["overhead_ratio"] > 0 and r["naive_speedup"] > 0 and r["peak_rss_mb"] > 0


def test_channel_speed_bench_tiny(shared_tokenizer):
    r = run_speed_bench(labels=3, k=1, reps=1, mode="channel", model_kwargs=TINY_LM)
    assert r["mode"] == "channel" and r["flops_ratio"] is None
    assert r["head_rows"] == 1 + 3 * 251  # per label: its query audio and end tag, 251 scored tokens
    assert r["max_abs_diff"] <= 1e-3 and r["overhead_ratio"] > 0 and r["engine_path"] == "fused"


def test_flops_ratio_counts_the_pruned_last_layer():
    from types import SimpleNamespace

    llasa = SimpleNamespace(hidden_size=2048, num_hidden_layers=16, intermediate_size=8192, head_dim=64,
                            num_attention_heads=32, num_key_value_heads=8, vocab_size=193_800)
    # Nothing extra to feed and one head row: cheaper than a plain forward (the last layer runs on one row).
    assert _flops_ratio(llasa, 1298, 0, 1) < 0.95
    # ESC-50 scale: 92 trie tokens, 93 head rows.
    assert 1.0 < _flops_ratio(llasa, 1298, 92, 93) < 1.1
    assert _flops_ratio(llasa, 1298, 184, 185) > _flops_ratio(llasa, 1298, 92, 93)


def test_codec_bench_tiny():
    from icl_audio.codec import debug_config

    r = run_codec_bench(clips=3, seconds=1.0, fast_mode=False, config=debug_config())
    assert r["clips"] == 3 and len(r["speedup_each_round"]) == 2  # rounds of two clips: 2 + 1
    assert r["code_agreement"] >= 0.99  # random weights, faithful default path
    assert r["baseline_audio_seconds_per_second"] > 0 and r["audio_seconds_per_second"] > 0
    assert r["cache_hit_seconds"] < r["encode_seconds"]
    # the arithmetic of both paths was counted, and the machine's GEMM rate measured
    assert r["gflop_per_clip_baseline"] > 0 and r["gflop_per_clip"] > 0 and r["fp32_gemm_gflops_per_core"] > 0
    assert r["fp32_speedup_ceiling"] > 0


@pytest.mark.parametrize("kwargs", [dict(labels=0), dict(k=-1), dict(reps=0)])
def test_speed_bench_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        run_speed_bench(**kwargs)
