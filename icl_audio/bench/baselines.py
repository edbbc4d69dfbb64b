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


# --------------------------------------------------------------------------------------------
# few-shot baselines of an episode (N classes, K supports each), on the retrieval embeddings


def cl2n(embeddings: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """SimpleShot's CL2N: subtract ``centre``, then L2-normalise each row (a zero row stays zero)."""
    x = np.asarray(embeddings, dtype=np.float64) - np.asarray(centre, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def prototype(support: np.ndarray, support_labels: Sequence[str], queries: np.ndarray, candidates: Sequence[str],
              centre: np.ndarray | None = None) -> list[Ranked]:
    """SimpleShot CL2N (Wang et al. 2019): nearest class mean after centring and L2 normalisation.

    ``support``: ``(n, d)`` embeddings with their ``support_labels``; ``queries``: ``(q, d)``.
    ``centre``: the mean embedding to subtract (SimpleShot: the base classes'); None takes the mean
    of ``support`` (what an episode offers when the dataset has no classes outside the evaluation).
    Scores are minus the Euclidean distance to each class mean (of the normalised supports); a
    candidate without supports scores ``-inf``. Returns one ranking per query, best first.
    """
    support = np.asarray(support, dtype=np.float64)
    centre = support.mean(axis=0) if centre is None else np.asarray(centre, dtype=np.float64)
    s, q = cl2n(support, centre), cl2n(np.atleast_2d(queries), centre)
    labels = np.asarray(list(support_labels))
    out = []
    means = {c: s[labels == c].mean(axis=0) for c in candidates if np.any(labels == c)}
    for row in q:
        scores = {c: -float(np.linalg.norm(row - m)) for c, m in means.items()}
        out.append(rank({c: scores.get(c, -np.inf) for c in candidates}, candidates))
    return out


def nearest(support: np.ndarray, support_labels: Sequence[str], queries: np.ndarray, candidates: Sequence[str]) -> list[Ranked]:
    """1-nearest neighbour by cosine similarity: each candidate scores its most similar support clip.

    ``support``/``queries``: L2-normalised embeddings (as :func:`icl_audio.retrieval.clip_embeddings`
    makes them). The top label is the label of the single most similar support clip.
    """
    sims = np.atleast_2d(queries).astype(np.float64) @ np.asarray(support, dtype=np.float64).T
    out = []
    for row in sims:
        best: dict[str, float] = {}
        for label, sim in zip(support_labels, row.tolist()):
            best[label] = max(best.get(label, -np.inf), sim)
        out.append(rank({c: best.get(c, -np.inf) for c in candidates}, candidates))
    return out
