"""Support sets in memory: the SupportSet and BuildReport dataclasses and the errors of the support store."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from icl_audio.errors import CacheError, SupportSetError

if TYPE_CHECKING:
    from icl_audio.retrieval import Index


# Errors carry the set's name so a front end can add its own advice (the CLI adds the commands to
# run); the messages themselves name no command-line syntax.


class NoSuchSetError(SupportSetError):
    """No stored support set has this name."""

    def __init__(self, name: str, message: str | None = None):
        super().__init__(message or f"no support set named {name!r}")
        self.set_name = name


class NotBuiltError(NoSuchSetError):
    """``--support NAME`` names a dataset recipe whose support set was never built."""

    def __init__(self, name: str):
        super().__init__(name, f"support set {name!r} is not built yet ({name} is a dataset: build a support set from it first)")
        self.recipe = name


class DamagedSetError(CacheError):
    """A stored set's files are damaged; it must be rebuilt or removed."""

    def __init__(self, name: str, why: str):
        super().__init__(f"support set {name!r} is damaged ({why}); rebuild or remove it")
        self.set_name = name


class ModelMismatchError(SupportSetError):
    """A build would mix codes or embeddings of another model or codec into a stored set."""

    def __init__(self, name: str, flag: str, built: str, wanted: str):
        super().__init__(f"support set {name!r} was built with {flag} {built}; refusing to mix in {flag} {wanted} (use another name, or remove the set first)")
        self.set_name = name


@dataclass(frozen=True)
class SupportSet:
    """Labelled support clips, ready for retrieval and prompting.

    ``labels[i]`` holds one label (single-label) or several (multi-label) for clip ``i``;
    ``codes[i]`` its codec codes; ``embeddings[i]`` its retrieval embedding.
    ``meta`` records what built it (codec and model ids/revisions, dataset, ...).
    """

    sources: tuple[str, ...]
    labels: tuple[tuple[str, ...], ...]
    codes: tuple[np.ndarray, ...]
    embeddings: np.ndarray
    multi_label: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)
    _index: list = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def classes(self) -> tuple[str, ...]:
        """Every label that occurs, sorted (the candidate labels by default)."""
        return tuple(sorted({label for labels in self.labels for label in labels}))

    def label_text(self, i: int) -> str:
        """What the prompt shows as clip ``i``'s answer (multi-label: labels joined by ', ')."""
        return ", ".join(self.labels[i])

    def label_counts(self) -> dict[str, int]:
        """Clips per label, most frequent first."""
        return dict(Counter(label for labels in self.labels for label in labels).most_common())

    @property
    def index(self) -> "Index":
        """The FAISS index over ``embeddings`` (built on first use, then kept)."""
        if not self._index:
            from icl_audio.retrieval import Index

            self._index.append(Index(self.embeddings))
        return self._index[0]

    def subset(self, keep: Sequence[int]) -> "SupportSet":
        """A new set holding only the clips at positions ``keep`` (in that order)."""
        keep = list(keep)
        return SupportSet(
            sources=tuple(self.sources[i] for i in keep),
            labels=tuple(self.labels[i] for i in keep),
            codes=tuple(self.codes[i] for i in keep),
            embeddings=self.embeddings[keep] if keep else self.embeddings[:0],
            multi_label=self.multi_label,
            meta=dict(self.meta),
        )


@dataclass(frozen=True)
class BuildReport:
    """What a build did: clips encoded now, clips whose codes came from the cache, files skipped."""

    encoded: int
    reused: int
    skipped: tuple[tuple[str, str], ...] = ()

