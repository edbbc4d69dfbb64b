"""Tests of the scoring stage: exactness of the shared-prefix engine, batching, modes, calibration."""

from __future__ import annotations

import numpy as np
import pytest

from icl_audio.errors import ICLAudioError, SupportSetError
from icl_audio.prompt import Demo, Target
from icl_audio.scoring import (
    LabelScores,
    Scorer,
    ScoringOptions,
    decide,
    loglikelihood,
    loglikelihood_naive,
    select_balanced,
)

LABELS = ["dog", "door wood knock", "door wood creaks", "crackling fire", "a", "<|s_5|>", "vacuum cleaner"]


@pytest.fixture(scope="module")
def setup(debug_lm):
    rng = np.random.default_rng(0)
    lm = debug_lm
    prefix = [lm.layout.special_ids["<|begin_of_text|>"]] + lm.layout.to_ids(rng.integers(0, 256, 300)).tolist()
    end = lm.layout.special_ids["<|TEXT_GENERATION_END|>"]
    conts = [lm.text_ids(lab) + [end] for lab in LABELS]
    return lm, prefix, conts


def _full_forward(lm, prefix, cont, score_from=0):
    """Independent reference: the HF model's own forward and log-softmax over prompt + continuation."""
    import torch

    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([prefix + list(cont)])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[len(prefix) - 1 + j, cont[j]]) for j in range(score_from, len(cont)))


def test_exact_vs_full_forward(setup):
    lm, prefix, conts = setup
    assert len({len(c) for c in conts}) >= 3  # labels of different token lengths
    got = loglikelihood(lm, prefix, conts)
    for (score, n), cont in zip(got, conts):
        assert n == len(cont)
        assert abs(score - _full_forward(lm, prefix, cont)) < 1e-3


@pytest.mark.parametrize("max_batch_tokens", [40, 512])  # 40: one continuation per pass, on the prompt's cache
def test_exact_vs_naive_with_scored_tail(setup, max_batch_tokens):
    lm, prefix, conts = setup
    rng = np.random.default_rng(1)
    audio = lm.layout.to_ids(rng.integers(0, 256, 30)).tolist()
    targets = [Target(tuple(c[:-1]) + tuple(audio), len(c) - 1) for c in conts]  # channel-like
    got = loglikelihood(lm, prefix, targets, max_batch_tokens=max_batch_tokens)
    ref = loglikelihood_naive(lm, prefix, targets)
    for (s, n), (r, m), t in zip(got, ref, targets):
        assert n == m == 30
        assert abs(s - r) < 1e-3
        assert abs(s - _full_forward(lm, prefix, t.ids, t.score_from)) < 1e-3


@pytest.mark.parametrize("max_batch_tokens", [1, 4, 9, 512])
def test_batch_independence(setup, max_batch_tokens):
    lm, prefix, conts = setup
    together = loglikelihood(lm, prefix, conts, max_batch_tokens=max_batch_tokens)
    alone = [loglikelihood(lm, prefix, [c])[0] for c in conts]
    reordered = loglikelihood(lm, prefix, conts[::-1], max_batch_tokens=max_batch_tokens)[::-1]
    for a, b, c in zip(together, alone, reordered):
        assert a[1] == b[1] == c[1]
        assert abs(a[0] - b[0]) < 1e-4 and abs(a[0] - c[0]) < 1e-4


def test_engine_edge_cases(setup):
    lm, prefix, conts = setup
    end = conts[0][-1]
    got = loglikelihood(lm, prefix, [[], [end], Target((end,), 1), conts[0]])
    assert got[0] == (0.0, 0) and got[2] == (0.0, 0)
    assert got[1][1] == 1 and abs(got[1][0] - _full_forward(lm, prefix, [end])) < 1e-3
    assert loglikelihood(lm, prefix, []) == []
    with pytest.raises(ValueError):
        loglikelihood(lm, [], conts)
    # A bare Hugging Face model is accepted too, and the model's attention setting is restored.
    assert loglikelihood(lm.model, prefix, conts[:1]) == loglikelihood(lm, prefix, conts[:1])
    assert lm.model.config._attn_implementation == "sdpa"


