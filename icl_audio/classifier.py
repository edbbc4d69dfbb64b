"""The prediction stage and the public API: retrieve demonstrations, score candidate labels, rank them."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from icl_audio.audio import DEFAULT_MAX_SECONDS, AudioInput
from icl_audio.constants import DEFAULT_CODEC, DEFAULT_LLM
from icl_audio.errors import ICLAudioError, SupportSetError

if TYPE_CHECKING:
    from icl_audio.codec import Codec
    from icl_audio.codecache import CodeCache
    from icl_audio.llm import LanguageModel
    from icl_audio.prompt import Prompt
    from icl_audio.retrieval import Neighbor
    from icl_audio.scoring import LabelScores, Scorer, ScoringOptions
    from icl_audio.support import SupportSet

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$", re.IGNORECASE)


class NotFittedError(ICLAudioError, AttributeError):
    """The classifier has no support set yet. An AttributeError too (as scikit-learn's), so
    ``hasattr(clf, "classes_")`` is False before :meth:`ICLClassifier.fit`."""


@dataclass(frozen=True)
class DemoInfo:
    """A demonstration shown to the model: the support clip, its label, its similarity to the query."""

    source: str
    label: str
    similarity: float


@dataclass(frozen=True)
class Prediction:
    """The ranked candidate labels of one query clip, with the demonstrations used."""

    audio: str
    labels: tuple[str, ...]  # best first
    scores: tuple[float, ...]  # probabilities over the candidates, same order
    demonstrations: tuple[DemoInfo, ...] = ()
    prompt_tokens: int = 0
    demos_used: int = 0
    cropped: bool = False
    logprobs: tuple[float, ...] = field(default=(), repr=False)  # the scorer's raw scores, same order
    decided: tuple[str, ...] = ()  # the labels the decision rule keeps (multi-label: prob >= 0.5)

    @property
    def label(self) -> str:
        """The best label."""
        return self.labels[0]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """A JSON-ready dict: audio, predictions (label, score; best first, at most ``top``), demonstrations."""
        n = len(self.labels) if top is None else top
        return {
            "audio": self.audio,
            "predictions": [{"label": l, "score": round(float(s), 6)} for l, s in zip(self.labels[:n], self.scores[:n])],
            "demonstrations": [
                {"path": d.source, "label": d.label, "similarity": round(float(d.similarity), 6)}
                for d in self.demonstrations
            ],
        }


@dataclass(frozen=True)
class Failure:
    """An input that could not be classified, and why (one line)."""

    audio: str
    error: str


def check_scoring_options(options: "ScoringOptions") -> "ScoringOptions":
    """Check ``options`` without a model; returns them. :class:`ScoringOptions` checks its own fields
    when built (mode, normalisation, budget, mask_eot); this adds the template, which must be read.

    Raises :class:`ICLAudioError` with one line naming the bad value.
    """
    from icl_audio.prompt import load_template

    load_template(options.template)  # unknown names, unreadable or invalid files: one line
    return options


class ICLClassifier:
    """In-context audio classifier with scikit-learn's estimator contract.

    >>> clf = ICLClassifier(model="debug", codec="debug", k=2).fit(["a.wav", "b.wav"], ["dog", "cat"])
    >>> clf.predict(["q.wav"])            # ['dog']
    >>> clf.predict_proba(["q.wav"])      # columns follow clf.classes_
    >>> clf("q.wav", candidate_labels=["dog", "cat", "bird"])  # [{"label", "score"}, ...] best first

    Parameters (all checked here, before any model loads; a bad one raises a one-line
    :class:`ICLAudioError`):

    - ``model``/``codec``: hub ids, local folders or ``"debug"`` (tiny local models whose
      predictions are meaningless by construction).
    - ``k``: demonstrations per query (0 = zero-shot); ``balanced``: class-balanced retrieval.
    - ``scoring``: a :class:`icl_audio.scoring.ScoringOptions`; ``mode``, ``normalize``,
      ``calibrate``, ``template``, ``max_context``, when given, override its fields.
    - ``device``: "auto", "cpu", "cuda" or "cuda:N"; ``quant``: None, "int8" or "nf4" (quantised
      LLM weights, bitsandbytes); ``int8=True`` is the short form of ``quant="int8"``.
    - ``check_weights``: refuse checkpoints whose tensors do not fit the architecture (False: load
      them anyway, with a warning naming the keys).
    - ``use_cache``: codes through the on-disk code cache; ``max_seconds``: read-time crop.
    - ``lm``/``codec_model``: already-loaded models to use instead of loading ``model``/``codec``.

    Fitted attributes (all recomputed by every :meth:`fit`/:meth:`fit_support`): ``support_``,
    ``classes_``, ``multi_label_``. Before fitting they raise :class:`NotFittedError` (an
    AttributeError). Audio inputs: anything :func:`icl_audio.audio.load_audio` accepts; a batch
    is a list or tuple of them (the only tuple taken as one clip is ``(ndarray, int)``).
    """

    _PARAMS = ("model", "codec", "k", "scoring", "mode", "normalize", "calibrate", "template", "max_context",
               "balanced", "device", "int8", "quant", "check_weights", "use_cache", "max_seconds")

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        codec: str = DEFAULT_CODEC,
        *,
        k: int = 4,
        scoring: "ScoringOptions | None" = None,
        mode: str | None = None,
        normalize: str | None = None,
        calibrate: bool | None = None,
        template: str | None = None,
        max_context: int | None = None,
        balanced: bool = False,
        device: str = "auto",
        int8: bool = False,
        quant: str | None = None,
        check_weights: bool = True,
        use_cache: bool = True,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
        lm: "LanguageModel | None" = None,
        codec_model: "Codec | None" = None,
    ):
        self.model, self.codec, self.k, self.scoring = model, codec, k, scoring
        self.mode, self.normalize, self.calibrate = mode, normalize, calibrate
        self.template, self.max_context, self.balanced = template, max_context, balanced
        self.device, self.int8, self.use_cache, self.max_seconds = device, int8, use_cache, max_seconds
        self.quant, self.check_weights = quant, check_weights
        self._lm, self._codec = lm, codec_model
        self._cache: "CodeCache | None" = None
        self._scorer: "Scorer | None" = None
        self._support: "SupportSet | None" = None
        self._options = self._check_params()

    # -- parameters (scikit-learn style) -----------------------------------------------------------
    def _check_params(self) -> "ScoringOptions":
        from icl_audio.scoring import ScoringOptions

        for name in ("model", "codec"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, value := os.fspath(value))
            if not isinstance(value, str) or not value.strip():
                raise ICLAudioError(f"{name} must be a hub id, a local folder or 'debug', got {value!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 0:
            raise ICLAudioError(f"k must be an integer >= 0, got {self.k!r}")
        if not isinstance(self.device, str) or not _DEVICE.match(self.device.strip()):
            raise ICLAudioError(f"unknown device {self.device!r}: use auto, cpu, cuda or cuda:N")
        if self.max_seconds is not None and (isinstance(self.max_seconds, bool) or not isinstance(self.max_seconds, (int, float)) or not self.max_seconds > 0):
            raise ICLAudioError(f"max_seconds must be a positive number or None, got {self.max_seconds!r}")
        for name in ("balanced", "int8", "check_weights", "use_cache"):
            if not isinstance(getattr(self, name), bool):
                raise ICLAudioError(f"{name} must be True or False, got {getattr(self, name)!r}")
        from icl_audio.quant import quant_mode

        quant_mode(self.quant, self.int8)
        if self.scoring is not None and not isinstance(self.scoring, ScoringOptions):
            raise ICLAudioError(f"scoring must be a ScoringOptions, got {type(self.scoring).__name__}")
        overrides = {name: getattr(self, name) for name in ("mode", "normalize", "calibrate", "template", "max_context")
                     if getattr(self, name) is not None}
        if "calibrate" in overrides and not isinstance(overrides["calibrate"], bool):
            raise ICLAudioError(f"calibrate must be True or False, got {overrides['calibrate']!r}")
        return check_scoring_options(replace(self.scoring or ScoringOptions(), **overrides))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn's ``get_params``; loaded models are not parameters)."""
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params: Any) -> "ICLClassifier":
        """Change parameters (checked at once); models are reloaded only if model, codec, device,
        int8, quant or check_weights change."""
        unknown = set(params) - set(self._PARAMS)
        if unknown:
            raise ICLAudioError(f"unknown parameter(s) {', '.join(sorted(unknown))} (known: {', '.join(self._PARAMS)})")
        old = self.get_params()
        for name, value in params.items():
            setattr(self, name, value)
        try:
            self._options = self._check_params()
        except ICLAudioError:
            for name, value in old.items():
                setattr(self, name, value)
            raise
        if any(params.get(name, old[name]) != old[name] for name in ("model", "codec", "device", "int8", "quant", "check_weights")):
            self._lm = self._codec = None
        self._scorer = None
        return self

    @property
    def scoring_options(self) -> "ScoringOptions":
        """The scoring options in effect (``multi_label`` follows the fitted support set)."""
        return replace(self._options, multi_label=self._support is not None and bool(self._support.multi_label))

    # -- lazily loaded stages ----------------------------------------------------------------------
    @property
    def lm(self) -> "LanguageModel":
        """The LLM (loaded on first use, by :func:`icl_audio.models.load_lm`)."""
        if self._lm is None:
            from icl_audio.models import load_lm

            self._lm = load_lm(self.model, device=self.device, quant=self.quant, int8=self.int8,
                               check_weights=self.check_weights)
        return self._lm

    @property
    def codec_model(self) -> "Codec":
        """The codec (loaded on first use, after the LLM, and checked to pair with it:
        :func:`icl_audio.models.check_pair`)."""
        if self._codec is None:
            from icl_audio.models import check_pair, load_codec

            lm = self.lm
            codec = load_codec(self.codec, device=self.device, check_weights=self.check_weights)
            check_pair(lm, codec)
            self._codec = codec
        return self._codec

    @property
    def cache(self) -> "CodeCache | None":
        """The code cache (``None`` with ``use_cache=False``)."""
        if self._cache is None and self.use_cache:
            from icl_audio.codecache import CodeCache

            self._cache = CodeCache()
        return self._cache

    @property
    def scorer(self) -> "Scorer":
        """The scorer for the current options (rebuilt when a fit changes them)."""
        options = self.scoring_options
        if self._scorer is None or self._scorer.options != options:
            from icl_audio.scoring import Scorer

            self._scorer = Scorer(self.lm, options)
        return self._scorer

    # -- fitting -----------------------------------------------------------------------------------
    def fit(self, audios: Sequence[AudioInput], labels: Sequence[str | Sequence[str]], progress=None) -> "ICLClassifier":
        """Take ``audios`` with their ``labels`` as the support set; returns ``self``.

        ``audios``: a list or tuple of audio inputs. ``labels``: one string per clip, or a list of
        strings per clip (multi-label). A clip that cannot be read raises its AudioError.
        Every fitted attribute is recomputed.
        """
        from icl_audio.support import encode_support

        audios = _as_batch(audios, "fit()")
        if isinstance(labels, str) or len(audios) != len(labels):
            raise SupportSetError(f"fit() got {len(audios)} clips but {1 if isinstance(labels, str) else len(labels)} labels")
        if not audios:
            raise SupportSetError("fit() needs at least one support clip")
        label_tuples = [_as_label_tuple(x) for x in labels]
        support, _ = encode_support(audios, label_tuples, self.codec_model, self.lm, cache=self.cache,
                                    max_seconds=self.max_seconds, on_error="raise", progress=progress)
        return self.fit_support(support)

    def fit_support(self, support: "SupportSet") -> "ICLClassifier":
        """Use an already built :class:`SupportSet` (e.g. one loaded by name); returns ``self``."""
        if len(support) == 0:
            raise SupportSetError("the support set is empty")
        # Every fitted attribute derives from this one field, so a refit can leave nothing stale.
        self._support = support
        self._scorer = None
        return self

    @property
    def support_(self) -> "SupportSet":
        """The fitted support set."""
        return self._fitted()

    @property
    def classes_(self) -> tuple[str, ...]:
        """The support set's labels, sorted: the columns of :meth:`predict_proba`."""
        return self._fitted().classes

    @property
    def multi_label_(self) -> bool:
        """Whether the fitted support set is multi-label (per-label sigmoid scores, several labels predicted)."""
        return bool(self._fitted().multi_label)

    def _fitted(self) -> "SupportSet":
        if self._support is None:
            raise NotFittedError("this ICLClassifier is not fitted yet: call fit() or fit_support() first")
        return self._support

    # -- inference ---------------------------------------------------------------------------------
    def encode(self, samples: Sequence[np.ndarray], progress=None) -> list[np.ndarray]:
        """Codec codes of already decoded clips (float32 16 kHz mono arrays), through the code cache.

        For many inputs (paths, ...), stream them with :func:`icl_audio.encoding.stream_codes` instead.
        """
        if self.cache is not None:
            return list(self.cache.encode(self.codec_model, samples, progress=progress).codes)
        return list(self.codec_model.encode(samples, progress=progress))

    def iter_classify(
        self,
        audios: Iterable[AudioInput],
        candidate_labels: Sequence[str] | None = None,
        *,
        k: int | None = None,
        on_error: str = "raise",
        progress: Callable[[int], None] | None = None,
    ) -> Iterator["Prediction | Failure"]:
        """Rank the candidate labels for each clip of ``audios``, yielding results in input order.

        Inputs are decoded and encoded a bounded chunk at a time (:func:`icl_audio.encoding.stream_codes`),
        so memory does not grow with the number of inputs. ``candidate_labels`` defaults to the
        support set's classes. ``on_error="skip"`` yields a :class:`Failure` for an input that
        cannot be read instead of raising, so one bad file does not stop the rest.
        ``progress(n)``: called as inputs are encoded.
        """
        labels = _candidate_labels(candidate_labels, self._fitted())
        for item, neighbours in self._retrieved(audios, labels, k, on_error, progress):
            if neighbours is None:
                yield Failure(item.source, str(item.error))
            else:
                yield self.predict_codes(item.codes, neighbours, labels, source=item.source)

    def iter_prompts(
        self,
        audios: Iterable[AudioInput],
        candidate_labels: Sequence[str] | None = None,
        *,
        k: int | None = None,
        on_error: str = "raise",
    ) -> Iterator["tuple[str, Prompt, list[DemoInfo]] | Failure"]:
        """What the model is fed for each clip: ``(source, Prompt, demonstrations used)``, built on the very
        path :meth:`iter_classify` scores (same retrieval, same prompt builder), without scoring."""
        support = self._fitted()
        labels = _candidate_labels(candidate_labels, support)
        for item, neighbours in self._retrieved(audios, labels, k, on_error, None):
            if neighbours is None:
                yield Failure(item.source, str(item.error))
                continue
            prompt = self.scorer.prompt(self._demos(neighbours), item.codes, labels)
            used = neighbours[: prompt.demos_used]
            yield item.source, prompt, [DemoInfo(support.sources[n.index], support.label_text(n.index), n.similarity)
                                        for n in used]

    def _demos(self, neighbours: Sequence["Neighbor"]) -> list:
        from icl_audio.scoring import Demo

        support = self._fitted()
        return [Demo(support.codes[n.index], support.label_text(n.index)) for n in neighbours]

    def _retrieved(self, audios, labels, k, on_error, progress):
        """(encoded input, its neighbours most similar first; None for an input that failed), in input order."""
        from icl_audio.encoding import stream_codes
        from icl_audio.retrieval import clip_embeddings, retrieve

        support = self._fitted()
        k = self.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ICLAudioError(f"k must be an integer >= 0, got {k!r}")
        if on_error not in ("raise", "skip"):
            raise ICLAudioError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        # The LLM loads before the codec: a missing model fails before any decoding. Its one-time
        # scoring state is set up now too, before the codec's first chunk (see Scorer.prepare).
        scorer = self.scorer.prepare()
        for item in stream_codes(audios, self.codec_model, cache=self.cache, max_seconds=self.max_seconds,
                                 on_error=on_error, progress=progress):
            if item.codes is None:
                yield item, None
                continue
            neighbours: list = []
            if k > 0:
                (neighbours,) = retrieve(support, clip_embeddings(scorer.lm, [item.codes]), k,
                                         balanced_labels=labels if self.balanced else None)
            yield item, neighbours

    def classify(
        self,
        audios: Sequence[AudioInput],
        candidate_labels: Sequence[str] | None = None,
        *,
        k: int | None = None,
        on_error: str = "raise",
        progress: Callable[[int], None] | None = None,
    ) -> list["Prediction | Failure"]:
        """:meth:`iter_classify` over a list or tuple of inputs, as a list."""
        return list(self.iter_classify(_as_batch(audios, "classify()"), candidate_labels, k=k, on_error=on_error, progress=progress))

    def predict_codes(self, query_codes: np.ndarray, neighbours: Sequence["Neighbor"], labels: Sequence[str], *, source: str = "<codes>") -> "Prediction":
        """Score ``labels`` for one query given its codes and its retrieved neighbours (most similar first)."""
        from icl_audio.scoring import decide

        support = self._fitted()
        scores: LabelScores = self.scorer.score(self._demos(neighbours), query_codes, labels)
        order = np.argsort(-np.asarray(scores.probs), kind="stable")
        used = neighbours[: scores.demos_used]
        return Prediction(
            audio=source,
            labels=tuple(scores.labels[i] for i in order),
            scores=tuple(float(scores.probs[i]) for i in order),
            demonstrations=tuple(DemoInfo(support.sources[n.index], support.label_text(n.index), n.similarity) for n in used),
            prompt_tokens=scores.prompt_tokens,
            demos_used=scores.demos_used,
            cropped=scores.cropped,
            logprobs=tuple(float(scores.logprobs[i]) for i in order),
            decided=decide(scores),
        )

    def predict_proba(self, audios: Sequence[AudioInput]) -> np.ndarray:
        """``(n_clips, n_classes)`` probabilities, columns following :attr:`classes_`."""
        classes = self.classes_
        col = {c: j for j, c in enumerate(classes)}
        audios = _as_batch(audios, "predict_proba()")
        out = np.zeros((len(audios), len(classes)), dtype=np.float64)
        for i, pred in enumerate(self.iter_classify(audios, classes)):
            for label, score in zip(pred.labels, pred.scores):
                out[i, col[label]] = score
        return out

    def predict(self, audios: Sequence[AudioInput]) -> list:
        """The best label of each clip (multi-label sets: the tuple of labels the decision rule keeps)."""
        preds = self.classify(audios)
        if not self.multi_label_:
            return [p.label for p in preds]
        return [p.decided for p in preds]

    def __call__(self, audio: AudioInput | Sequence[AudioInput], candidate_labels: Sequence[str] | None = None, top_k: int | None = None):
        """Pipeline-style call: one clip -> ``[{"label", "score"}, ...]`` best first; a list or tuple
        of clips -> a list of those. ``(ndarray, int)`` is one clip (samples and their rate)."""
        single = not isinstance(audio, (list, tuple)) or _is_array_pair(audio)
        batch = [audio] if single else list(audio)
        out = [p.to_dict(top_k)["predictions"] for p in self.iter_classify(batch, candidate_labels)]
        return out[0] if single else out


