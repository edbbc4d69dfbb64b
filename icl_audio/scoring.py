"""The scoring stage: candidate labels of one query ranked by exact log-likelihood.

:class:`Scorer` builds the prompt (:mod:`icl_audio.prompt`), asks the engine
(:func:`icl_audio.engine.loglikelihood`) for the log-likelihood of every candidate, and turns the
numbers into :class:`LabelScores`: scoring direction, normalisation, calibration, probabilities.

    direct    log p(label | demonstrations, query audio)
    channel   log p(query audio | demonstrations, label)     the text->speech direction Llasa was trained in
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from icl_audio.constants import LLASA_CONTEXT, NORMALIZE  # NORMALIZE re-exported
from icl_audio.engine import Target, loglikelihood, loglikelihood_naive, make_plan, verified_path
from icl_audio.errors import ICLAudioError, SupportSetError
from icl_audio.prompt import DEFAULT_TEMPLATE, MODES, Demo, PromptBuilder

__all__ = [
    "Demo", "Target", "ScoringOptions", "LabelScores", "Scorer", "loglikelihood", "loglikelihood_naive",
    "decide", "make_plan",
]

_CALIBRATION_CACHE = 128  # content-free priors kept per Scorer (one per demonstration set)


# --------------------------------------------------------------------------------------------
# scorer


@dataclass(frozen=True)
class ScoringOptions:
    """How to score.

    ``mode``: "direct" = log p(label | demos, query audio); "channel" = log p(query audio | demos in
    label->audio form, label). ``normalize``: "sum" of token log-probs or "mean" per scored token.
    ``calibrate``: direct mode subtracts each label's score under a content-free query (the query
    without audio); channel mode subtracts log p(query audio | demos, empty label), so a score is how
    much the label raised the audio's likelihood (a constant shift per query: single-label rankings
    are unchanged, multi-label decisions become "above 0.5 = the label made the audio more likely").
    Priors are cached per demonstration set. ``max_context``: token budget (Llasa was trained on 2048).
    ``template``: built-in name or path to a TOML template. ``mask_eot``: None = the template's
    choice; True = ``<|eot_id|>`` takes its position but is never attended to, as in Llasa's training;
    False = attended to, as in its inference code. ``multi_label``: per-label probabilities (see
    :class:`LabelScores`) instead of a softmax over candidates.
    """

    mode: str = "direct"
    normalize: str = "sum"
    calibrate: bool = False
    max_context: int = LLASA_CONTEXT
    template: str = DEFAULT_TEMPLATE
    mask_eot: bool | None = None
    multi_label: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ICLAudioError(f"unknown scoring mode {self.mode!r}: use direct or channel")
        if self.normalize not in NORMALIZE:
            raise ICLAudioError(f"unknown normalisation {self.normalize!r}: use sum or mean")
        if isinstance(self.max_context, bool) or not isinstance(self.max_context, int) or self.max_context < 16:
            raise ICLAudioError(f"max_context must be an integer >= 16, got {self.max_context!r}")
        if self.mask_eot not in (None, True, False):
            raise ICLAudioError(f"mask_eot must be true, false or unset, got {self.mask_eot!r}")


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity (fields are arrays)
class LabelScores:
    """Scores of one query, one entry per candidate label (in the order given).

    ``logprobs``: the ranking score: log-likelihood (summed or per-token mean), minus the content-free
    prior when calibrated. ``probs``: single-label: softmax of ``logprobs`` over the candidates (sums
    to 1). Multi-label: ``sigmoid(z)`` per label, where ``z = logprobs`` when calibrated (log-ratio
    against the content-free query: above 0.5 means the audio made the label more likely) and
    ``z = logprobs - mean(logprobs)`` otherwise; :func:`decide` turns them into labels.
    ``prompt_tokens``: tokens in the shared prompt; ``demos_used``: demonstrations that fitted;
    ``cropped``: some audio was shortened to fit. ``raw_logprobs``/``n_tokens``: the summed
    log-likelihood before normalisation/calibration and the scored token count per label.
    """

    labels: tuple[str, ...]
    logprobs: np.ndarray
    probs: np.ndarray
    prompt_tokens: int
    demos_used: int
    cropped: bool
    raw_logprobs: np.ndarray | None = None
    n_tokens: np.ndarray | None = None
    multi_label: bool = False

    def ranked(self) -> list[tuple[str, float]]:
        """(label, prob) pairs, best first."""
        order = np.argsort(-self.probs, kind="stable")
        return [(self.labels[i], float(self.probs[i])) for i in order]


def decide(scores: LabelScores, threshold: float = 0.5) -> tuple[str, ...]:
    """Predicted labels: single-label -> the best one; multi-label -> every label with
    ``prob >= threshold`` (best first), or the best one if none reaches it (every clip has a label)."""
    ranked = scores.ranked()
    if not scores.multi_label:
        return (ranked[0][0],)
    chosen = tuple(lab for lab, p in ranked if p >= threshold)
    return chosen or (ranked[0][0],)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - np.max(x))
    return z / z.sum()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str):
        raise SupportSetError("labels must be a sequence of strings, not one string")
    labels = tuple(labels)
    if not labels:
        raise SupportSetError("no candidate labels to score")
    for lab in labels:
        if not isinstance(lab, str) or not lab.strip():
            raise SupportSetError(f"candidate label {lab!r} is not a non-empty string")
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise SupportSetError(f"candidate labels repeat: {', '.join(dup)}")
    return labels


class Scorer:
    """Scores candidate labels for a query by in-context learning with a Llasa model.

    ``lm``: a :class:`~icl_audio.llm.LanguageModel`; ``options``: :class:`ScoringOptions`.
    """

    def __init__(self, lm: Any, options: ScoringOptions = ScoringOptions()):
        self.lm = lm
        self.options = options
        self.builder = PromptBuilder(lm, options.template, mask_eot=options.mask_eot)
        self._priors: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def prepare(self) -> "Scorer":
        """Verify the engine's fast paths on this model and run its fp32 head once, now rather than
        at the first score (once per model; :func:`icl_audio.engine.verified_path`). Jobs that
        interleave encoding and scoring call it before encoding anything. Returns ``self``."""
        verified_path(self.lm)
        return self

    def _normalised(self, raw: list[tuple[float, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sums = np.array([s for s, _ in raw], dtype=np.float64)
        counts = np.array([n for _, n in raw], dtype=np.int64)
        if self.options.normalize == "mean":
            return sums, counts, sums / np.maximum(counts, 1)
        return sums, counts, sums

    def _loglikelihood(self, prompt) -> list[tuple[float, int]]:
        return loglikelihood(self.lm, prompt.prefix, prompt.targets, hidden_ids=prompt.hidden_ids)

    def _prior(self, demos: Sequence[Demo], query_codes: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
        # Direct: contextual calibration (Zhao et al. 2021), the same demonstrations and crops and a query
        # with no audio. Channel: the query audio after an empty label. Cached by the prompt's token ids.
        cf = self.builder.build(demos, query_codes, labels, mode=self.options.mode,
                                max_context=self.options.max_context, content_free=True)
        h = hashlib.sha256(self.options.normalize.encode())
        h.update(np.asarray(cf.prefix, dtype=np.int64).tobytes())
        for t in cf.targets:
            h.update(np.asarray((len(t.ids), t.score_from) + t.ids, dtype=np.int64).tobytes())
        key = h.digest()
        prior = self._priors.get(key)
        if prior is None:
            prior = self._normalised(self._loglikelihood(cf))[2]
            self._priors[key] = prior
            while len(self._priors) > _CALIBRATION_CACHE:
                self._priors.popitem(last=False)
        else:
            self._priors.move_to_end(key)
        return prior

    def prompt(self, demos: Sequence[Demo], query_codes: np.ndarray, labels: Sequence[str]):
        """The :class:`~icl_audio.prompt.Prompt` :meth:`score` feeds the model for these inputs."""
        return self.builder.build(demos, np.asarray(query_codes), _check_labels(labels), mode=self.options.mode,
                                  max_context=self.options.max_context)

    def score(self, demos: Sequence[Demo], query_codes: np.ndarray, labels: Sequence[str]) -> LabelScores:
        """Score every label in ``labels`` for the query ``query_codes`` given ``demos``.

        ``demos``: :class:`Demo` objects, most similar first (they are placed in reverse, the most
        similar right before the query; when the context is short the least similar are dropped and
        ``demos_used`` says how many remained). ``query_codes``: 1-D codec codes. ``labels``: distinct
        non-empty strings, scored as plain text.
        """
        labels = _check_labels(labels)
        query_codes = np.asarray(query_codes)
        opts = self.options
        prompt = self.prompt(demos, query_codes, labels)
        raw, counts, scores = self._normalised(self._loglikelihood(prompt))
        if opts.calibrate:
            scores = scores - self._prior(demos, query_codes, labels)
        if opts.multi_label:
            z = scores if opts.calibrate else scores - scores.mean()
            probs = _sigmoid(z)
        else:
            probs = _softmax(scores)
        return LabelScores(labels=labels, logprobs=scores, probs=probs, prompt_tokens=len(prompt.prefix),
                           demos_used=prompt.demos_used, cropped=prompt.cropped, raw_logprobs=raw,
                           n_tokens=counts, multi_label=opts.multi_label)