def test_last_layer_reads_only_needed_rows(setup, monkeypatch):
    """The last layer runs on the rows the head reads (Llama layout); without that layout, the full
    layer runs and the rows are picked afterwards; both give the same scores, and the layer is restored."""
    from icl_audio import scoring

    lm, prefix, conts = setup
    last = lm.model.get_decoder().layers[-1]
    assert scoring._prunable(last)
    seen = []
    hook = last.mlp.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[1]))
    try:
        pruned = loglikelihood(lm, prefix, conts)
        rows = seen[-1]
        monkeypatch.setattr(scoring, "_prunable", lambda layer: False)
        full = loglikelihood(lm, prefix, conts)
        full_rows = seen[-1]
    finally:
        hook.remove()
    assert "forward" not in vars(last)
    # A layer whose forward is already wrapped per instance (as accelerate's hooks do) runs in full, untouched.
    monkeypatch.undo()
    wrapped = last.forward
    last.forward = lambda *args, **kwargs: wrapped(*args, **kwargs)
    try:
        assert not scoring._prunable(last)
        hooked = loglikelihood(lm, prefix, conts)
        assert "forward" in vars(last)
    finally:
        del last.forward
    for (a, n), (b, m) in zip(pruned, hooked):
        assert n == m and abs(a - b) < 1e-4
    trie_tokens = scoring.engine_plan(conts)["trie_tokens"]
    assert rows == scoring.engine_plan(conts)["head_rows"] < full_rows == len(prefix) + trie_tokens
    for (a, n), (b, m) in zip(pruned, full):
        assert n == m and abs(a - b) < 1e-4


# --------------------------------------------------------------------------------------------
# scorer


def _episode(seed=0, k=3, n=40):
    rng = np.random.default_rng(seed)
    demos = [Demo(rng.integers(0, 256, n), lab) for lab in ["dog", "cat", "bird song"][:k]]
    return demos, rng.integers(0, 256, n)


@pytest.mark.parametrize("template", ["default", "uniaudio"])
@pytest.mark.parametrize("mode", ["direct", "channel"])
def test_scorer_matches_engine(debug_lm, template, mode):
    from icl_audio.prompt import build_prompt

    demos, query = _episode()
    labels = ["dog", "cat", "bird song"]
    res = Scorer(debug_lm, ScoringOptions(mode=mode, template=template)).score(demos, query, labels)
    prompt = build_prompt(debug_lm, demos, query, labels, template=template, mode=mode)
    ref = loglikelihood_naive(debug_lm, prompt.prefix, prompt.targets)
    assert np.allclose(res.logprobs, [r[0] for r in ref], atol=1e-3)
    assert res.labels == tuple(labels) and res.prompt_tokens == len(prompt.prefix)
    assert (res.demos_used, res.cropped) == (3, False)
    assert abs(res.probs.sum() - 1) < 1e-9 and (res.probs > 0).all()
    if mode == "channel":  # every candidate scores the same query audio (+ the end of the example)
        assert len(set(res.n_tokens.tolist())) == 1 and res.n_tokens[0] > len(query)
        if template == "default":
            assert res.n_tokens[0] == len(query) + 1


def test_mean_normalisation(debug_lm):
    demos, query = _episode()
    labels = ["dog", "crackling fire"]
    s = Scorer(debug_lm, ScoringOptions(normalize="sum")).score(demos, query, labels)
    m = Scorer(debug_lm, ScoringOptions(normalize="mean")).score(demos, query, labels)
    assert np.allclose(m.logprobs, s.raw_logprobs / s.n_tokens)
    assert np.allclose(s.logprobs, s.raw_logprobs)
    assert s.n_tokens[1] > s.n_tokens[0]


