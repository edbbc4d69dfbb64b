"""`icl-audio bench DATASET` end to end on fixture trees: outputs, baselines, resume, torchrun, suite, errors.

The CLI runs in this process with the session's debug models, except the torchrun test (two processes
are its subject)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, interrupted_bench, isolated_cli_state, sharing_debug_models
from fixtures_datasets import make_esc50_tree, make_fsd50k_tree
from icl_audio.bench.arch import run_bench
from icl_audio.bench.config import BenchConfig
from icl_audio.cli import main
DEBUG = ["--model", "debug", "--codec", "debug", "--quiet"]
METHODS = {"icl", "knn", "linear-probe", "majority", "random-label", "icl-random-demos"}
# Two folds x three classes x two clips: 6 queries and 6 support clips per fold.
ESC_ARGS = ["--k", "0,1,2", "--mode", "direct,channel", *DEBUG]
ESC_RUNS_PER_FOLD = 3 * 2 + 2 * 2 + 2 + 1 + 1 + 1  # icl k x mode, random demos (k>0) x mode, knn (k>0), probe, majority, random


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("datasets")
    return {
        "esc50": make_esc50_tree(root / "esc50", folds=2, per_fold=2),
        "fsd50k": make_fsd50k_tree(root / "fsd50k"),
    }


@pytest.fixture(scope="module")
def esc50_reference(trees, tmp_path_factory, debug_lm, debug_codec) -> Path:
    """One complete single-process ESC-50 bench through the CLI; later tests compare against it."""
    out = tmp_path_factory.mktemp("esc50-ref")
    with sharing_debug_models(lambda: debug_lm, lambda: debug_codec), isolated_cli_state():
        assert main(["bench", "esc50", "--root", str(trees["esc50"]), *ESC_ARGS, "--out", str(out)]) == 0
    return out


def _metrics(out: Path) -> list[dict]:
    # Everything of a run but its timing, which legitimately differs between invocations.
    runs = json.loads((out / "results.json").read_text())["runs"]
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in runs), key=lambda r: json.dumps(r, sort_keys=True))


def _predictions(out: Path) -> dict[str, list[dict]]:
    return {
        p.name: [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in p.read_text().splitlines()]
        for p in sorted((out / "predictions").glob("*.jsonl"))
    }


def _close(a, b) -> bool:
    """Equal structures, floats within 1e-4 relative: processes with other thread counts sum in another
    order, and stored scores are rounded to 6 significant digits."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def test_single_label_bench_writes_every_output(esc50_reference, trees):
    out = esc50_reference
    results = json.loads((out / "results.json").read_text())
    for name in ("results.md", "accuracy_vs_k.png", "confusion.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "accuracy_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((out / "predictions").glob("rank*")), "rank files are merged away"
    runs = results["runs"]
    assert {r["method"] for r in runs} == METHODS
    assert len(runs) == 2 * ESC_RUNS_PER_FOLD and {r["fold"] for r in runs} == {1, 2}
    for r in runs:
        assert r["n_queries"] == 6 and 0 <= r["accuracy"] <= 1 and 0 <= r["macro_f1"] <= 1
        assert r["model_id"] == "debug" and r["codec_id"] == "debug" and r["model_revision"] and r["codec_revision"]
        assert r["icl_audio_version"] and r["seconds"] >= 0
        assert (r["mode"] is None) == (r["method"] not in ("icl", "icl-random-demos"))
        assert (r["k"] is None) == (r["method"] in ("majority", "random-label", "linear-probe"))
    assert not any(r["method"] == "knn" and r["k"] == 0 for r in runs)
    assert {(s["method"], s["k"]) for s in results["skipped"]} == {("knn", 0), ("icl-random-demos", 0)}
    summary = {(e["method"], e["k"], e["mode"]): e for e in results["summary"]}
    assert summary[("icl", 2, "channel")]["folds"] == [1, 2] and "accuracy_std" in summary[("icl", 2, "channel")]
    md = (out / "results.md").read_text()
    assert "knn" in md and "majority (any k)" in md and "random-label" in md and "skipped: knn at k=0" in md

    preds = _predictions(out)
    assert len(preds) == 2 * ESC_RUNS_PER_FOLD
    icl, knn = preds["fold1.icl.k2.direct.jsonl"], preds["fold1.knn.k2.jsonl"]
    assert [x["i"] for x in icl] == list(range(6))
    for a, b in zip(icl, knn):
        assert Path(a["query"]).is_file() and a["truth"] and len(a["ranked"]) == 3
        assert a["query"] == b["query"]
        # Same retrieval: icl's demonstrations are knn's neighbours (the debug prompts are never cropped).
        assert [d["path"] for d in a["demonstrations"]] == [d["path"] for d in b["demonstrations"]]
        assert len(b["demonstrations"]) == 2 and b["ranked"][0][1] >= b["ranked"][-1][1]
    # k=1 knn predicts its one neighbour's label; majority ranks every query the same way.
    for line in preds["fold1.knn.k1.jsonl"]:
        assert line["ranked"][0][0] == line["demonstrations"][0]["label"]
    assert len({json.dumps(x["ranked"]) for x in preds["fold2.majority.jsonl"]}) == 1
    assert all(x["demonstrations"] == [] for x in preds["fold1.icl.k0.direct.jsonl"])


def test_finished_bench_recomputes_nothing(esc50_reference, trees, cli):
    before = _metrics(esc50_reference)
    captured = cli("bench", "esc50", "--root", str(trees["esc50"]), *ESC_ARGS, "--out", str(esc50_reference), "--json")
    assert captured.returncode == 0, captured.stderr
    assert "0 predictions computed" in captured.stderr
    printed = json.loads(captured.stdout)
    assert printed["runs"] == json.loads((esc50_reference / "results.json").read_text())["runs"]
    assert _metrics(esc50_reference) == before


def test_multi_label_bench_reports_map(trees, tmp_path, cli):
    out = tmp_path / "fsd"
    run = cli("bench", "fsd50k", "--root", str(trees["fsd50k"]), "--k", "0,2", "--mode", "direct", *DEBUG, "--out", str(out))
    assert run.returncode == 0, run.stderr
    stdout = run.stdout
    assert "mAP (macro)" in stdout and "mAP (weighted)" in stdout
    results = json.loads((out / "results.json").read_text())
    assert results["multi_label"] and results["config"]["folds"] == ["test"]
    assert {r["method"] for r in results["runs"]} == METHODS
    for r in results["runs"]:
        assert r["fold"] == "test" and r["n_queries"] == 3
        assert 0 <= r["map_macro"] <= 1 and 0 <= r["map_weighted"] <= 1 and "accuracy" not in r
    assert (out / "map_vs_k.png").is_file() and (out / "results.md").is_file()
    assert not (out / "confusion.png").exists()
    line = json.loads((out / "predictions" / "test.knn.k2.jsonl").read_text().splitlines()[0])
    assert len(line["truth"]) > 1 and len(line["ranked"]) == 12  # every candidate label is scored


def test_resume_after_interruption_computes_only_what_is_missing(esc50_reference, trees, tmp_path, shared_debug_models):
    # Direct mode only (faster); its runs must equal the reference's runs of the same names.
    out = tmp_path / "resume"
    cfg = BenchConfig("esc50", trees["esc50"], ks=(0, 1, 2), modes=("direct",), model="debug", codec="debug", out=out)
    total = 2 * 6 * (3 + 2 + 2 + 1 + 1 + 1)

    def same_as_reference() -> None:
        mine, ref = _predictions(out), _predictions(esc50_reference)
        assert len(mine) == 20 and all(mine[name] == ref[name] for name in mine)
        ref_runs = [r for r in _metrics(esc50_reference) if r["mode"] in (None, "direct")]
        assert _metrics(out) == ref_runs

    partial = interrupted_bench(cfg, after=20)
    # A kill mid-write leaves a torn line: it is ignored and cut before appending.
    with open(partial[0], "a") as f:
        f.write('{"fp": "x", "query": "/torn')

    computed: list = []
    outcome = run_bench(cfg, on_prediction=lambda run, query: computed.append(query))
    assert len(computed) == total - 20 and outcome.computed == total - 20 and outcome.reused == 20
    same_as_reference()

    # Lose two lines of a finished file: exactly those two are computed again.
    final = out / "predictions" / "fold2.icl.k1.direct.jsonl"
    lines = final.read_text().splitlines()
    final.write_text("\n".join(lines[:1] + lines[3:]) + "\n")
    computed.clear()
    run_bench(cfg, on_prediction=lambda run, query: computed.append((run.name, query)))
    assert sorted(computed) == sorted(("fold2.icl.k1.direct", json.loads(x)["query"]) for x in lines[1:3])
    same_as_reference()


def test_two_processes_equal_one(esc50_reference, trees, tmp_path):
    # Drop the stored support sets so that rank 0 builds them while rank 1 waits at the barrier.
    from icl_audio import support as store

    for manifest in store.list_support_sets():
        if str(manifest.get("name", "")).startswith("bench-esc50-"):
            store.remove_support_set(manifest["name"])
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "icl_audio", "bench", "esc50", "--root", str(trees["esc50"]), *ESC_ARGS, "--out", str(out), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)  # only rank 0 prints
    assert printed["dataset"] == "esc50"
    assert _metrics(out) == _metrics(esc50_reference)
    assert _close(_predictions(out), _predictions(esc50_reference))
    assert not list((out / "predictions").glob("rank*"))


