"""Tests of the log-likelihood engine: exactness of every execution path, hidden tokens as in Llasa's
training, batching, the fp32 head, and the fallback when a transformers internal moves."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from icl_audio import engine
from icl_audio.engine import Target, loglikelihood, loglikelihood_naive, make_plan
from icl_audio.hf_compat import llama as compat

LABELS = ["dog", "door wood knock", "door wood creaks", "crackling fire", "a", "<|s_5|>", "vacuum cleaner"]
PATHS = ["plain", "cached", "pruned", "fused"]


@pytest.fixture(scope="module")
def setup(debug_lm):
    rng = np.random.default_rng(0)
    lm = debug_lm
    prefix = [lm.layout.special_ids["<|begin_of_text|>"]] + lm.layout.to_ids(rng.integers(0, 256, 200)).tolist()
    end = lm.layout.special_ids["<|SPEECH_GENERATION_END|>"]
    conts = [lm.text_ids(lab) + [end] for lab in LABELS]
    return lm, prefix, conts


_REFERENCE_SCORES: dict = {}


def _full_forward(lm, prefix, cont, score_from=0, attention_mask=None):
    """Independent reference: the HF model's own forward (its own LM head) and a float64 log-softmax of
    the rows that predict ``cont``. Remembered per model and input: every path and batch size of a test
    is compared with the same reference, computed once."""
    import torch

    key = (id(lm.model), tuple(prefix), tuple(cont), score_from, None if attention_mask is None else tuple(attention_mask))
    if key not in _REFERENCE_SCORES:
        kwargs = {} if attention_mask is None else {"attention_mask": torch.tensor([attention_mask])}
        with torch.inference_mode():
            logits = lm.model(input_ids=torch.tensor([prefix + list(cont)]), **kwargs).logits[0, len(prefix) - 1:]
        logp = torch.log_softmax(logits.double(), dim=-1)
        _REFERENCE_SCORES[key] = sum(float(logp[j, cont[j]]) for j in range(score_from, len(cont)))
    return _REFERENCE_SCORES[key]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("max_batch_tokens", [1, 9, 512])  # 1 and 9: several trie passes on the prompt's cache
def test_every_path_equals_the_model_forward(setup, path, max_batch_tokens):
    lm, prefix, conts = setup
    assert len({len(c) for c in conts}) >= 3  # labels of different token lengths
    got = loglikelihood(lm, prefix, conts, path=path, max_batch_tokens=max_batch_tokens)
    for (score, n), cont in zip(got, conts):
        assert n == len(cont)
        assert abs(score - _full_forward(lm, prefix, cont)) < 1e-3


@pytest.mark.parametrize("path", PATHS)
def test_scored_tail_and_hidden_eot_match_training_mask(setup, path):
    """Channel-like targets (context, then scored audio) with <|eot_id|> in prompt and continuations:
    hidden tokens must score exactly as Llasa's training saw them, a 2-D attention_mask of ids != eot."""
    lm, prefix, conts = setup
    eot = lm.layout.special_ids["<|eot_id|>"]
    prefix = list(prefix)
    prefix[20] = prefix[90] = eot
    audio = lm.layout.to_ids(np.random.default_rng(1).integers(0, 256, 30)).tolist()
    targets = [Target(tuple(c[:-1]) + (eot, c[-1]) + tuple(audio), len(c) + 1) for c in conts]
    got = loglikelihood(lm, prefix, targets, hidden_ids=[eot], path=path, max_batch_tokens=40)
    for (s, n), t in zip(got, targets):
        seq = prefix + list(t.ids)
        ref = _full_forward(lm, prefix, t.ids, t.score_from, attention_mask=[int(x != eot) for x in seq])
        assert n == 30 and abs(s - ref) < 1e-3
    # ... and the mask matters: attending to eot gives other scores
    attended = loglikelihood(lm, prefix, targets, path=path)
    assert max(abs(a[0] - b[0]) for a, b in zip(got, attended)) > 1e-3


@pytest.mark.parametrize("max_batch_tokens", [1, 4, 9, 512])
def test_batch_independence(setup, max_batch_tokens):
    lm, prefix, conts = setup
    together = loglikelihood(lm, prefix, conts, max_batch_tokens=max_batch_tokens)
    alone = [loglikelihood(lm, prefix, [c])[0] for c in conts]
    reordered = loglikelihood(lm, prefix, conts[::-1], max_batch_tokens=max_batch_tokens)[::-1]
    for a, b, c in zip(together, alone, reordered):
        assert a[1] == b[1] == c[1]
        assert abs(a[0] - b[0]) < 1e-4 and abs(a[0] - c[0]) < 1e-4


