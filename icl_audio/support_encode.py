"""Encoding labelled clips into a SupportSet with models the caller has loaded (this module loads none)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from icl_audio.audio import DEFAULT_MAX_SECONDS
from icl_audio.errors import SupportSetError
from icl_audio.support_set import BuildReport, SupportSet

if TYPE_CHECKING:
    from icl_audio.codec import Codec
    from icl_audio.codecache import CodeCache
    from icl_audio.llm import LanguageModel
    from icl_audio.recipes import Item

def encode_support(
    audios: Iterable[Any],
    labels: Sequence[Sequence[str]],
    codec: "Codec",
    lm: "LanguageModel",
    *,
    cache: "CodeCache | None" = None,
    multi_label: bool | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    on_error: str = "skip",
    names: Sequence[str] | None = None,
) -> tuple[SupportSet, BuildReport]:
    """Encode labelled audio into a :class:`SupportSet` with already-loaded models.

    ``audios``: anything :func:`icl_audio.audio.load_audio` accepts, one per entry of ``labels``
    (a tuple of label strings per clip). Audio goes through :func:`icl_audio.encoding.stream_codes`
    (a bounded chunk in memory, codes through ``cache``; ``None`` caches nothing), so an interrupted
    build loses at most one chunk and a re-run encodes only what is missing. ``on_error="skip"``
    leaves out a clip that cannot be read and reports it in :attr:`BuildReport.skipped`;
    ``"raise"`` raises its AudioError. ``progress(n)`` is called as clips finish. ``names``: what the
    set stores as each clip's source (one per entry of ``labels``; default: the name the audio input
    reports, a file's path).
    """
    from icl_audio.encoding import EncodeTally, stream_codes
    from icl_audio.retrieval import clip_embeddings

    labels = [tuple(x) for x in labels]
    if not labels:
        raise SupportSetError("no support clips to build from")
    tally = EncodeTally()
    kept: list[int] = []
    sources: list[str] = []
    codes: list[np.ndarray] = []
    for item in stream_codes(audios, codec, cache=cache, max_seconds=max_seconds, on_error=on_error,
                             progress=progress, tally=tally):
        if item.codes is not None:
            kept.append(item.index)
            sources.append(item.source if names is None else names[item.index])
            codes.append(item.codes)
    if not kept:
        raise SupportSetError(f"none of the {len(labels)} support clips could be read (first: {tally.skipped[0][1]})")
    kept_labels = tuple(labels[i] for i in kept)
    sset = SupportSet(
        sources=tuple(sources),
        labels=kept_labels,
        codes=tuple(codes),
        embeddings=clip_embeddings(lm, codes),
        multi_label=any(len(x) > 1 for x in kept_labels) if multi_label is None else multi_label,
        meta={**model_meta(codec, lm), **(meta or {})},
    )
    return sset, BuildReport(tally.encoded, tally.reused, tuple(tally.skipped))


def build_support_set(
    items: Sequence["Item"],
    codec: "Codec",
    lm: "LanguageModel",
    *,
    cache: "CodeCache | None" = None,
    multi_label: bool | None = None,
    meta: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> tuple[SupportSet, BuildReport]:
    """Encode recipe ``items`` (labels + audio) into a :class:`SupportSet`; see :func:`encode_support`.

    Each clip is stored under its ``item.key`` (a file's path, a segment's ``PATH#t=A,B``, a dataset
    row's ``hf:...#ROW``); its audio (``item.audio``) is read lazily, one chunk at a time. A clip that
    cannot be read is skipped and reported; the rest go on.
    """
    return encode_support(
        (item.audio for item in items), [tuple(item.labels) for item in items], codec, lm,
        cache=cache, multi_label=multi_label, meta=meta, progress=progress, max_seconds=max_seconds,
        names=[item.key for item in items],
    )


def model_meta(codec: "Codec", lm: "LanguageModel") -> dict[str, Any]:
    """The ids and revisions that make codes and embeddings what they are."""
    return {
        "codec": {"id": codec.model_id, "revision": codec.revision, "fingerprint": codec.fingerprint},
        "model": {"id": lm.model_id, "revision": lm.revision},
    }