def test_suite_prints_one_table_beside_the_paper(trees, tmp_path, cli):
    config = tmp_path / "suite.toml"
    config.write_text(
        'k = [0, 1]\nmode = "direct"\nlimit = 2\nmodel = "debug"\ncodec = "debug"\nout = "results"\n'
        f'[datasets]\nesc50 = "{trees["esc50"]}"\nfsd50k = {{ root = "{trees["fsd50k"]}", methods = ["icl", "knn", "majority"] }}\n'
    )
    run = cli("bench", "suite", str(config), "--quiet")
    assert run.returncode == 0, run.stderr
    stdout = run.stdout
    assert "X-Codec linear probe" in stdout and "69.85" in stdout and "34.05" in stdout
    assert "different protocol" in stdout
    # The published rows (X-Codec paper, ARCH's page) beside our linear-probe and icl, per dataset.
    assert "hubert-base-ls960 (ARCH)" in stdout and "58.90" in stdout and "wavlm-large (ARCH)" in stdout
    assert "linear-probe (ours" in stdout and "linear probe" in stdout
    suite = json.loads((tmp_path / "results" / "suite.json").read_text())
    assert all(row["linear-probe"] is not None for row in suite["rows"])
    assert "| hubert-base-ls960 (ARCH) | 58.90 | 24.53 |" in (tmp_path / "results" / "suite.md").read_text()
    assert [row["dataset"] for row in suite["rows"]] == ["esc50", "fsd50k"]
    assert suite["rows"][1]["metric"] == "map_macro" and suite["rows"][1]["random-label"] is None
    esc = json.loads((tmp_path / "results" / "esc50" / "results.json").read_text())
    assert all(r["n_queries"] == 2 for r in esc["runs"]) and esc["config"]["limit"] == 2
    assert (tmp_path / "results" / "suite.md").is_file()


