"""Episodes and the user's own data through `icl-audio bench` on the debug models: outputs, codec calls,
resume after an interrupt, replay of an episodes file and of a UniAudio .scp list, MetaAudio, k-fold."""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import write_wav, interrupted_bench
from test_bench_clap import tiny_clap  # noqa: F401  (a pytest fixture: a tiny random CLAP checkpoint)
from fixtures_datasets import make_esc50_tree
from icl_audio.bench.arch import run_bench
from icl_audio.bench.config import BenchConfig
from conftest import run_main as main

DEBUG = ["--model", "debug", "--codec", "debug", "--quiet"]
CLASSES = ("dog", "cat", "cow", "owl")
# 3 episodes of 3-way 1-shot, 1 query per class, direct mode only (the debug model's fp32 head over the
# real vocabulary makes channel mode the slow one): 4 runs x 9 query lines.
EPISODE_ARGS = ["--episodes", "3", "--way", "3", "--shot", "1", "--mode", "direct", *DEBUG]
LINES = 4 * 3 * 3


def _folder(root: Path, per_class: int = 4) -> Path:
    """Labelled sub-folders of short clips; content unique to this call (a fresh code cache entry per clip)."""
    rng = np.random.default_rng(uuid.uuid4().int & 0xFFFFFFFF)
    t = np.arange(4800) / 16_000
    for c, label in enumerate(CLASSES):
        for i in range(per_class):
            clip = 0.3 * np.sin(2 * np.pi * (300 + 400 * c) * t) + 0.05 * rng.standard_normal(t.size)
            write_wav(root / label / f"{label}_{i}.wav", clip.astype(np.float32))
    return root


def _predictions(out: Path) -> dict[str, list[dict]]:
    return {p.name: [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in p.read_text().splitlines()]
            for p in sorted((out / "predictions").glob("*.jsonl"))}


@pytest.fixture(scope="module", autouse=True)
def loaded_debug_models(debug_lm, debug_codec):
    """Every bench here gets the session's debug models instead of loading its own (loading is tested where it
    lives; here it would cost ~10 s a run)."""
    import icl_audio.codec
    import icl_audio.llm

    load_lm, load_codec = icl_audio.llm.load_lm, icl_audio.codec.load_codec
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(icl_audio.llm, "load_lm", lambda name, **kw: debug_lm if name == "debug" else load_lm(name, **kw))
        mp.setattr(icl_audio.codec, "load_codec", lambda name, **kw: debug_codec if name == "debug" else load_codec(name, **kw))
        yield


@pytest.fixture
def count_codec_clips(monkeypatch):
    """The number of clips each codec call encodes, in order."""
    from icl_audio.codec import Codec

    calls: list[int] = []
    original = Codec.encode

    def counting(self, clips, *args, **kwargs):
        calls.append(len(clips))
        return original(self, clips, *args, **kwargs)

    monkeypatch.setattr(Codec, "encode", counting)
    return calls


@pytest.fixture(scope="module")
def folder_reference(tmp_path_factory, loaded_debug_models):
    """One complete episode bench over a folder through the CLI, codec calls counted."""
    from icl_audio.codec import Codec

    base = tmp_path_factory.mktemp("episodes")
    data, out = _folder(base / "data"), base / "out"
    calls: list[int] = []
    original = Codec.encode
    Codec.encode = lambda self, clips, *a, **k: (calls.append(len(clips)), original(self, clips, *a, **k))[1]
    try:
        assert main(["bench", "folder", "--root", str(data), *EPISODE_ARGS, "--out", str(out)]) == 0
    finally:
        Codec.encode = original
    return data, out, calls


