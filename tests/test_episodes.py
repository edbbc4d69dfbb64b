"""Episodes as data (pure, no model): seeded draws, the episodes file, UniAudio's .scp lists, the interval,
the few-shot baselines and the shared-prefix prompt of an episode."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from icl_audio.bench import baselines
from icl_audio.bench.config import BenchConfig, BenchError, validate
from icl_audio.bench.episodes import EpisodeClip, draw_episodes, read_episodes, read_scp, write_episodes
from icl_audio.bench.metrics import mean_ci95

POOL = {f"class{c}": [f"/d/class{c}/{i}.wav" for i in range(6)] for c in range(8)}


def test_draws_classes_without_replacement_and_queries_disjoint_from_supports():
    episodes = draw_episodes(POOL, episodes=40, way=5, shots=[1, 3], queries=2, seed=7)
    assert [e.index for e in episodes] == list(range(80))
    for e in episodes:
        shot = 1 if e.index < 40 else 3
        assert e.way == 5 and e.shot == shot and len(e.support) == 5 * shot and len(e.queries) == 5 * 2
        assert len(set(e.labels)) == 5  # five distinct classes
        assert Counter(q.label for q in e.queries) == {label: 2 for label in e.labels}
        assert not {c.key for c in e.support} & {q.key for q in e.queries}
        assert all(c.key.startswith(f"/d/{c.label}/") for c in e.support + e.queries)  # a clip keeps its label
        assert not e.leaked
    # Every class gets drawn across episodes; classes are not always drawn in the same order.
    assert {label for e in episodes for label in e.labels} == set(POOL)
    # The 1-shot and 3-shot episodes of one index share classes, queries and seed; 1-shot supports nest.
    for one, three in zip(episodes[:40], episodes[40:]):
        assert one.seed == three.seed and one.labels == three.labels and one.queries == three.queries
        assert set(one.support) <= set(three.support)


def test_draws_are_seeded_reproducible_and_nested():
    a = draw_episodes(POOL, episodes=10, way=3, shots=[2], queries=1, seed=1)
    b = draw_episodes({k: list(reversed(v)) for k, v in reversed(POOL.items())}, episodes=10, way=3, shots=[2], queries=1, seed=1)
    assert a == b  # the draw depends on the pool's content, not on its order
    assert draw_episodes(POOL, episodes=4, way=3, shots=[2], queries=1, seed=1) == a[:4]  # fewer episodes: a prefix
    c = draw_episodes(POOL, episodes=10, way=3, shots=[2], queries=1, seed=2)
    assert [e.support for e in a] != [e.support for e in c]
    # the prompt order is not grouped by class in every episode
    assert any([c.label for c in e.support] != sorted(c.label for c in e.support) for e in a)


def test_pool_too_small_is_refused():
    with pytest.raises(BenchError, match="need 9"):
        draw_episodes(POOL, episodes=1, way=9, shots=[1], queries=1, seed=0)
    with pytest.raises(BenchError, match="fewer than 7 clips"):
        draw_episodes(POOL, episodes=1, way=2, shots=[5], queries=2, seed=0)


def test_episodes_file_round_trip(tmp_path):
    episodes = draw_episodes(POOL, episodes=5, way=4, shots=[2], queries=1, seed=3)
    write_episodes(tmp_path / "episodes.jsonl", episodes)
    first = json.loads((tmp_path / "episodes.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"episode", "seed", "support", "queries"} and set(first["support"][0]) == {"path", "label"}
    assert read_episodes(tmp_path / "episodes.jsonl") == episodes


@pytest.mark.parametrize("text, message", [
    ('{"episode": 0, "seed": 1, "support": [], "queries": [{"path": "a", "label": "x"}]}', "at least one support"),
    ('{"episode": 0, "seed": 1, "support": [{"path": "a", "label": "x"}], "queries": [{"path": "b", "label": "y"}]}',
     "query class 'y' has no demonstration"),
    ('{"episode": "0", "seed": 1, "support": [], "queries": []}', "must be integers"),
    ("not json", "line 1: not JSON"),
])
def test_bad_episodes_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "e.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(BenchError, match=message):
        read_episodes(path)


def test_scp_import_reports_a_query_that_is_also_a_demonstration(tmp_path):
    # UniAudio 1.5's format: class/file.wav entries, a trailing comma, the last entry the query.
    scp = tmp_path / "list.scp"
    scp.write_text("us/a1.wav,uk/b1.wav,in/c1.wav,uk/b2.wav,\n"
                   "\n"
                   "uk/b1.wav,us/a1.wav,in/c1.wav,us/a1.wav,\n")
    episodes = read_scp(scp, tmp_path / "root", seed=5)
    assert len(episodes) == 2
    first, second = episodes
    assert [c.label for c in first.support] == ["us", "uk", "in"] and first.queries == (EpisodeClip(str(tmp_path / "root" / "uk" / "b2.wav"), "uk"),)
    assert first.labels == ("in", "uk", "us") and first.way == 3 and first.shot == 1 and not first.leaked
    assert second.leaked == (0,)  # kept, and reported: its query is one of its demonstrations
    assert first.seed != second.seed
    bad = tmp_path / "bad.scp"
    bad.write_text("us/a1.wav,uk/b1.wav,fr/z.wav,\n")
    with pytest.raises(BenchError, match="query class 'fr' has no demonstration"):
        read_scp(bad, tmp_path)


def test_ci95_against_a_hand_computation():
    accuracies = [1.0, 0.8, 0.6, 0.8]
    # mean 0.8; deviations 0.2, 0, -0.2, 0; population variance 0.08 / 4 = 0.02; std = sqrt(0.02)
    mean, std, ci = mean_ci95(accuracies)
    assert mean == pytest.approx(0.8) and std == pytest.approx(math.sqrt(0.02))
    assert ci == pytest.approx(1.96 * math.sqrt(0.02) / 2)  # sqrt(4 episodes) = 2
    assert mean_ci95([0.5])[2] == 0.0 and math.isnan(mean_ci95([])[0])


def test_prototype_and_nearest_on_a_problem_with_known_answers():
    # Class "a": two supports around (1, 0.2) and (1, -0.2); class "b": one at (0.2, 1) and one far out at (1, 0.1).
    support = np.array([[1.0, 0.2], [1.0, -0.2], [0.2, 1.0], [1.0, 0.1]])
    labels = ["a", "a", "b", "b"]
    query = np.array([[1.0, 0.12]])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    # 1-NN: the single most similar support is b's outlier (1, 0.1).
    assert baselines.nearest(unit(support), labels, unit(query), ["a", "b"])[0][0][0] == "b"
    # Nearest class mean (centred by the supports' mean, L2-normalised): "a".
    ranked = baselines.prototype(support, labels, query, ["a", "b"])
    assert [label for label, _ in ranked[0]] == ["a", "b"]
    # By hand: centre = mean of the supports; class means of the CL2N supports; Euclidean distances.
    centre = support.mean(axis=0)
    s = unit(support - centre)
    q = unit(query - centre)[0]
    distances = {c: np.linalg.norm(q - s[[i for i, l in enumerate(labels) if l == c]].mean(axis=0)) for c in "ab"}
    assert dict(ranked[0]) == pytest.approx({c: -d for c, d in distances.items()})
    # The centre matters (it is CL2N, not plain L2N): centred far away along (-1, 0), every direction
    # looks alike and the query's nearest class mean changes.
    far = baselines.prototype(support, labels, query, ["a", "b"], centre=np.array([-100.0, 0.0]))
    s_far, q_far = unit(support + [100.0, 0.0]), unit(query + [100.0, 0.0])[0]
    expected = min("ab", key=lambda c: np.linalg.norm(q_far - s_far[[i for i, l in enumerate(labels) if l == c]].mean(axis=0)))
    assert far[0][0][0] == expected


def test_episode_config_checks():
    from icl_audio.bench.config import DEFAULT_EPISODE_METHODS
    from icl_audio.cli import bench as cli_bench

    assert cli_bench.EPISODE_METHODS.split(",") == list(DEFAULT_EPISODE_METHODS)  # the CLI's copy (no numpy import)
    base = dict(dataset="esc50", root=".", model="debug", codec="debug")
    cfg = validate(BenchConfig(**base, episodes=3))
    assert (cfg.way, cfg.shots, cfg.queries) == (5, (1,), 1)
    assert cfg.methods == ("icl", "prototype", "nearest", "random-label") and cfg.ks is None
    meta = validate(BenchConfig(**base, protocol="metaaudio"))
    assert meta.episodes == 10_000 and meta.shots == (1, 5) and meta.way == 5
    for bad, message in [
        (dict(episodes=3, ks="1"), "--k is not used with episodes"),
        (dict(episodes=3, methods="icl,knn"), "knn belong to the fold protocol"),
        (dict(episodes=3, way=1), "--way must be an integer >= 2"),
        (dict(episodes=3, shots="0"), "--shot must be >= 1"),
        (dict(shots="1"), "--shot belongs to episodes"),
        (dict(protocol="metaaudio", way=3), "5-way with one query"),
        (dict(kfold=3), "--kfold is for your own data"),
    ]:
        with pytest.raises(BenchError, match=message):
            validate(BenchConfig(**base, **bad))
    with pytest.raises(BenchError, match="MetaAudio's ESC-50 protocol"):
        validate(BenchConfig(**{**base, "dataset": "us8k"}, protocol="metaaudio"))


def test_episode_prompt_is_the_single_query_prompt_with_a_shared_prefix(debug_lm):
    """Uncropped, each query's (shared + own part) is exactly what build() makes for it; cropped, every
    query sees the same demonstrations and each demonstration keeps the same tokens."""
    from icl_audio.prompt import Demo, PromptBuilder

    rng = np.random.default_rng(0)
    demos = [Demo(rng.integers(0, 256, 8), label) for label in ("dog", "cat", "dog", "cow")]  # prompt order
    queries = [rng.integers(0, 256, n) for n in (6, 9)]
    builder = PromptBuilder(debug_lm, "llasa")
    for mode in ("direct", "channel"):
        ep = builder.build_episode(demos, queries, ["cat", "cow", "dog"], mode=mode)
        assert ep.demo_tokens == (8, 8, 8, 8) and not ep.cropped and ep.demos_used == 4
        for j, q in enumerate(queries):
            single = builder.build(list(reversed(demos)), q, ["cat", "cow", "dog"], mode=mode)  # build() reverses
            assert ep.prompt(j) == single
    # A context 12 tokens short of the uncropped episode: every demonstration cropped to one common length,
    # all kept (K shown, none dropped), every query within the budget, none shorter than twice a demonstration.
    full = max(len(ep.shared) + len(q.prefix) + max(len(t.ids) for t in q.targets) for q in ep.queries)
    ep = builder.build_episode(demos, queries, ["cat", "cow", "dog"], mode="channel", max_context=full - 12)
    assert ep.cropped and ep.demos_used == 4 and len(set(ep.demo_tokens)) == 1 and ep.demo_tokens[0] < 8
    assert all(len(ep.shared) + len(q.prefix) + max(len(t.ids) for t in q.targets) <= full - 12 for q in ep.queries)
    assert all(min(len(x), 2 * ep.demo_tokens[0]) <= q.query_tokens <= len(x) for q, x in zip(ep.queries, queries))


def test_episode_speed_bench_tiny():
    from icl_audio.bench.speed_episode import run_episode_speed_bench

    tiny = dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128, head_dim=16,
                dtype="float32")
    r = run_episode_speed_bench(way=2, shot=2, queries=1, reps=1, model_kwargs=tiny, exact_kwargs=tiny)
    assert (r["way"], r["shot"], r["queries"]) == (2, 2, 2) and r["engine_path"] in ("cached", "pruned", "fused")
    assert r["shared_prefix_tokens"] > 4 * 250 and not r["cropped"] and r["demo_tokens_kept"] == 250
    assert r["max_abs_diff"] <= 1e-4 and r["speedup"] > 0 and len(r["speedup_each"]) == 1
    # four demonstrations fed once instead of twice
    assert r["fed_tokens_shared"] < r["fed_tokens_per_query_prompts"] and r["fed_tokens_ratio"] > 1.5