def test_calibration(debug_lm, monkeypatch):
    from icl_audio import scoring
    from icl_audio.prompt import build_prompt

    demos, query = _episode()
    labels = ["dog", "cat", "bird song"]
    scorer = Scorer(debug_lm, ScoringOptions(calibrate=True))
    res = scorer.score(demos, query, labels)
    cf = build_prompt(debug_lm, demos, query, labels, content_free=True)
    prior = np.array([r[0] for r in loglikelihood_naive(debug_lm, cf.prefix, cf.targets)])
    assert np.allclose(res.logprobs, res.raw_logprobs - prior, atol=1e-3)
    assert abs(res.probs.sum() - 1) < 1e-9

    # The prior is cached per demonstration set: a new query costs one engine call, not two.
    calls = []
    real = scoring.loglikelihood
    monkeypatch.setattr(scoring, "loglikelihood", lambda *a, **k: calls.append(1) or real(*a, **k))
    other = np.random.default_rng(5).integers(0, 256, 40)
    again = scorer.score(demos, other, labels)
    assert len(calls) == 1 and len(scorer._priors) == 1
    assert not np.allclose(again.raw_logprobs, res.raw_logprobs)
    scorer.score(demos[:2], other, labels)  # another demonstration set: a new prior
    assert len(calls) == 3 and len(scorer._priors) == 2


@pytest.mark.parametrize("calibrate", [False, True])
def test_multi_label(debug_lm, calibrate):
    demos, query = _episode()
    labels = ["dog", "cat", "bird song", "rain"]
    res = Scorer(debug_lm, ScoringOptions(multi_label=True, calibrate=calibrate)).score(demos, query, labels)
    assert res.multi_label and res.probs.shape == (4,)
    assert ((res.probs > 0) & (res.probs < 1)).all()
    z = res.logprobs if calibrate else res.logprobs - res.logprobs.mean()
    assert np.allclose(res.probs, 1 / (1 + np.exp(-z)))
    chosen = decide(res)
    assert chosen and set(chosen) <= set(labels)
    assert all(res.probs[labels.index(c)] >= 0.5 for c in chosen) or len(chosen) == 1
    assert decide(res, threshold=1.1) == (res.ranked()[0][0],)


def test_decide_single_label():
    res = LabelScores(labels=("a", "b"), logprobs=np.array([-2.0, -1.0]), probs=np.array([0.27, 0.73]),
                      prompt_tokens=10, demos_used=1, cropped=False)
    assert decide(res) == ("b",)
    assert res.ranked() == [("b", 0.73), ("a", 0.27)]


def test_budget_reported(debug_lm):
    rng = np.random.default_rng(2)
    demos = [Demo(rng.integers(0, 256, 250), lab) for lab in ["dog", "cat", "cow", "pig"]]
    res = Scorer(debug_lm, ScoringOptions(max_context=300)).score(demos, rng.integers(0, 256, 250), ["dog", "cat"])
    assert res.demos_used < 4 and res.cropped
    assert res.prompt_tokens < 300


def test_single_label_and_no_demos(debug_lm):
    res = Scorer(debug_lm).score([], np.arange(10), ["only"])
    assert res.probs.tolist() == [1.0] and res.demos_used == 0


@pytest.mark.parametrize("labels", [[], ["a", "a"], ["a", ""], ["  "], "dog"])
def test_bad_labels(debug_lm, labels):
    with pytest.raises(SupportSetError):
        Scorer(debug_lm).score([], np.arange(5), labels)


@pytest.mark.parametrize("options", [ScoringOptions(mode="sideways"), ScoringOptions(normalize="max"),
                                     ScoringOptions(max_context=4), ScoringOptions(template="nope")])
def test_bad_options(debug_lm, options):
    with pytest.raises(ICLAudioError):
        Scorer(debug_lm, options)


# --------------------------------------------------------------------------------------------
# demonstration selection


def test_select_balanced():
    neighbours = ["dog", "dog", "dog", "cat", "dog", "cat", "bird"]
    assert select_balanced(neighbours, ["dog", "cat", "bird"], 3) == [0, 3, 6]
    assert select_balanced(neighbours, ["dog", "cat", "bird"], 5) == [0, 1, 3, 5, 6]
    assert select_balanced(neighbours, ["dog", "cat"], 2) == [0, 3]
    assert select_balanced(neighbours, ["cat", "bird"], 10) == [3, 5, 6]
    assert select_balanced(neighbours, ["fish"], 3) == []
    # k smaller than the number of labels: the labels whose nearest clip is nearest win.
    assert select_balanced(neighbours, ["bird", "cat", "dog"], 2) == [0, 3]
    # multi-label neighbours: one clip is never taken twice.
    multi = [("dog", "cat"), ("cat",), ("dog",)]
    assert select_balanced(multi, ["dog", "cat"], 3) == [0, 1, 2]
