"""Benches on Hugging Face datasets: a recipe's hub copy in place of --root, and `bench hf` (fold column or hub splits)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import tone, write_wav
from fixtures_datasets import make_esc50_tree
from conftest import run_main as main

datasets = pytest.importorskip("datasets")

FAST = ["--k", "0,1", "--mode", "direct", "--methods", "icl,knn,majority", "--probe-epochs", "5",
        "--model", "debug", "--codec", "debug", "--quiet"]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets-cache"))
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def hub_copy_of_esc50(tree: Path, out: Path) -> Path:
    """ESC-50 as its hub copy (ashraq/esc50) lays it out: the metadata columns beside an audio column holding
    each file's bytes and name, rows in esc50.csv's order."""
    from datasets import Audio, Dataset, Features, Value

    with (tree / "meta" / "esc50.csv").open(newline="") as f:
        meta = list(csv.DictReader(f))
    feats = Features({"filename": Value("string"), "fold": Value("int64"), "target": Value("int64"),
                      "category": Value("string"), "esc10": Value("bool"), "src_file": Value("int64"),
                      "take": Value("string"), "audio": {"bytes": Value("binary"), "path": Value("string")}})
    data = {k: [r[k] for r in meta] for k in ("filename", "category", "take")}
    data |= {k: [int(r[k]) for r in meta] for k in ("fold", "target", "src_file")}
    data["esc10"] = [r["esc10"] == "True" for r in meta]
    data["audio"] = [{"bytes": (tree / "audio" / r["filename"]).read_bytes(), "path": r["filename"]} for r in meta]
    ds = Dataset.from_dict(data, features=feats).cast_column("audio", Audio(decode=False))
    ds.to_parquet(str(out / "data" / "train-00000-of-00001.parquet"))
    return out


def test_esc50_hub_copy_runs_the_published_protocol_like_the_folder(tmp_path, capsys):
    from icl_audio import hfdata
    from icl_audio.recipes import get_recipe

    tree = make_esc50_tree(tmp_path / "esc50", folds=2, per_fold=1)
    copy = hub_copy_of_esc50(tree, tmp_path / "ashraq-esc50")
    recipe = get_recipe("esc50")
    from_root = recipe.prepare(tree)
    from_hub = hfdata.recipe_items(recipe, hfdata.parse_hf_spec(str(copy)))
    # The same clips (bytes), labels and folds, so every fold gets the same support and queries: the
    # codes of a row equal its file's (test_hf_datasets), hence the same predictions.
    assert [(it.labels, it.original_labels, it.fold) for it in from_root] == [
        (it.labels, it.original_labels, it.fold) for it in from_hub]
    assert [it.path.read_bytes() for it in from_root] == [it.audio.open_audio() for it in from_hub]
    assert main(["bench", "ESC-50", "--hf", str(copy), *FAST, "--out", str(tmp_path / "from-hub"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["root"] == f"hf:{copy.resolve()}" and results["dataset"] == "esc50"
    assert {r["fold"] for r in results["runs"]} == {1, 2} and all(r["n_failed"] == 0 for r in results["runs"])
    lines = [json.loads(x) for x in (tmp_path / "from-hub" / "predictions" / "fold1.knn.k1.jsonl").read_text().splitlines()]
    assert [line["query"] for line in lines] == [f"hf:{copy.resolve()}@train#{i}" for i in range(3)]
    assert all(d["path"].startswith(f"hf:{copy.resolve()}@train#") for line in lines for d in line["demonstrations"])
    assert main(["bench", "esc50", "--root", str(tree), "--hf", str(copy), *FAST]) == 2
    assert "needs --root /path/to/esc50 or --hf ashraq/esc50 (one of them)" in capsys.readouterr().err


def _labelled(tmp_path: Path, *, splits: bool) -> Path:
    from datasets import Audio, ClassLabel, Dataset, DatasetDict, Features, Value

    feats = Features({"audio": {"bytes": Value("binary"), "path": Value("string")},
                      "label": ClassLabel(names=["low_hum", "high_beep"]), "fold": Value("int64")})
    rows = [(0, 1, 140), (0, 2, 160), (1, 1, 2500), (1, 2, 2900), (0, 3, 150), (1, 3, 2700)]
    audio = [{"bytes": write_wav(tmp_path / "wav" / f"{i}.wav", tone(f, 0.4, phase=i)).read_bytes(), "path": f"{i}.wav"}
             for i, (_, _, f) in enumerate(rows)]
    ds = Dataset.from_dict({"audio": audio, "label": [r[0] for r in rows], "fold": [r[1] for r in rows]},
                           features=feats).cast_column("audio", Audio(decode=False))
    folder = tmp_path / ("split" if splits else "folds")
    if splits:
        DatasetDict({"train": ds.select(range(4)), "test": ds.select([4, 5])}).save_to_disk(str(folder))
    else:
        ds.save_to_disk(str(folder))
    return folder


def test_bench_hf_fold_column_and_hub_splits(tmp_path, capsys):
    from icl_audio.bench.plan import select_units
    from icl_audio.bench.sources import hub_recipe

    folds = _labelled(tmp_path, splits=False)
    assert main(["bench", "hf", "--hf", str(folds), "--fold-column", "fold", *FAST, "--out", str(tmp_path / "a"), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["protocol"] == "folds" and {r["fold"] for r in results["runs"]} == {1, 2, 3}
    assert results["dataset"] == f"hf-{str(folds.resolve()).strip('/').replace('/', '-')[-40:]}"
    # Hub splits give the split protocol: train is the support, test the queries.
    split = _labelled(tmp_path, splits=True)
    recipe, items, source = hub_recipe(f"hf:{split}")
    assert (recipe.protocol, source) == ("splits", f"hf:{split.resolve()}")
    assert select_units(recipe, items, None, source) == ["test"]
    support, queries = recipe.split_items(items, "test")
    assert [it.key for it in queries] == [f"hf:{split.resolve()}@test#{i}" for i in range(2)] and len(support) == 4
    # Neither a fold column nor train and test splits: stratified k-fold, as for `bench folder`.
    recipe, items, _ = hub_recipe(f"hf:{folds}", kfold=3)
    assert recipe.protocol == "folds" and recipe.folds == (1, 2, 3) and sorted({it.fold for it in items}) == [1, 2, 3]
    recipe, _, _ = hub_recipe(f"hf:{folds}")
    assert recipe.folds == (1, 2, 3, 4, 5) and "stratified 5-fold" in recipe.description
    # A fold column that is not there: one line, before any model loads.
    capsys.readouterr()
    assert main(["bench", "hf", "--hf", str(split), "--fold-column", "no_such_column", *FAST]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_suite_file_takes_hub_copies_and_audio_roots(tmp_path):
    from icl_audio.bench.suite import load_suite

    suite = tmp_path / "suite.toml"
    suite.write_text('k = [0, 1]\n[datasets]\nesc50 = { hf = "ashraq/esc50" }\nemovo = { hf = "vtsouval/emovo", config = "fold2" }\n'
                     'arca23k-fsd = { root = "arca", audio_root = "fsd50k" }\ngtzan = "/data/gtzan"\n', encoding="utf-8")
    configs = {c.dataset: c for c in load_suite(suite).configs}
    assert (configs["esc50"].hf, configs["esc50"].root) == ("ashraq/esc50", None)
    assert configs["emovo"].hf_config == "fold2"
    assert (configs["arca23k-fsd"].root, configs["arca23k-fsd"].audio_root) == (tmp_path / "arca", tmp_path / "fsd50k")
    assert configs["gtzan"].root == Path("/data/gtzan")


def test_bench_hf_runs_episodes_over_its_classes(tmp_path, capsys):
    folds = _labelled(tmp_path, splits=False)
    out = tmp_path / "episodes"
    assert main(["bench", "hf", "--hf", str(folds), "--episodes", "2", "--way", "2", "--shot", "1", "--mode", "direct",
                 "--methods", "icl,nearest", "--model", "debug", "--codec", "debug", "--quiet", "--out", str(out),
                 "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    lines = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(len(e["support"]) == 2 and len(e["queries"]) == 2 for e in lines)
    # Dataset rows are named by their stable references in the episode file.
    assert all(c["path"].startswith(f"hf:{folds.resolve()}@") for e in lines for c in e["support"] + e["queries"])
    assert {r["method"] for r in results["runs"]} == {"icl", "nearest"}
