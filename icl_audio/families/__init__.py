"""Model families: what makes an LLM and a codec a pair icl-audio can run.

A :class:`ModelFamily` is everything icl-audio knows about one kind of codec-token LLM: its hub ids,
aliases and default, the codec it was trained on, how its tokenizer lays out the speech tokens, the
prompt template it was trained with, and the local builds (the tiny debug model and random models
at the real shape). One family lives in one module of this package (:mod:`icl_audio.families.llasa`);
a second codec-token LLM is a second module, listed in :data:`FAMILIES`.

Nothing here imports torch or transformers at import time (the CLI reads the names for ``--help``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from icl_audio.layout import SpeechLayout


@dataclass(frozen=True)
class LocalBuild:
    """A model built on this machine instead of downloaded: ``build()`` returns its folder (built once
    into the cache), ``revision`` is what the loaded model reports (None: the folder's content hash),
    ``origin`` is "debug" or "random"."""

    build: Callable[[], Path]
    revision: str | None
    origin: str


@dataclass(frozen=True)
class ModelFamily:
    """One kind of codec-token LLM and the codec it pairs with.

    ``name``: short name ("llasa"). ``default_llm``: the hub id loaded when none is given; ``aliases``:
    lower-case short names -> hub ids; ``gated``: hub ids whose terms each user must accept.
    ``default_codec``: the codec the LLM's speech tokens were trained on. ``template``: the default
    prompt template (a name under prompts/). ``read_layout(tokenizer, where)``: the
    :class:`~icl_audio.layout.SpeechLayout`, or ModelError naming ``where`` when the tokenizer is not
    this family's. ``local_llms``: names ("debug", "random-...") -> :class:`LocalBuild`.
    ``note``: the family's own remark, shown with a random build (what its shape is).
    """

    name: str
    default_llm: str
    aliases: Mapping[str, str]
    default_codec: str
    template: str
    read_layout: Callable[[Any, str], "SpeechLayout"]
    local_llms: Callable[[], Mapping[str, LocalBuild]]
    gated: frozenset = field(default=frozenset())

    def resolve_alias(self, name: str) -> str:
        """The hub id an alias stands for (case-insensitive), or ``name`` itself."""
        return self.aliases.get(name.lower(), name)


def _families() -> tuple[ModelFamily, ...]:
    from icl_audio.families.llasa import LLASA

    return (LLASA,)


def families() -> tuple[ModelFamily, ...]:
    """Every known family, the default first."""
    return _families()


def default_family() -> ModelFamily:
    """The family of the default LLM (Llasa)."""
    return _families()[0]


def family_of(name: str) -> ModelFamily:
    """The family a model NAME belongs to by its id, alias or local-build name; the default family
    for anything else (a folder or another hub id: its tokenizer decides, see :func:`read_layout`)."""
    lowered = str(name).lower()
    for family in _families():
        if (lowered in family.aliases or name in family.aliases.values() or name == family.default_llm
                or name in family.local_llms()):
            return family
    return default_family()


def read_layout(tokenizer: Any, where: str, family: ModelFamily | None = None) -> tuple[ModelFamily, "SpeechLayout"]:
    """The family whose layout ``tokenizer`` has, and that layout. ``family`` is tried first; when no
    family accepts the tokenizer, the first one's ModelError (one line, naming ``where``) is raised."""
    from icl_audio.errors import ModelError

    order = [family] if family is not None else []
    order += [f for f in _families() if f is not family]
    first_error: ModelError | None = None
    for candidate in order:
        try:
            return candidate, candidate.read_layout(tokenizer, where)
        except ModelError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error
