"""The prediction stage and the public API: retrieve demonstrations, score candidate labels, rank them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from icl_audio.audio import DEFAULT_MAX_SECONDS, AudioInput, Clip, load_audio
from icl_audio.constants import DEFAULT_CODEC, DEFAULT_LLM, LLASA_CONTEXT
from icl_audio.errors import AudioError, ICLAudioError, SupportSetError

if TYPE_CHECKING:
    from icl_audio.codec import Codec
    from icl_audio.llm import LanguageModel
    from icl_audio.retrieval import Neighbor
    from icl_audio.scoring import LabelScores
    from icl_audio.support import SupportSet


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
        """The JSON shape printed by ``icl-audio classify --json``."""
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


def retrieve(support: "SupportSet", query_embeddings: np.ndarray, k: int, *, balanced_labels: Sequence[str] | None = None) -> list[list["Neighbor"]]:
    """The k nearest support clips of each query, most similar first.

    With ``balanced_labels``, the nearest clips of each of those labels are taken in turn
    (class-balanced retrieval), so every candidate appears among the demonstrations when k allows.
    """
    if not balanced_labels:
        return support.index.search(query_embeddings, k)
    from icl_audio.scoring import select_balanced

    rows = support.index.search(query_embeddings, len(support))
    return [[row[i] for i in select_balanced([support.labels[n.index] for n in row], balanced_labels, k)] for row in rows]


class ICLClassifier:
    """In-context audio classifier with a scikit-learn-like facade.

    >>> clf = ICLClassifier(model="debug", codec="debug", k=2).fit(["a.wav", "b.wav"], ["dog", "cat"])
    >>> clf.predict(["q.wav"])            # ['dog']
    >>> clf.predict_proba(["q.wav"])      # columns follow clf.classes_
    >>> clf("q.wav", candidate_labels=["dog", "cat", "bird"])  # [{"label", "score"}, ...] best first

    ``model``/``codec``: hub ids, local folders or ``"debug"`` (tiny local models whose
    predictions are meaningless by construction). Audio inputs: anything :func:`load_audio`
    accepts. Scoring options (``mode``, ``normalize``, ``calibrate``, ``template``,
    ``max_context``) are those of :class:`icl_audio.scoring.ScoringOptions`.
    """

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        codec: str = DEFAULT_CODEC,
        *,
        k: int = 4,
        mode: str = "direct",
        normalize: str = "sum",
        calibrate: bool = False,
        template: str = "default",
        max_context: int = LLASA_CONTEXT,
        balanced: bool = False,
        device: str = "auto",
        int8: bool = False,
        use_cache: bool = True,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
        lm: "LanguageModel | None" = None,
        codec_model: "Codec | None" = None,
    ):
        if k < 0:
            raise ICLAudioError(f"k must be >= 0, got {k}")
        self.model, self.codec, self.k = model, codec, k
        self.mode, self.normalize, self.calibrate = mode, normalize, calibrate
        self.template, self.max_context, self.balanced = template, max_context, balanced
        self.device, self.int8, self.use_cache, self.max_seconds = device, int8, use_cache, max_seconds
        self._lm, self._codec, self._scorer, self._cache = lm, codec_model, None, None
        self.support_: SupportSet | None = None
        self._validate_options()

    def _validate_options(self) -> None:
        from icl_audio.scoring import ScoringOptions

        self._options = ScoringOptions(
            mode=self.mode,
            normalize=self.normalize,
            calibrate=self.calibrate,
            max_context=self.max_context,
            template=self.template,
        )

    # -- lazily loaded stages ------------------------------------------------------------------
    @property
    def lm(self) -> "LanguageModel":
        if self._lm is None:
            from icl_audio.llm import load_lm

            self._lm = load_lm(self.model, device=self.device, int8=self.int8)
        return self._lm

    @property
    def codec_model(self) -> "Codec":
        if self._codec is None:
            from icl_audio.codec import load_codec

            self._codec = load_codec(self.codec, device=self.device)
            if self._codec.codebook_size > self.lm.layout.n_speech:
                raise ICLAudioError(
                    f"codec {self._codec.model_id} has {self._codec.codebook_size} codes but model "
                    f"{self.lm.model_id} only {self.lm.layout.n_speech} speech tokens: use a matching pair"
                )
        return self._codec

    @property
    def cache(self):
        if self._cache is None and self.use_cache:
            from icl_audio.codecache import CodeCache

            self._cache = CodeCache()
        return self._cache

    @property
    def scorer(self):
        if self._scorer is None:
            from icl_audio.scoring import Scorer

            self._scorer = Scorer(self.lm, self._options)
        return self._scorer

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, audios: Sequence[AudioInput], labels: Sequence[str | Sequence[str]], progress=None) -> "ICLClassifier":
        """Take ``audios`` with their ``labels`` as the support set; returns ``self``.

        ``labels``: one string per clip, or a list of strings per clip (multi-label).
        """
        from icl_audio.retrieval import clip_embeddings
        from icl_audio.support import SupportSet, model_meta

        if len(audios) != len(labels):
            raise SupportSetError(f"fit() got {len(audios)} clips but {len(labels)} labels")
        if not audios:
            raise SupportSetError("fit() needs at least one support clip")
        label_tuples = tuple(_as_label_tuple(x) for x in labels)
        clips = [load_audio(a, max_seconds=self.max_seconds) for a in audios]
        codes = self.encode([c.samples for c in clips], progress=progress)
        support = SupportSet(
            sources=tuple(c.source for c in clips),
            labels=label_tuples,
            codes=tuple(codes),
            embeddings=clip_embeddings(self.lm, codes),
            multi_label=any(len(x) > 1 for x in label_tuples),
            meta=model_meta(self.codec_model, self.lm),
        )
        return self.fit_support(support)

    def fit_support(self, support: "SupportSet") -> "ICLClassifier":
        """Use an already built :class:`SupportSet` (e.g. one loaded by name); returns ``self``."""
        if len(support) == 0:
            raise SupportSetError("the support set is empty")
        self.support_ = support
        if support.multi_label and not self._options.multi_label:
            from dataclasses import replace

            self._options = replace(self._options, multi_label=True)
            self._scorer = None
        return self

    @property
    def classes_(self) -> tuple[str, ...]:
        """The support set's labels, sorted: the columns of :meth:`predict_proba`."""
        return self._fitted().classes

    def _fitted(self) -> "SupportSet":
        if self.support_ is None:
            raise ICLAudioError("this ICLClassifier is not fitted: call fit() or fit_support() first")
        return self.support_

    # -- inference -------------------------------------------------------------------------------
    def encode(self, samples: Sequence[np.ndarray], progress=None) -> list[np.ndarray]:
        """Codec codes of decoded clips, through the code cache when enabled."""
        if self.cache is not None:
            return list(self.cache.encode(self.codec_model, samples, progress=progress).codes)
        return list(self.codec_model.encode(samples, progress=progress))

    def classify(
        self,
        audios: Sequence[AudioInput],
        candidate_labels: Sequence[str] | None = None,
        *,
        k: int | None = None,
        on_error: str = "raise",
        progress=None,
    ) -> list[Prediction | Failure]:
        """Rank the candidate labels for each clip in ``audios``.

        ``candidate_labels`` defaults to the support set's classes. ``on_error="skip"`` returns a
        :class:`Failure` for an input that cannot be read instead of raising, so one bad file in a
        batch does not stop the rest.
        """
        support = self._fitted()
        labels = _candidate_labels(candidate_labels, support)
        k = self.k if k is None else k
        loaded: list[Clip | Failure] = []
        for audio in audios:
            try:
                loaded.append(load_audio(audio, max_seconds=self.max_seconds))
            except AudioError as exc:
                if on_error != "skip":
                    raise
                loaded.append(Failure(_describe(audio), str(exc)))
        good = [c for c in loaded if isinstance(c, Clip)]
        codes = self.encode([c.samples for c in good], progress=progress) if good else []
        results: dict[int, Prediction] = {}
        if good:
            from icl_audio.retrieval import clip_embeddings

            neighbours = retrieve(
                support, clip_embeddings(self.lm, codes), k, balanced_labels=labels if self.balanced else None
            ) if k > 0 else [[] for _ in good]
            for i, (clip, query_codes, row) in enumerate(zip(good, codes, neighbours)):
                results[i] = self.predict_codes(query_codes, row, labels, source=clip.source)
        out: list[Prediction | Failure] = []
        it = iter(range(len(good)))
        for item in loaded:
            out.append(item if isinstance(item, Failure) else results[next(it)])
        return out

    def predict_codes(self, query_codes: np.ndarray, neighbours: Sequence["Neighbor"], labels: Sequence[str], *, source: str = "<codes>") -> Prediction:
        """Score ``labels`` for one query given its codes and its retrieved neighbours (most similar first)."""
        from icl_audio.scoring import Demo

        support = self._fitted()
        demos = [Demo(support.codes[n.index], support.label_text(n.index)) for n in neighbours]
        from icl_audio.scoring import decide

        scores: LabelScores = self.scorer.score(demos, query_codes, labels)
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
        out = np.zeros((len(audios), len(classes)), dtype=np.float64)
        for i, pred in enumerate(self.classify(audios, classes)):
            for label, score in zip(pred.labels, pred.scores):
                out[i, col[label]] = score
        return out

    def predict(self, audios: Sequence[AudioInput]) -> list:
        """The best label of each clip (multi-label sets: the tuple of labels the decision rule keeps)."""
        preds = self.classify(audios)
        if not self._fitted().multi_label:
            return [p.label for p in preds]
        return [p.decided for p in preds]

    def __call__(self, audio: AudioInput | Sequence[AudioInput], candidate_labels: Sequence[str] | None = None, top_k: int | None = None):
        """Pipeline-style call: one clip -> ``[{"label", "score"}, ...]`` best first; a list -> a list of those."""
        single = not isinstance(audio, (list, tuple)) or (isinstance(audio, tuple) and len(audio) == 2 and np.isscalar(audio[1]))
        batch = [audio] if single else list(audio)
        out = [p.to_dict(top_k)["predictions"] for p in self.classify(batch, candidate_labels)]
        return out[0] if single else out


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


def _describe(audio: Any) -> str:
    from icl_audio.audio import describe

    return describe(audio)
