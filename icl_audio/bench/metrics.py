"""Benchmark metrics in pure numpy: accuracy, macro-F1, confusion, average precision and mAP, fold means."""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np


def accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Fraction of queries whose predicted label equals the true one.

    ``truth``, ``predicted``: one label per query, same length (at least one query).
    """
    _check_pairs(truth, predicted)
    return float(np.mean([t == p for t, p in zip(truth, predicted)]))


def macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Unweighted mean of the per-class F1 scores (single-label).

    The mean runs over every class present in ``truth`` *or* in ``predicted`` (scikit-learn's
    default ``labels``): a class that is predicted but never true still counts, with F1 = 0,
    because those false positives are errors. A class's F1 is ``2 TP / (2 TP + FP + FN)``.
    """
    _check_pairs(truth, predicted)
    classes = sorted(set(truth) | set(predicted))
    scores = []
    for c in classes:
        tp = sum(1 for t, p in zip(truth, predicted) if t == c and p == c)
        fp = sum(1 for t, p in zip(truth, predicted) if t != c and p == c)
        fn = sum(1 for t, p in zip(truth, predicted) if t == c and p != c)
        scores.append(2 * tp / (2 * tp + fp + fn))  # denominator > 0: c occurs somewhere
    return float(np.mean(scores))


def confusion_matrix(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """``(labels, counts)`` with ``counts[i, j]`` = queries of true class ``labels[i]`` predicted ``labels[j]``.

    ``labels`` defaults to the sorted union of the true and predicted labels.
    """
    _check_pairs(truth, predicted)
    labels = list(labels) if labels is not None else sorted(set(truth) | set(predicted))
    pos = {c: i for i, c in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(truth, predicted):
        counts[pos[t], pos[p]] += 1
    return labels, counts


def average_precision(relevant: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Average precision of one class: the area under its precision-recall steps.

    ``relevant``: whether each query carries the class; ``scores``: the class's score per query
    (higher = more confident). AP = sum over distinct score thresholds (high to low) of
    ``(recall_n - recall_{n-1}) * precision_n``; queries with equal scores enter together, as in
    scikit-learn's ``average_precision_score``, so ties are neither rewarded nor punished by order.
    Returns NaN when the class has no relevant query (AP is undefined there).
    """
    y = np.asarray(relevant, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"relevant and scores must be 1-D of the same length, got {y.shape} and {s.shape}")
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    # The last position of each run of equal scores is a threshold.
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last]
    seen = last + 1
    precision = tp / seen
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(truth: Sequence[Iterable[str]], scores: Sequence[Mapping[str, float]], classes: Sequence[str] | None = None) -> dict[str, float]:
    """Macro and weighted mAP of multi-label predictions.

    ``truth``: the set of true labels of each query; ``scores``: per query, a score for each
    candidate label (a label a query has no score for counts as scoring ``-inf`` there, below
    every scored label). ``classes`` defaults to every label true somewhere.
    AP is computed per class over all queries; classes without a positive query are skipped
    (AP undefined). ``map_macro`` is the plain mean over the remaining classes, ``map_weighted``
    the mean weighted by each class's number of positive queries (its support).
    Returns ``{"map_macro", "map_weighted", "classes"}`` (classes = how many were averaged).
    """
    truth_sets = [set(t) for t in truth]
    if len(truth_sets) != len(scores):
        raise ValueError(f"{len(truth_sets)} truths but {len(scores)} score rows")
    if not truth_sets:
        raise ValueError("no queries")
    if classes is None:
        classes = sorted(set().union(*truth_sets))
    aps, weights = [], []
    for c in classes:
        relevant = np.array([c in t for t in truth_sets])
        if not relevant.any():
            continue
        column = np.array([row.get(c, -np.inf) for row in scores], dtype=np.float64)
        aps.append(average_precision(relevant, column))
        weights.append(int(relevant.sum()))
    if not aps:
        return {"map_macro": float("nan"), "map_weighted": float("nan"), "classes": 0}
    aps_arr, w = np.array(aps), np.array(weights, dtype=np.float64)
    return {"map_macro": float(aps_arr.mean()), "map_weighted": float((aps_arr * w).sum() / w.sum()), "classes": len(aps)}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof=0; 0.0 for a single value) of fold results.

    ddof=0 because the folds are the whole population a benchmark reports on, and it stays
    defined for split datasets with one evaluation unit. NaN values are ignored.
    """
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=0))


def _check_pairs(truth: Sequence, predicted: Sequence) -> None:
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    if len(truth) == 0:
        raise ValueError("no queries")


def mean_ci95(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, std and 95% confidence half-width of per-episode accuracies, as few-shot papers report them.

    ``ci95 = 1.96 * std / sqrt(n)`` over the ``n`` values, with the population std (ddof=0, numpy's
    default, which the few-shot literature's code uses; at 10,000 episodes the two stds agree to
    0.005%). NaN values are ignored; no value gives NaNs.
    """
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return float("nan"), float("nan"), float("nan")
    std = float(arr.std(ddof=0))
    return float(arr.mean()), std, 1.96 * std / float(np.sqrt(arr.size))
