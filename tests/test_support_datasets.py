"""Every ARCH dataset, from a tree in its official layout to a named support set that classify uses
(the CLI in this process, with the session's debug models; the recipes alone are tested in test_recipes)."""

from __future__ import annotations

import json

import pytest

from conftest import tone, write_wav
from fixtures_datasets import BUILDERS
from icl_audio.recipes import ARCH_DATASETS, get_recipe


# The five recipes beyond ARCH are built into support sets in-process in test_recipes_more.py.
@pytest.mark.parametrize("dataset", sorted(ARCH_DATASETS))
def test_dataset_tree_builds_into_a_named_set(cli, dataset, tmp_path):
    root = BUILDERS[dataset](tmp_path / "data")
    items = get_recipe(dataset).prepare(root)
    name = f"arch-{dataset}"
    out = cli("support", "build", name, "--dataset", dataset, "--root", str(root), "--model", "debug", "--codec", "debug", "--quiet")
    assert out.returncode == 0, out.stderr
    info = json.loads(cli("support", "info", name, "--json").stdout)
    assert info["clips"] == len(items)
    assert info["labels"] == len({label for it in items for label in it.labels})
    assert info["dataset"] == get_recipe(dataset).name
    assert sum(info["label_counts"].values()) >= info["clips"]
    if dataset in ("esc50", "fsd50k"):  # one single-label and one multi-label set through classify
        query = write_wav(tmp_path / "q.wav", tone(330, 0.4))
        result = cli("classify", str(query), "--support", name, "--k", "2", "--json", "--quiet")
        assert result.returncode == 0, result.stderr
        predicted = json.loads(result.stdout)["predictions"]
        assert len(predicted) == info["labels"]