def test_edge_cases(setup):
    lm, prefix, conts = setup
    end = conts[0][-1]
    got = loglikelihood(lm, prefix, [[], [end], Target((end,), 1), conts[0]])
    assert got[0] == (0.0, 0) and got[2] == (0.0, 0)
    assert got[1][1] == 1 and abs(got[1][0] - _full_forward(lm, prefix, [end])) < 1e-3
    assert loglikelihood(lm, prefix, []) == []
    with pytest.raises(ValueError):
        loglikelihood(lm, [], conts)
    eot = lm.layout.special_ids["<|eot_id|>"]
    with pytest.raises(ValueError, match="follows hidden"):  # nothing would predict it
        make_plan(prefix, [Target((eot, end), 0)], hidden_ids=[eot])
    # A bare Hugging Face model is accepted too.
    assert loglikelihood(lm.model, prefix, conts[:1]) == loglikelihood(lm, prefix, conts[:1])


def test_plan_shares_prefixes_and_reads_only_scored_rows(setup):
    lm, prefix, conts = setup
    plan = make_plan(prefix, conts)
    fed = sum(len(c) - 1 for c in conts)  # a continuation's last token is never fed
    assert len(plan.passes) == 1 and plan.trie_tokens < fed  # "door wood" is fed once
    assert plan.head_rows == 1 + plan.trie_tokens  # every fed node predicts a scored token here
    channel = [Target(tuple(c), len(c) - 1) for c in conts]  # only the last token scored
    assert make_plan(prefix, channel).head_rows == 1 + len(conts) - sum(len(c) == 1 for c in conts)


def test_pruned_last_layer_runs_only_read_rows(setup):
    lm, prefix, conts = setup
    last = lm.model.get_decoder().layers[-1]
    assert compat.prunable(last)
    seen = []
    hook = last.mlp.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    try:
        plan = make_plan(prefix, conts)
        engine.Executor(lm, "pruned").hidden_rows(plan)
        pruned_rows = list(seen)
        seen.clear()
        engine.Executor(lm, "cached").hidden_rows(plan)
    finally:
        hook.remove()
    assert pruned_rows == [1, len(plan.passes[0].read)]  # the prompt's last row; the trie's read rows
    assert seen == [len(prefix), len(plan.passes[0].tokens)]
    assert "forward" not in vars(last)  # restored


def test_pruning_only_on_verified_layer_classes(debug_lm):
    """A duck-typed check would accept a layer with extra parts; the exact-class allowlist does not."""
    from transformers import Qwen3Config
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer

    cfg = Qwen3Config(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                      head_dim=8, num_hidden_layers=1, vocab_size=64)
    assert not compat.prunable(Qwen3DecoderLayer(cfg, 0))  # q/k norms: the pruned forward would skip them

    class MyLayer(LlamaDecoderLayer):
        pass

    last = debug_lm.model.get_decoder().layers[-1]
    assert not compat.prunable(MyLayer(debug_lm.model.config, 0))
    wrapped = last.forward
    last.forward = lambda *a, **k: wrapped(*a, **k)  # as accelerate's device hooks do
    try:
        assert not compat.prunable(last)
    finally:
        del last.forward


