"""ARCH's clip lengths in a bench: support clips and queries keep their head up to the dataset's length, unpadded."""

from __future__ import annotations

import json

import pytest

from fixtures_datasets import make_esc50_tree, write_clip
from icl_audio.bench.arch import run_bench
from icl_audio.bench.config import BenchConfig
from icl_audio.recipes import ARCH_DATASETS, RECIPES

TOKENS_PER_SECOND = 50  # XCodec2 (and the debug codec): 50 codes per second of 16 kHz audio

# ARCH's configs/data_config.json (maximum clip length in seconds), written out independently.
ARCH_CLIP_SECONDS = {"esc50": 5, "us8k": 5, "fsd50k": 10, "vivae": 5, "fma-small": 30, "mtt": 30, "irmas": 5,
                     "medley-solos-db": 3, "ravdess": 5, "audiomnist": 5, "slurp": 10, "emovo": 5}


def test_every_recipe_has_archs_clip_length():
    # The five recipes beyond ARCH have lengths of their own (docs/datasets.md; test_recipes.py).
    assert {name: RECIPES[name].clip_seconds for name in ARCH_DATASETS} == ARCH_CLIP_SECONDS


@pytest.fixture
def tree(tmp_path):
    root = make_esc50_tree(tmp_path / "esc50", folds=2)
    audio = sorted((root / "audio").glob("1-*.wav"))  # fold 1: the support set of fold 2
    write_clip(audio[0], "dog", seed=1, seconds=7.0)  # longer than ESC-50's 5 s
    write_clip(audio[1], "chirping_birds", seed=2, seconds=2.0)  # shorter: not padded
    write_clip(sorted((root / "audio").glob("2-*.wav"))[0], "dog", seed=3, seconds=6.0)  # a long query
    return root, audio[0], audio[1]


def _support(results, unit):
    from icl_audio import support as store

    name = next(r["support_set"] for r in results["runs"] if r["fold"] == unit)
    return store.load_support_set(name)


def test_support_and_queries_are_read_up_to_the_clip_length(tree, tmp_path, monkeypatch, shared_debug_models):
    import icl_audio.encoding as encoding

    root, long_clip, short_clip = tree
    seen = []
    original = encoding.stream_codes

    def spy(inputs, codec, **kwargs):
        seen.append(kwargs.get("max_seconds"))
        return original(inputs, codec, **kwargs)

    monkeypatch.setattr(encoding, "stream_codes", spy)
    cfg = BenchConfig("esc50", root, ks=(1,), modes=("direct",), methods=("knn",), folds=(2,), model="debug",
                      codec="debug", out=tmp_path / "out")
    results = run_bench(cfg).results
    support = _support(results, 2)
    codes = {src: c for src, c in zip(support.sources, support.codes)}
    assert len(codes[str(long_clip)]) == 5 * TOKENS_PER_SECOND  # the head, 5 s
    assert len(codes[str(short_clip)]) == 2 * TOKENS_PER_SECOND  # as long as it is: no silence added
    assert seen and set(seen) == {5.0}  # support build and queries alike
    assert results["config"]["clip_seconds"] == 5.0
    assert any("read up to 5 s" in note and "not padded" in note for note in results["notes"])

    # --clip-seconds overrides ARCH's length: another support set (its codes differ), other predictions.
    seen.clear()
    other = run_bench(BenchConfig("esc50", root, ks=(1,), modes=("direct",), methods=("knn",), folds=(2,), model="debug",
                                  codec="debug", out=tmp_path / "out", clip_seconds=1.5)).results
    support = _support(other, 2)
    assert len(dict(zip(support.sources, support.codes))[str(long_clip)]) == 75
    assert set(seen) == {1.5} and other["runs"][0]["support_set"] != results["runs"][0]["support_set"]
    assert other["config"]["clip_seconds"] == 1.5
    assert json.loads((tmp_path / "out" / "results.json").read_text())["config"]["clip_seconds"] == 1.5