def _is_array_pair(x: Any) -> bool:
    """``(ndarray, int)``: the one tuple form that is a single clip, not a batch."""
    return (isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], np.ndarray)
            and isinstance(x[1], (int, np.integer)) and not isinstance(x[1], bool))


def _as_batch(audios: Any, where: str) -> list:
    if not isinstance(audios, (list, tuple)) or _is_array_pair(audios):
        raise ICLAudioError(f"{where} takes a list or tuple of audio inputs, got {type(audios).__name__} (wrap one clip in a list)")
    return list(audios)


def _as_label_tuple(label: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(label, str):
        labels = (label,)
    else:
        labels = tuple(label)
    cleaned = tuple(dict.fromkeys(str(x).strip() for x in labels))
    if not cleaned or any(not x for x in cleaned):
        raise SupportSetError(f"empty label in {label!r}")
    return cleaned


def _candidate_labels(candidate_labels: Sequence[str] | None, support: "SupportSet") -> tuple[str, ...]:
    if candidate_labels is None:
        return support.classes
    if isinstance(candidate_labels, str):
        raise SupportSetError("candidate_labels must be a list of labels, not one string")
    labels = tuple(dict.fromkeys(str(x).strip() for x in candidate_labels))
    if not labels or any(not x for x in labels):
        raise SupportSetError("candidate labels must be non-empty strings")
    return labels