@pytest.mark.parametrize("mask_kind", ["additive", "bool", "per_head"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_grouped_attention_equals_transformers_sdpa(monkeypatch, mask_kind, dtype):
    """grouped_sdpa stacks the query heads of each key/value head as one head's rows: every row must
    still meet its own head's keys and values (head h uses key/value head h // groups, as repeat_kv
    has it), under its own mask row. Reference: transformers' sdpa_attention_forward (repeat_kv)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    gen = torch.Generator().manual_seed(0)
    heads, kv_heads, rows, keys, dim = 8, 2, 7, 19, 16
    dt = getattr(torch, dtype)
    q = torch.randn(1, heads, rows, dim, generator=gen).to(dt)
    k, v = (torch.randn(1, kv_heads, keys, dim, generator=gen).to(dt) for _ in range(2))
    allowed = torch.rand(1, heads if mask_kind == "per_head" else 1, rows, keys, generator=gen) < 0.6
    allowed[..., 0] = True  # every row sees at least one key
    mask = allowed if mask_kind == "bool" else torch.zeros(allowed.shape, dtype=dt).masked_fill_(~allowed, float("-inf"))
    module = type("Attn", (), {"num_key_value_groups": heads // kv_heads, "is_causal": True, "training": False})()
    want, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=0.25)
    with monkeypatch.context() as m:  # the stacked computation itself, not a fallback to the reference
        m.setattr("transformers.integrations.sdpa_attention.sdpa_attention_forward", None)
        got, _ = compat.grouped_sdpa(module, q, k, v, mask, dropout=0.0, scaling=0.25)
    assert got.shape == want.shape == (1, rows, heads, dim)
    tol = 1e-6 if dtype == "float32" else 1e-2
    assert torch.allclose(got.float(), want.float(), atol=tol, rtol=0)
    # a mapping error (rows meeting another head's keys) would be far beyond that
    assert not torch.allclose(got.float(), want.float().roll(1, dims=2), atol=tol, rtol=0)


def _fresh(lm):
    """A copy of the model without the shared fixture's proof verdict, so it is proven afresh."""
    hf = copy.deepcopy(lm.model)
    hf.__dict__.pop(engine._PATH_MEMO, None)
    return hf


@pytest.mark.parametrize("broken", ["cache_from_tensors", "cache_keyword", "pruned_forward", "split_attention"])
def test_broken_internal_falls_back_to_plain_with_equal_scores(setup, monkeypatch, broken):
    lm, prefix, conts = setup
    hf = _fresh(lm)
    want = loglikelihood_naive(hf, prefix, conts)
    if broken == "cache_from_tensors":  # a moved cache class
        monkeypatch.setattr(compat, "cache_from_tensors", lambda kv: (_ for _ in ()).throw(AttributeError("gone")))
    elif broken == "cache_keyword":  # a renamed keyword the decoder silently ignores
        monkeypatch.setattr(compat, "cache_keyword", lambda decoder: "kv_cache_renamed")
    elif broken == "split_attention":  # the attention interface ignores the split: prompt rows see the trie
        monkeypatch.setattr(compat, "split_sdpa", lambda module, q, k, v, mask, icl_split=None, **kw:
                            __import__("transformers").integrations.sdpa_attention.sdpa_attention_forward(
                                module, q, k, v, None if icl_split is not None else mask, **kw))
    else:  # a layer whose internals changed meaning: the pruned forward computes something else
        real = compat.PrunedLastLayer._forward
        monkeypatch.setattr(compat.PrunedLastLayer, "_forward", lambda self, h, *a, **k: real(self, h, *a, **k) * 1.5)
    with pytest.warns(RuntimeWarning, match="scoring path not used"):
        path = engine.verified_path(hf)
        got = loglikelihood(hf, prefix, conts)
    expected = {"cache_from_tensors": "plain", "cache_keyword": "plain", "pruned_forward": "cached",
                "split_attention": "pruned"}[broken]
    assert path == expected
    for (a, n), (b, m) in zip(got, want):
        assert n == m and abs(a - b) < 1e-3


def test_fp32_head_bounds_bf16_model_scores(setup):
    """A bf16 model's scores: the head runs in fp32 from the hidden states, so the only error left is
    the bf16 body's; a bf16 head would add the rounding of every logit (~0.03 nats per token at
    logits of a trained model's size, ~1 nat over a 250-token channel-mode candidate)."""
    import torch

    lm, prefix, conts = setup
    audio = lm.layout.to_ids(np.random.default_rng(2).integers(0, 256, 120)).tolist()
    targets = [Target(tuple(c) + tuple(audio), len(c)) for c in conts[:3]]  # 120 scored tokens each
    bf16 = copy.deepcopy(lm.model).to(torch.bfloat16)
    with torch.no_grad():  # logits of a trained model's size (|logit| ~ 10), not a random init's ~0.1
        bf16.model.norm.weight.mul_(64.0)
    ref_model = copy.deepcopy(bf16).to(torch.float32)  # the very same (bf16-valued) weights, fp32 arithmetic
    ref = np.array([s for s, _ in loglikelihood_naive(ref_model, prefix, targets)])
    ours = np.array([s for s, _ in loglikelihood(bf16, prefix, targets)])
    plan = make_plan(prefix, targets)
    with torch.inference_mode():
        hidden = engine.Executor(bf16, "cached").hidden_rows(plan)
        rows, toks, tgt = (np.asarray(x) for x in zip(*plan.pairs))
        exact = hidden.double() @ bf16.get_output_embeddings().weight.double().t()  # float64 head, same hidden
        lp64 = (exact[rows, toks] - torch.logsumexp(exact, -1)[rows]).numpy()
        rounded = bf16.get_output_embeddings()(hidden).float()  # what the model's own bf16 head gives
        lp16 = (rounded[rows, toks] - torch.logsumexp(rounded, -1)[rows]).double().numpy()
    head64 = np.bincount(tgt, weights=lp64, minlength=len(targets))
    head16 = np.bincount(tgt, weights=lp16, minlength=len(targets))
    assert np.abs(ours - head64).max() < 1e-3  # the head itself adds nothing
    assert np.abs(head16 - head64).max() > 0.1  # a bf16 head would
    assert np.abs(ours - ref).max() < np.abs(head16 - ref).max()
    print("bf16 body error", np.abs(ours - ref).max(), "bf16 head error", np.abs(head16 - ref).max())
