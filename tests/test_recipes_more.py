"""The five recipes beyond ARCH (CREMA-D, GTZAN, TIMIT, ARCA23K-FSD, FluSense) and every recipe's hub-copy mapping."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
import soundfile as sf

from fixtures_datasets import (
    ARCA_ROWS, FLUSENSE_RECORDINGS, TIMIT_SPEAKERS, crema_d_actors, gtzan_excerpts, make_arca23k_fsd_tree,
    make_crema_d_tree, make_flusense_tree, make_gtzan_tree, make_timit_tree,
)
from icl_audio.audio import load_audio
from conftest import run_main as main
from icl_audio.download import DownloadError, download_dataset
from icl_audio.errors import SupportSetError
from icl_audio.recipes import HubRow, Segment, get_recipe


def test_crema_d_emotions_and_speaker_independent_folds(tmp_path):
    from icl_audio.recipes.crema_d import ACTOR_FOLD

    items = get_recipe("crema-d").prepare(make_crema_d_tree(tmp_path))
    assert len(items) == 15 and {it.labels[0] for it in items} == {"angry", "happy", "sad"}
    assert {it.fold for it in items} == {1, 2, 3, 4, 5}
    for it in items:  # the fold is the actor's, so no actor is in two folds
        assert it.fold == ACTOR_FOLD[int(it.speaker)] and it.path.name.startswith(it.speaker)
    assert sorted(Counter(ACTOR_FOLD.values()).values()) == [18, 18, 18, 18, 19]  # all 91 actors, near-equal folds
    lfs = make_crema_d_tree(tmp_path / "lfs", lfs_pointers=True)
    with pytest.raises(SupportSetError, match=r"AudioWAV/ holds Git LFS pointers, not audio \(run `git lfs pull`"):
        get_recipe("crema-d").prepare(lfs)


@pytest.mark.parametrize("layout", ["au", "wav"])
def test_gtzan_every_excerpt_is_an_item_the_filtered_split_assigns_it(tmp_path, layout):
    from icl_audio.recipes.gtzan import FILTERED_SPLIT

    items = get_recipe("gtzan").prepare(make_gtzan_tree(tmp_path, layout=layout))
    assert all(it.path.suffix == f".{layout}" for it in items)
    by_name = {it.path.stem: it for it in items}
    for genre in ("blues", "disco", "hiphop"):
        for split, number in gtzan_excerpts(genre).items():
            it = by_name[f"{genre}.{number:05d}"]
            assert it.split == (None if split == "none" else split)
            assert it.labels == ("hip hop" if genre == "hiphop" else genre,) and it.original_labels == (genre,)
    assert any(it.split is None for it in items)  # left out by the split, still an item
    assert Counter(FILTERED_SPLIT.values()) == {"train": 443, "val": 197, "test": 290}
    support, queries = get_recipe("gtzan").split_items(items, "test")
    assert all(it.split == "train" for it in support) and all(it.split == "test" for it in queries)


def test_gtzan_prefers_wav_over_au_of_one_excerpt(tmp_path):
    make_gtzan_tree(tmp_path, layout="au", genres=("blues",))
    for au in (tmp_path / "genres" / "blues").glob("*.au"):
        sf.write(str(au.with_suffix(".wav")), np.zeros(3200, np.float32), 16000)
    items = get_recipe("gtzan").prepare(tmp_path)
    assert len(items) == 3 and all(it.path.suffix == ".wav" for it in items)


@pytest.mark.parametrize("lower", [False, True])
def test_timit_sphere_files_regions_and_official_split(tmp_path, lower):
    root = make_timit_tree(tmp_path, lower=lower, riff_copies=True)
    items = get_recipe("timit").prepare(root)
    assert len(items) == 12  # the X.WAV.wav copies count once
    with open(items[0].path, "rb") as f:
        assert f.read(7) == b"NIST_1A"  # a SPHERE header, read by libsndfile
    assert load_audio(items[0].audio).samples.shape == (4800,)
    assert Counter((it.split, it.labels[0]) for it in items) == {
        (s.lower(), {"DR1": "New England", "DR2": "Northern", "DR7": "Western"}[r]): 2 for s, r, _ in TIMIT_SPEAKERS}
    assert {it.speaker for it in items if it.split == "train"}.isdisjoint({it.speaker for it in items if it.split == "test"})


def test_arca23k_fsd_ground_truth_over_a_separate_fsd50k_folder(tmp_path, caplog):
    gt = make_arca23k_fsd_tree(tmp_path / "ARCA23K", audio_root=tmp_path / "FSD50K", missing=1)
    with pytest.raises(SupportSetError, match="no FSD50K.dev_audio/ beside the ground truth"):
        get_recipe("arca23k-fsd").prepare(gt)
    with caplog.at_level(logging.WARNING):
        items = get_recipe("arca23k-fsd").prepare(gt, audio_root=tmp_path / "FSD50K")
    assert "skipped 1 metadata row(s)" in caplog.text
    assert [(it.split, it.original_labels[0]) for it in items] == [(s, label) for s, _, label in ARCA_ROWS]
    assert items[0].labels == ("Acoustic guitar",)
    assert all(it.path.parent.name == ("FSD50K.eval_audio" if it.split == "test" else "FSD50K.dev_audio") for it in items)
    assert get_recipe("arca23k-fsd").prepare(gt / "ARCA23K-FSD.ground_truth", audio_root=tmp_path / "FSD50K")


def test_flusense_segments_are_windows_of_the_recordings(tmp_path, caplog):
    root = make_flusense_tree(tmp_path, missing_audio=1)
    with caplog.at_level(logging.WARNING):
        items = get_recipe("flusense").prepare(root)
    assert "skipped 1 metadata row(s)" in caplog.text  # the recording without audio
    assert {it.labels[0] for it in items} == {"cough", "sneeze", "speech", "throat clearing"}
    assert not any(it.original_labels[0].strip() in ("etc", "vomit", "") for it in items)
    first = items[0]
    assert isinstance(first.audio, Segment) and first.key == f"{first.path}#t=0.3,0.8"
    whole, rate = sf.read(str(first.path), dtype="float32")
    assert np.array_equal(load_audio(first.audio).samples, whole[int(0.3 * rate):int(0.8 * rate)])
    by_recording = {}
    for it in items:  # every segment of a recording is in the recording's fold
        assert by_recording.setdefault(it.path.stem, it.fold) == it.fold
    assert len(FLUSENSE_RECORDINGS) - 1 == len(by_recording)


@pytest.mark.parametrize("dataset", ["crema-d", "gtzan", "timit", "arca23k-fsd", "flusense"])
def test_five_more_recipes_build_support_sets_under_their_keys(dataset, tmp_path, debug_codec, debug_lm):
    from fixtures_datasets import BUILDERS
    from icl_audio.support import build_support_set

    items = get_recipe(dataset).prepare(BUILDERS[dataset](tmp_path / dataset))
    sset, report = build_support_set(items, debug_codec, debug_lm, max_seconds=get_recipe(dataset).clip_seconds)
    assert report.skipped == () and report.encoded + report.reused == len(items)
    assert sset.sources == tuple(it.key for it in items) and sset.labels == tuple(it.labels for it in items)


def test_five_more_recipes_are_listed_where_users_look(tmp_path, capsys):
    assert main(["bench", "--help"]) == 0
    text = capsys.readouterr().out
    for name in ("crema-d", "gtzan", "timit", "arca23k-fsd", "flusense", "hf"):
        assert name in text
    assert main(["support", "download", "--help"]) == 0
    assert "gtzan" in capsys.readouterr().out
    for name, where in (("timit", "LDC93S1"), ("crema-d", "git lfs clone"), ("arca23k-fsd", "zenodo.org/records/5117901"),
                        ("flusense", "Forsad/FluSense-data")):
        with pytest.raises(DownloadError, match=where) as exc:
            download_dataset(name, tmp_path)
        assert "\n" not in str(exc.value)
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- hub-copy mappings


@dataclass(frozen=True)
class Ref:
    key: str


def rows(values: list[dict], *, split: str = "train", paths: list[str | None] | None = None) -> list[HubRow]:
    paths = paths or [None] * len(values)
    return [HubRow(Ref(f"hf:x/y@{split}#{i}"), split, v, p) for i, (v, p) in enumerate(zip(values, paths))]


def mapped(name: str, hub_rows: list[HubRow]):
    return get_recipe(name).hub.map_rows(hub_rows)


def test_hub_mappings_labels_and_folds_from_columns():
    esc = mapped("esc50", rows([{"category": "chirping_birds", "fold": 3}, {"category": "dog", "fold": "1"}]))
    assert [(it.labels, it.original_labels, it.fold, it.key) for it in esc] == [
        (("chirping birds",), ("chirping_birds",), 3, "hf:x/y@train#0"), (("dog",), ("dog",), 1, "hf:x/y@train#1")]
    assert [it.labels for it in mapped("us8k", rows([{"class": "car_horn", "fold": 10}]))] == [("car horn",)]
    fsd = mapped("fsd50k", rows([{"label": "Bark, Dog,Animal"}, {"label": ""}], split="validation"))
    assert len(fsd) == 1 and fsd[0].labels == ("Bark", "Dog", "Animal") and fsd[0].split == "val"
    slurp = mapped("slurp", rows([{"intent": "alarm_set"}], split="devel"))
    assert (slurp[0].labels, slurp[0].split) == (("alarm set",), "val")
    medley = mapped("medley-solos-db", rows([{"instrument": "tenor saxophone"}], split="test"))
    assert (medley[0].labels, medley[0].split) == (("tenor saxophone",), "test")
    arca = mapped("arca23k-fsd", rows([{"label": "Coin_(dropping)"}], split="val"))
    assert (arca[0].labels, arca[0].split) == (("Coin (dropping)",), "val")
    timit = mapped("timit", rows([{"dialect_region": "DR6"}, {"dialect_region": "Southern"}], split="val"))
    assert [(it.labels[0], it.split) for it in timit] == [("New York City", "val"), ("Southern", "val")]


def test_hub_mappings_speakers_from_file_names_or_columns():
    from icl_audio.recipes.audiomnist import SPEAKER_FOLD
    from icl_audio.recipes.crema_d import ACTOR_FOLD
    from icl_audio.recipes.ravdess import actor_fold

    vivae = mapped("vivae", rows([{"label": "fear"}], paths=["/x/S07_fear_low_02.wav"]))
    assert (vivae[0].labels, vivae[0].fold, vivae[0].speaker) == (("fear",), 7, "S07")
    with pytest.raises(SupportSetError, match="no speaker .*leave-one-speaker-out folds cannot be assigned"):
        mapped("vivae", rows([{"label": "fear"}], paths=["clip.wav"]))
    emovo = mapped("emovo", rows([{"emotion": "pau"}, {"emotion": "pau"}], paths=["pau-m2-b1.wav", "pau-m2-b1.wav"]))
    assert len(emovo) == 1 and (emovo[0].labels, emovo[0].speaker, emovo[0].fold) == (("fear",), "m2", 5)
    digits = mapped("audiomnist", rows([{"digit": 7, "speaker_id": "28"}, {"digit": "3"}], paths=[None, "3_12_4.wav"]))
    assert [(it.labels[0], it.fold) for it in digits] == [("seven", SPEAKER_FOLD[28]), ("three", SPEAKER_FOLD[12])]
    actor = crema_d_actors()[2]
    crema = mapped("crema-d", rows([{"major_emotion": "anger"}, {"major_emotion": "Happy"}],
                                   paths=[f"{actor}_DFA_ANG_XX.wav", f"{actor}_IEO_HAP_HI.wav"]))
    assert [(it.labels[0], it.fold) for it in crema] == [("angry", ACTOR_FOLD[actor]), ("happy", ACTOR_FOLD[actor])]
    rav = mapped("ravdess", rows([{"labels": 4, "speaker_id": "13"}, {"labels": 0, "speaker_id": 2}]))
    assert [(it.labels[0], it.fold, it.split in ("train", "test")) for it in rav] == [
        ("angry", actor_fold(13), True), ("neutral", actor_fold(2), True)]


def test_hub_mappings_splits_that_follow_the_folder_recipe():
    from icl_audio.recipes.gtzan import FILTERED_SPLIT

    gtzan = mapped("gtzan", rows([{"genre": "hiphop"}, {"genre": "blues", "file": "C:\\gtzan\\blues\\blues.00012.wav"},
                                  {"genre": "disco"}], paths=["hiphop.00081.wav", None, "disco.00002.au"]))
    assert [(it.labels[0], it.split) for it in gtzan] == [
        ("hip hop", FILTERED_SPLIT["hiphop.00081"]), ("blues", "test"), ("disco", FILTERED_SPLIT.get("disco.00002"))]
    with pytest.raises(SupportSetError, match="fault-filtered split cannot be applied"):
        mapped("gtzan", rows([{"genre": "rock"}]))
    # FMA: the same seeded split over track ids as the folder recipe, whatever the hub's own split.
    ids = [2 + 997 * i for i in range(10)]
    hub = mapped("fma-small", rows([{"genre": "Rock"} for _ in ids], split="validation", paths=[f"{i:06d}.mp3" for i in ids]))
    from icl_audio.recipes.base import random_split
    from icl_audio.recipes.fma_small import SPLIT_FRACTIONS

    expected = random_split([str(i) for i in ids], SPLIT_FRACTIONS, seed=42)
    assert [it.split for it in hub] == [expected[str(i)] for i in ids]
    flu = mapped("flusense", rows([{"label": "cough"}, {"label": "etc"}, {"label": "throat-clearing"}, {"label": " wheeze"}]))
    assert [it.labels[0] for it in flu] == ["cough", "throat clearing"] and all(it.fold in range(1, 6) for it in flu)


def test_recipe_reads_its_hub_copy_through_datasets(tmp_path, monkeypatch):
    """RAVDESS's hub columns (labels, speaker_id) on a tiny save_to_disk copy, through hfdata.recipe_items."""
    datasets = pytest.importorskip("datasets")
    from datasets import Audio, Dataset, DatasetDict, Features, Value

    from conftest import tone, write_wav
    from icl_audio import hfdata

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    wav = write_wav(tmp_path / "a.wav", tone(300, 0.3)).read_bytes()
    feats = Features({"audio": {"bytes": Value("binary"), "path": Value("string")}, "labels": Value("int64"),
                      "speaker_id": Value("string")})
    ds = Dataset.from_dict({"audio": [{"bytes": wav, "path": f"03-01-0{e}-01-01-01-{a:02d}.wav"} for e, a in
                                      ((1, 1), (5, 7), (8, 24))],
                            "labels": [0, 4, 7], "speaker_id": ["1", "7", "24"]}, features=feats)
    DatasetDict({"train": ds.cast_column("audio", Audio(decode=False))}).save_to_disk(str(tmp_path / "ravdess"))
    items = hfdata.recipe_items(get_recipe("ravdess"), hfdata.parse_hf_spec(str(tmp_path / "ravdess")))
    assert [(it.labels[0], it.fold, it.speaker) for it in items] == [("neutral", 1, "01"), ("angry", 2, "07"),
                                                                    ("surprised", 4, "24")]
    assert items[1].key == f"hf:{(tmp_path / 'ravdess').resolve()}@train#1"
    # An optional column a mapping reads when the copy has it: AudioMNIST's speaker_id (no file names here).
    digits = Dataset.from_dict({"audio": [{"bytes": wav, "path": None}] * 2, "digit": [3, 9], "speaker_id": ["12", "26"]},
                               features=Features({"audio": feats["audio"], "digit": Value("int64"),
                                                  "speaker_id": Value("string")}))
    digits.save_to_disk(str(tmp_path / "digits"))
    items = hfdata.recipe_items(get_recipe("audiomnist"), hfdata.parse_hf_spec(str(tmp_path / "digits")))
    assert [(it.labels[0], it.fold, it.speaker) for it in items] == [("three", 1, "12"), ("nine", 2, "26")]
    with pytest.raises(SupportSetError, match=r"RAVDESS from hf:.*bad@train: no column 'labels', 'speaker_id' \(columns: audio, x\)"):
        Dataset.from_dict({"audio": [{"bytes": wav, "path": "a.wav"}], "x": [1]},
                          features=Features({"audio": feats["audio"], "x": Value("int64")})).save_to_disk(str(tmp_path / "bad"))
        hfdata.recipe_items(get_recipe("ravdess"), hfdata.parse_hf_spec(str(tmp_path / "bad")))
