"""Tests of the scoring stage: the Scorer over the engine (modes, templates, normalisation, calibration)."""

from __future__ import annotations

import numpy as np
import pytest

from icl_audio.errors import ICLAudioError, SupportSetError
from icl_audio.prompt import Demo
from icl_audio.scoring import LabelScores, Scorer, ScoringOptions, decide, loglikelihood_naive


def _naive(lm, prompt):
    return loglikelihood_naive(lm, prompt.prefix, prompt.targets, hidden_ids=prompt.hidden_ids)


# --------------------------------------------------------------------------------------------
# scorer


def _episode(seed=0, k=3, n=40):
    rng = np.random.default_rng(seed)
    demos = [Demo(rng.integers(0, 256, n), lab) for lab in ["dog", "cat", "bird song"][:k]]
    return demos, rng.integers(0, 256, n)


@pytest.mark.parametrize("template", ["llasa", "uniaudio"])
@pytest.mark.parametrize("mode", ["direct", "channel"])
def test_scorer_matches_engine(debug_lm, template, mode):
    from icl_audio.prompt import build_prompt

    demos, query = _episode()
    labels = ["dog", "cat", "bird song"]
    res = Scorer(debug_lm, ScoringOptions(mode=mode, template=template)).score(demos, query, labels)
    prompt = build_prompt(debug_lm, demos, query, labels, template=template, mode=mode)
    ref = _naive(debug_lm, prompt)
    assert np.allclose(res.logprobs, [r[0] for r in ref], atol=1e-3)
    assert res.labels == tuple(labels) and res.prompt_tokens == len(prompt.prefix)
    assert (res.demos_used, res.cropped) == (3, False)
    assert abs(res.probs.sum() - 1) < 1e-9 and (res.probs > 0).all()
    if mode == "channel":  # every candidate scores the same query audio and <|SPEECH_GENERATION_END|>
        assert res.n_tokens.tolist() == [len(query) + 1] * 3


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
    prior = np.array([r[0] for r in _naive(debug_lm, cf)])
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


def test_channel_calibration_is_pointwise_mutual_information(debug_lm):
    """Channel mode subtracts log p(query audio | demos, empty label): one number per query, so the
    single-label ranking is unchanged, and a multi-label score says whether the label raised the audio's
    likelihood."""
    from icl_audio.prompt import build_prompt

    demos, query = _episode()
    labels = ["dog", "cat", "bird song"]
    plain = Scorer(debug_lm, ScoringOptions(mode="channel")).score(demos, query, labels)
    cal = Scorer(debug_lm, ScoringOptions(mode="channel", calibrate=True)).score(demos, query, labels)
    cf = build_prompt(debug_lm, demos, query, labels, mode="channel", content_free=True)
    assert len({t.ids for t in cf.targets}) == 1  # the same empty-label continuation for every candidate
    assert cf.targets[0].ids[cf.targets[0].score_from:] == build_prompt(
        debug_lm, demos, query, labels, mode="channel").targets[0].ids[-(len(query) + 1):]
    empty = _naive(debug_lm, cf)[0][0]
    assert np.allclose(cal.logprobs, plain.raw_logprobs - empty, atol=1e-3)
    assert [lab for lab, _ in cal.ranked()] == [lab for lab, _ in plain.ranked()]


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


@pytest.mark.parametrize("options", [dict(mode="sideways"), dict(normalize="max"), dict(max_context=4),
                                     dict(max_context=True), dict(mask_eot="yes")])
def test_bad_options_fail_at_construction(options):
    with pytest.raises(ICLAudioError):
        ScoringOptions(**options)


def test_unknown_template(debug_lm):
    with pytest.raises(ICLAudioError, match="unknown template"):
        Scorer(debug_lm, ScoringOptions(template="nope"))


