"""The honest baselines `bench` prints beside in-context learning: k-NN vote, majority class, random label, random demos."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Mapping, Sequence

import numpy as np

Ranked = list[tuple[str, float]]  # candidate labels with scores, best first


def query_rng(seed: int, method: str, key: str) -> np.random.Generator:
    """A generator private to one (seed, method, query): its draws depend on nothing else.

    Seeding per query (not one stream for the whole run) is what makes a sharded torchrun run, a
    resumed run and a run with a larger ``--limit`` draw exactly what a single full run draws.
    """
    digest = hashlib.sha256(f"{seed}\0{method}\0{key}".encode("utf-8")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def rank(scores: Mapping[str, float], candidates: Sequence[str], tiebreak: Mapping[str, int] | None = None) -> Ranked:
    """Every candidate with its score (0 when absent), best first.

    Ties are broken by ``tiebreak`` (lower first; e.g. the rank of a label's nearest neighbour),
    then by the order of ``candidates``, so every ranking is deterministic.
    """
    tiebreak = tiebreak or {}
    order = sorted(
        range(len(candidates)),
        key=lambda i: (-float(scores.get(candidates[i], 0.0)), tiebreak.get(candidates[i], float("inf")), i),
    )
    return [(candidates[i], float(scores.get(candidates[i], 0.0))) for i in order]


def knn_vote(neighbour_labels: Sequence[Sequence[str]], similarities: Sequence[float], candidates: Sequence[str]) -> Ranked:
    """Similarity-weighted vote of the retrieved neighbours (most similar first).

    Each neighbour votes for each of its labels with weight ``max(similarity, 0)`` (a neighbour
    less similar than an orthogonal clip carries no evidence); if every weight is 0 the votes
    count equally. A label's score is its share of the total weight, so single-label scores sum
    to 1 and multi-label scores are the weighted fraction of neighbours carrying the label.
    Ties go to the label whose nearest carrier is more similar.
    """
    if not neighbour_labels:
        raise ValueError("k-NN needs at least one neighbour")
    weights = np.maximum(np.asarray(similarities, dtype=np.float64), 0.0)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    total = float(weights.sum())
    votes: dict[str, float] = {}
    first: dict[str, int] = {}
    for position, (labels, w) in enumerate(zip(neighbour_labels, weights)):
        for label in labels:
            votes[label] = votes.get(label, 0.0) + float(w)
            first.setdefault(label, position)
    return rank({label: v / total for label, v in votes.items()}, candidates, first)


def majority(support_labels: Sequence[Sequence[str]], candidates: Sequence[str]) -> Ranked:
    """The training label frequencies as scores: the most frequent class first.

    Score = fraction of support clips carrying the label (single-label: class priors summing to
    1; multi-label: per-label frequencies). The same ranking for every query.
    """
    counts = Counter(label for labels in support_labels for label in labels)
    n = max(len(support_labels), 1)
    return rank({label: c / n for label, c in counts.items()}, candidates)


def random_label(candidates: Sequence[str], rng: np.random.Generator) -> Ranked:
    """Independent uniform scores per candidate: the top label is uniformly random (chance level)."""
    draws = rng.random(len(candidates))
    return rank(dict(zip(candidates, draws.tolist())), candidates)


def random_demos(n_support: int, k: int, rng: np.random.Generator) -> list[int]:
    """The first ``min(k, n_support)`` positions of a uniformly random permutation of the support set.

    A full permutation (not ``choice(size=k)``) makes the draw independent of k: smaller k take a
    prefix of the same draw, as smaller k take a prefix of the retrieved list, and changing the
    set of ``--k`` values never changes the demonstrations of a k already computed.
    """
    return [int(i) for i in rng.permutation(n_support)[: min(k, n_support)]]