def test_example_suite_file_parses():
    from icl_audio.bench.suite import load_suite

    spec = load_suite(REPO / "examples" / "suite.toml")
    assert [c.dataset for c in spec.configs][:3] == ["esc50", "us8k", "fsd50k"]
    assert spec.configs[2].limit == 100 and spec.configs[0].limit == 200


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "nosuchset", "--root", "."], "unknown dataset or bench command 'nosuchset'"),
        (["bench", "esc50", "--root", "/no/such/dir"], "not a folder"),
        (["bench", "esc50", "--k", "1,two"], "--k must be comma-separated integers"),
        (["bench", "esc50", "--mode", "sideways"], "unknown --mode value 'sideways'"),
        (["bench", "esc50", "--methods", "icl,oracle"], "unknown --methods value 'oracle'"),
        (["bench", "esc50", "--folds", "7"], "has no fold 7"),
        (["bench", "esc50", "--folds", "3"], "no clips of fold3"),
        (["bench", "fsd50k", "--folds", "1"], "has no fold 1"),
        (["bench", "esc50", "--methods", "knn", "--k", "0"], "nothing to run"),
    ],
)
def test_bad_input_is_one_line_error(args, message, trees, tmp_path, cli):
    if "--root" not in args:
        args = [*args, "--root", str(trees[args[1]])]
    run = cli(*args, *DEBUG, "--out", str(tmp_path / "x"))
    assert run.returncode == 2
    err = run.stderr.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "text, message",
    [
        ("k = [0]\n", "needs a [datasets] table"),
        ('colour = "red"\n[datasets]\nesc50 = "/d"\n', "unknown setting 'colour'"),
        ('[datasets]\nesc50 = "/d"\nnosuch = "/d"\n', "unknown dataset 'nosuch'"),
        ('k = "1,x"\n[datasets]\nesc50 = "/d"\n', "--k must be comma-separated integers"),
        ("[datasets\n", "invalid TOML"),
    ],
)
def test_bad_suite_file_is_one_line_error(text, message, tmp_path, cli):
    config = tmp_path / "suite.toml"
    config.write_text(text)
    run = cli("bench", "suite", str(config))
    assert run.returncode == 2
    err = run.stderr.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1, err
