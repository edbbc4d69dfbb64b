"""Benchmark metrics, baselines and planning helpers against hand-computed values (no models)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from icl_audio.bench import baselines
from icl_audio.bench.config import BenchError, parse_choices, parse_ks, parse_units
from icl_audio.bench.metrics import (
    accuracy,
    average_precision,
    confusion_matrix,
    macro_f1,
    mean_average_precision,
    mean_std,
)
from icl_audio.bench.plan import RunSpec, plan_runs, subsample


def test_accuracy_and_macro_f1_by_hand():
    truth = ["a", "b", "a", "c"]
    pred = ["a", "a", "a", "c"]
    assert accuracy(truth, pred) == 0.75
    # a: TP 2, FP 1, FN 0 -> 4/5; b: TP 0 -> 0; c: TP 1 -> 1; mean 0.6
    assert macro_f1(truth, pred) == pytest.approx(0.6)


def test_macro_f1_counts_classes_only_predicted():
    # a: TP 1, FN 1 -> 2/3; z (never true, predicted once): 0 -> mean 1/3
    assert macro_f1(["a", "a"], ["a", "z"]) == pytest.approx(1 / 3)
    assert macro_f1(["a", "b"], ["a", "b"]) == 1.0


def test_metrics_reject_mismatched_or_empty_input():
    with pytest.raises(ValueError):
        accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        macro_f1([], [])


def test_confusion_matrix_by_hand():
    labels, counts = confusion_matrix(["a", "b", "a"], ["a", "a", "b"])
    assert labels == ["a", "b"]
    assert counts.tolist() == [[1, 1], [1, 0]]


def test_average_precision_by_hand():
    # relevant at ranks 1 and 3: (1 + 2/3) / 2
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]) == pytest.approx(5 / 6)
    assert average_precision([1, 1, 0], [0.9, 0.3, 0.2]) == pytest.approx(1.0)
    assert average_precision([1, 0, 0], [0.1, 0.8, 0.5]) == pytest.approx(1 / 3)
    assert math.isnan(average_precision([0, 0], [0.3, 0.2]))


def test_average_precision_ties_enter_together():
    # Equal scores form one threshold: the order of tied queries cannot change AP.
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    # 0.9 -> P 0, R 0; 0.5 -> P 2/3, R 1
    assert average_precision([0, 1, 1], [0.9, 0.5, 0.5]) == pytest.approx(2 / 3)


def test_map_macro_and_weighted_by_hand():
    truth = [{"a", "b"}, {"a"}, {"c"}]
    scores = [{"a": 0.9, "b": 0.1, "c": 0.2}, {"a": 0.3, "b": 0.8, "c": 0.1}, {"a": 0.2, "b": 0.5, "c": 0.9}]
    # AP: a = 1, b = 1/3, c = 1; supports 2, 1, 1
    result = mean_average_precision(truth, scores, classes=["a", "b", "c", "d"])  # d: no positive, skipped
    assert result["classes"] == 3
    assert result["map_macro"] == pytest.approx(7 / 9)
    assert result["map_weighted"] == pytest.approx((2 * 1 + 1 / 3 + 1) / 4)


def test_map_unscored_label_ranks_last():
    result = mean_average_precision([{"a"}, {"b"}], [{"a": 0.1}, {"b": 0.1}])
    assert result["map_macro"] == pytest.approx(1.0)


def test_mean_std_population():
    mean, std = mean_std([0.5, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1)
    assert mean_std([0.4]) == (pytest.approx(0.4), 0.0)
    assert mean_std([0.4, float("nan")])[0] == pytest.approx(0.4)


def test_knn_vote_weights_and_ties():
    ranked = baselines.knn_vote([["a"], ["b"], ["a"]], [0.5, 0.9, 0.3], ["a", "b", "c"])
    assert [l for l, _ in ranked] == ["b", "a", "c"]
    assert dict(ranked) == pytest.approx({"a": 0.8 / 1.7, "b": 0.9 / 1.7, "c": 0.0})
    # A tie goes to the label of the nearer neighbour, whatever the candidate order.
    assert baselines.knn_vote([["b"], ["a"]], [0.5, 0.5], ["a", "b"])[0][0] == "b"
    # Similarities all <= 0: every neighbour counts once.
    assert dict(baselines.knn_vote([["a"], ["a"], ["b"]], [-0.2, -0.1, -0.3], ["a", "b"])) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    # Multi-label: weighted fraction of neighbours carrying each label.
    multi = dict(baselines.knn_vote([["dog", "animal"], ["cat", "animal"]], [0.6, 0.2], ["animal", "cat", "dog"]))
    assert multi == pytest.approx({"animal": 1.0, "dog": 0.75, "cat": 0.25})


def test_majority_and_random_baselines():
    assert baselines.majority([["a"], ["b"], ["b"]], ["a", "b", "c"]) == [("b", pytest.approx(2 / 3)), ("a", pytest.approx(1 / 3)), ("c", 0.0)]
    one = baselines.random_label(["a", "b", "c"], baselines.query_rng(0, "random-label", "q.wav"))
    two = baselines.random_label(["a", "b", "c"], baselines.query_rng(0, "random-label", "q.wav"))
    assert one == two and sorted(l for l, _ in one) == ["a", "b", "c"]
    # Chance level: over many queries each label comes first about equally often.
    firsts = [baselines.random_label(["a", "b", "c"], baselines.query_rng(0, "random-label", f"q{i}"))[0][0] for i in range(600)]
    assert all(150 < firsts.count(x) < 250 for x in "abc")
    # Random demonstrations: distinct, and smaller k take a prefix of the same draw.
    big = baselines.random_demos(50, 8, baselines.query_rng(1, "icl-random-demos", "q"))
    small = baselines.random_demos(50, 3, baselines.query_rng(1, "icl-random-demos", "q"))
    assert len(set(big)) == 8 and big[:3] == small
    assert sorted(baselines.random_demos(3, 8, np.random.default_rng(0))) == [0, 1, 2]


def test_option_parsing_errors_are_bench_errors():
    assert parse_ks("8,0,1,1") == (0, 1, 8)
    for bad in ("a", "1,x", "-1", "1.5", ""):
        with pytest.raises(BenchError):
            parse_ks(bad)
    assert parse_choices("direct,channel", ("direct", "channel"), "--mode") == ("direct", "channel")
    with pytest.raises(BenchError, match="unknown --mode value 'sideways'"):
        parse_choices("direct,sideways", ("direct", "channel"), "--mode")
    assert parse_units("1, 2") == (1, 2) and parse_units("test") == ("test",) and parse_units(None) is None


def test_plan_runs_skips_undefined_and_duplicate_configurations():
    runs, skipped = plan_runs(1, ("icl", "knn", "majority", "random-label", "icl-random-demos"), (0, 2), ("direct", "channel"))
    names = [r.name for r in runs]
    assert "fold1.icl.k0.direct" in names and "fold1.icl.k2.channel" in names
    assert "fold1.knn.k2" in names and "fold1.knn.k0" not in names
    assert "fold1.icl-random-demos.k2.direct" in names and "fold1.icl-random-demos.k0.direct" not in names
    assert names.count("fold1.majority") == 1 and RunSpec("test", "random-label", None, None).name == "test.random-label"
    assert {(s["method"], s["k"]) for s in skipped} == {("knn", 0), ("icl-random-demos", 0)}


def test_subsample_is_seeded_nested_and_keeps_order():
    from pathlib import Path

    from icl_audio.recipes import Item

    items = [Item(Path(f"/d/{i:03d}.wav"), ("x",), ("x",)) for i in range(40)]
    ten, twenty = subsample(items, 10, 0), subsample(items, 20, 0)
    assert len(ten) == 10 and set(ten) <= set(twenty)
    assert ten == sorted(ten, key=items.index) and ten == subsample(items, 10, 0)
    assert ten != subsample(items, 10, 1)
    assert subsample(items, 100, 0) == items