def test_folder_episodes_end_to_end(folder_reference, capsys):
    data, out, calls = folder_reference
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [e["episode"] for e in episodes] == [0, 1, 2]
    for e in episodes:
        assert len(e["support"]) == 3 and len(e["queries"]) == 3 and isinstance(e["seed"], int)
        assert not {c["path"] for c in e["support"]} & {q["path"] for q in e["queries"]}
        assert all(Path(c["path"]).parent.name == c["label"] for c in e["support"] + e["queries"])
    # Each distinct clip through the codec exactly once, whatever the number of episodes.
    distinct = {c["path"] for e in episodes for c in e["support"] + e["queries"]}
    assert sum(calls) == len(distinct) and len(distinct) < sum(len(e["support"]) + len(e["queries"]) for e in episodes)

    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "episodes" and results["config"]["shot"] == [1]
    runs = {(r["method"], r["mode"]): r for r in results["runs"]}
    assert set(runs) == {("icl", "direct"), ("prototype", None), ("nearest", None), ("random-label", None)}
    for r in runs.values():
        assert r["episodes"] == 3 and r["n_queries"] == 9 and r["way"] == 3 and r["shot"] == 1
        assert 0 <= r["accuracy_mean"] <= 1 and r["accuracy_ci95"] >= 0 and r["seconds_per_query"] >= 0
    preds = _predictions(out)
    assert sorted(preds) == sorted(f"episodes.3way1shot.{m}.jsonl" for m in ("icl.direct", "prototype", "nearest", "random-label"))
    icl = preds["episodes.3way1shot.icl.direct.jsonl"]
    assert [(x["episode"], x["i"]) for x in icl] == [(e, i) for e in range(3) for i in range(3)]
    # per-episode accuracies from the lines give the reported mean and interval
    acc = [np.mean([x["ranked"][0][0] == x["truth"][0] for x in icl if x["episode"] == e]) for e in range(3)]
    assert runs[("icl", "direct")]["accuracy_mean"] == pytest.approx(np.mean(acc))
    assert runs[("icl", "direct")]["accuracy_ci95"] == pytest.approx(1.96 * np.std(acc) / np.sqrt(3))
    for line in icl:
        assert len(line["ranked"]) == 3 and line["demo_tokens"] == [15, 15, 15] and not line["cropped"]
    # 1-NN's top label is its most similar support clip's: check one query by hand from the codes' embeddings.
    md = (out / "results.md").read_text()
    assert "3-way 1-shot" in md and "±" in md and "accuracy_ci95 = 1.96 x std / sqrt(episodes)" in md
    assert (out / "accuracy_vs_shot.png").read_bytes()[:4] == b"\x89PNG"

    # A finished bench is re-read, not redone: no model, no codec, the same results; the table prints s/query.
    capsys.readouterr()
    assert main(["bench", "folder", "--root", str(data), *EPISODE_ARGS, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "0 predictions computed" in captured.err and "s/query" in captured.out and "3-way 1-shot" in captured.out
    assert _predictions(out) == preds


def test_resume_after_an_interrupt(folder_reference, tmp_path):
    data, reference, _ = folder_reference
    out = tmp_path / "resume"
    cfg = BenchConfig("folder", data, source="folder", episodes=3, way=3, shots="1", modes="direct", model="debug",
                      codec="debug", out=out)

    partial = interrupted_bench(cfg, after=10)
    with open(partial[0], "a") as f:  # a kill mid-write leaves a torn line: ignored, and cut before appending
        f.write('{"fp": "x", "episode": 0, "query": "/torn')
    computed: list = []
    outcome = run_bench(cfg, on_prediction=lambda run, query: computed.append(query))
    assert len(computed) == LINES - 10 and outcome.reused == 10 and outcome.computed == LINES - 10
    assert _predictions(out) == _predictions(reference)


def test_episodes_file_replay_and_scp_import(folder_reference, tmp_path, count_codec_clips):
    data, reference, _ = folder_reference
    replay = tmp_path / "replay"
    assert main(["bench", "folder", "--root", str(data), "--episodes-file", str(reference / "episodes.jsonl"),
                 "--mode", "direct", *DEBUG, "--out", str(replay)]) == 0
    assert _predictions(replay) == _predictions(reference)  # same episodes, same predictions
    assert count_codec_clips == []  # every clip's codes come from the code cache

    # UniAudio's list: class/file.wav entries relative to --root, the last the query; episode 2's query is one
    # of its demonstrations (as 9 of the 200 episodes of the list UniAudio ships): run, marked and reported.
    scp = tmp_path / "list.scp"
    scp.write_text("dog/dog_0.wav,cat/cat_0.wav,owl/owl_0.wav,cat/cat_1.wav,\n"
                   "cat/cat_2.wav,dog/dog_1.wav,dog/dog_1.wav,\n")
    out = tmp_path / "scp"
    assert main(["bench", "folder", "--root", str(data), "--episodes-file", str(scp), "--methods", "nearest,random-label",
                 *DEBUG, "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert {(r["way"], r["shot"]) for r in results["runs"]} == {(3, 1), (2, 1)}
    assert sum(r["episodes_query_in_support"] for r in results["runs"] if r["method"] == "nearest") == 1
    assert any("1 of 2 episodes have a query that is also one of their demonstrations" in n for n in results["notes"])
    leaked = _predictions(out)["episodes.2way1shot.nearest.jsonl"][0]
    assert leaked["query_in_support"] is True and leaked["ranked"][0][0] == "dog"  # 1-NN finds the clip itself
    written = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert written[0]["queries"] == [{"path": str(data.resolve() / "cat" / "cat_1.wav"), "label": "cat"}]


def test_metaaudio_protocol(tmp_path, capsys):
    from icl_audio.bench import metaaudio

    # Its 10 test classes, one validation class, two training classes: two clips each.
    categories = [(c, i) for i, c in enumerate(metaaudio.TEST_CLASSES + ("coughing", "rain", "siren"))]
    root = make_esc50_tree(tmp_path / "esc50", folds=1, per_fold=2, categories=categories)
    out = tmp_path / "out"
    assert main(["bench", "esc50", "--root", str(root), "--protocol", "metaaudio", "--episodes", "2", "--shot", "1",
                 "--methods", "prototype,random-label", *DEBUG, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    for figure in ("74.66 ± 0.42", "76.17", "68.83", "64.48", "96.34", "97.43"):
        assert figure in stdout
    assert "log-mel spectrograms" in stdout and "trained backbones" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"] == "metaaudio" and results["config"]["prototype_centre"] == "base classes"
    readable = {c.replace("_", " ") for c in metaaudio.TEST_CLASSES}
    assert set(results["config"]["pool_classes"]) == readable  # never coughing (validation), rain or siren (training)
    for line in (out / "episodes.jsonl").read_text().splitlines():
        e = json.loads(line)
        assert len(e["support"]) == 5 and len(e["queries"]) == 5 and {c["label"] for c in e["support"]} <= readable
    assert results["published"]["rows"][0] == {"method": "FO-MAML", "1shot": {"accuracy": 74.66, "ci95": 0.42},
                                               "5shot": {"accuracy": 96.34, "ci95": None}}


def test_csv_kfold_end_to_end(tmp_path, capsys):
    data = _folder(tmp_path / "clips", per_class=3)
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for path in sorted(data.rglob("*.wav")):
            w.writerow([path.relative_to(tmp_path).as_posix(), path.parent.name])
    out = tmp_path / "out"
    assert main(["bench", "csv", "--csv", str(table), "--kfold", "3", "--folds", "1,2", "--k", "0,1", "--mode", "direct",
                 "--methods", "icl,knn,majority", *DEBUG, "--out", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["folds"] == [1, 2] and {r["fold"] for r in results["runs"]} == {1, 2}
    assert {r["method"] for r in results["runs"]} == {"icl", "knn", "majority", "linear-probe"}
    # stratified: every class has one clip in each of the 3 folds, so every fold holds 4 queries
    assert all(r["n_queries"] == len(CLASSES) for r in results["runs"])
    truths = [json.loads(x)["truth"][0] for x in (out / "predictions" / "fold1.knn.k1.jsonl").read_text().splitlines()]
    assert sorted(truths) == sorted(CLASSES)
    assert any("stratified 3-fold cross-validation" in n for n in results["notes"])


@pytest.mark.parametrize("args, message", [
    (["--episodes", "2", "--k", "1"], "--k is not used with episodes"),
    (["--episodes", "2", "--methods", "icl,linear-probe"], "linear-probe belong to the fold protocol"),
    (["--episodes", "2", "--way", "9"], "need 9 classes"),
    (["--episodes", "2", "--shot", "4"], "need 5 classes of at least 5 clips"),
    (["--episodes", "2", "--kfold", "3"], "not both"),
])
def test_bad_episode_requests_are_one_line(folder_reference, args, message, tmp_path, capsys):
    data, _, _ = folder_reference
    assert main(["bench", "folder", "--root", str(data), *args, *DEBUG, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err



def test_clap_zero_shot_ranks_among_the_episode_labels(folder_reference, tiny_clap, tmp_path):  # noqa: F811
    from icl_audio.bench.clap import ClapZeroShot

    data, reference, _ = folder_reference
    out = tmp_path / "clap"
    assert main(["bench", "folder", "--root", str(data), "--episodes-file", str(reference / "episodes.jsonl"),
                 "--methods", "clap-zero-shot", "--clap-model", str(tiny_clap), *DEBUG, "--out", str(out)]) == 0
    episodes = {e["episode"]: e for e in map(json.loads, (out / "episodes.jsonl").read_text().splitlines())}
    clap = ClapZeroShot(str(tiny_clap), device="cpu")
    for line in _predictions(out)["episodes.3way1shot.clap-zero-shot.jsonl"]:
        labels = sorted({c["label"] for c in episodes[line["episode"]]["support"]})
        (expected,) = clap.rank_files([line["query"]], labels, max_seconds=30.0)
        # CLAP's own softmax over the episode's labels (a random tiny CLAP scores them nearly alike: compare scores)
        assert sorted(label for label, _ in line["ranked"]) == labels
        assert dict(line["ranked"]) == pytest.approx(dict(expected), abs=1e-5)
        assert [s for _, s in line["ranked"]] == sorted((s for _, s in line["ranked"]), reverse=True)


def test_suite_entries_for_episodes_and_own_data(folder_reference, tmp_path, capsys):
    from icl_audio.bench.suite import load_suite

    data, _, _ = folder_reference
    config = tmp_path / "suite.toml"
    config.write_text(
        'k = [0, 1]\nlimit = 3\nmethods = ["icl", "knn"]\nmode = "direct"\nmodel = "debug"\ncodec = "debug"\nout = "results"\n[datasets]\n'
        f'mine = {{ folder = "{data}", episodes = 2, way = 3, shot = [1, 2], methods = ["nearest", "random-label"] }}\n'
        'meta = { dataset = "esc50", root = "/data/esc50", protocol = "metaaudio", episodes = 50 }\n')
    spec = load_suite(config)
    mine, meta = spec.configs
    assert (mine.source, mine.root, mine.episodes, mine.ks, mine.limit) == ("folder", data, 2, None, None)
    assert (meta.dataset, meta.protocol, meta.episodes, meta.out) == ("esc50", "metaaudio", 50, tmp_path / "results" / "meta")
    assert meta.methods is None and mine.methods == "nearest,random-label"  # the shared fold methods do not apply
    config.write_text(config.read_text().splitlines()[0] + "\n" + "\n".join(config.read_text().splitlines()[1:-1]) + "\n")
    assert main(["bench", "suite", str(config), "--quiet"]) == 0
    stdout = capsys.readouterr().out
    assert "N-way K-shot episodes" in stdout and "3-way 2-shot" in stdout and "X-Codec" not in stdout
    suite = json.loads((tmp_path / "results" / "suite.json").read_text())
    assert suite["rows"] == [] and [r["name"] for r in suite["episode_rows"]] == ["mine"]
    assert {(r["method"], r["shot"]) for r in suite["episode_rows"][0]["runs"]} == \
        {(m, k) for m in ("nearest", "random-label") for k in (1, 2)}


def test_fewer_episodes_reuse_the_lines_of_more(folder_reference, tmp_path, capsys):
    """--episodes 1 after --episodes 2 (K = 1, 2: the K = 2 episodes renumbered) computes nothing, and the
    lines of the episode it leaves out stay on disk for a later --episodes 2."""
    data, _, _ = folder_reference
    args = ["bench", "folder", "--root", str(data), "--way", "2", "--shot", "1,2", "--methods", "nearest,random-label",
            *DEBUG, "--out", str(tmp_path / "out")]
    assert main([*args, "--episodes", "2"]) == 0
    assert "16 predictions computed" in capsys.readouterr().err  # 2 methods x 2 K x 2 episodes x 2 queries
    both = _predictions(tmp_path / "out")
    assert main([*args, "--episodes", "1"]) == 0
    assert "0 predictions computed" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "results.json").read_text())["runs"][0]["episodes"] == 1
    assert main([*args, "--episodes", "2"]) == 0
    assert "0 predictions computed" in capsys.readouterr().err and _predictions(tmp_path / "out") == both
