"""Tests for the dataset recipes and the generic folder / CSV sources, on synthetic official-layout trees."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import soundfile as sf

from fixtures_datasets import (
    BUILDERS, fma_track_ids, make_audiomnist_tree, make_emovo_tree, make_esc50_tree, make_fma_small_tree,
    make_fsd50k_tree, make_irmas_tree, make_medley_solos_db_tree, make_mtt_tree, make_ravdess_tree,
    make_slurp_tree, make_us8k_tree, make_vivae_tree, write_clip,
)
from icl_audio.errors import SupportSetError
from icl_audio.recipes import RECIPES, Item, Recipe, from_csv, from_folder, get_recipe, random_split
from icl_audio.recipes.audiomnist import FOLD_SPEAKERS


def labels(items):
    return Counter(it.labels for it in items)


# ------------------------------------------------------------------------------ registry


def test_registry_has_every_arch_dataset_with_its_clip_length():
    # ARCH's configs/data_config.json, in the order of its tables (and of the X-Codec paper's Table 5).
    expected = {"esc50": 5, "us8k": 5, "fsd50k": 10, "vivae": 5, "fma-small": 30, "mtt": 30, "irmas": 5,
                "medley-solos-db": 3, "ravdess": 5, "audiomnist": 5, "slurp": 10, "emovo": 5,
                # the five more (no ARCH length; chosen in docs/datasets.md)
                "crema-d": 5, "gtzan": 10, "timit": 5, "arca23k-fsd": 10, "flusense": 5}
    assert {n: r.clip_seconds for n, r in RECIPES.items()} == expected
    assert list(RECIPES) == list(expected)
    assert set(BUILDERS) == set(RECIPES)
    for name, r in RECIPES.items():
        assert isinstance(r, Recipe) and r.name == name and r.description and r.layout
        assert r.protocol in ("folds", "splits")
        assert r.multi_label == (name in ("fsd50k", "mtt", "irmas"))
        if r.protocol == "folds":
            assert r.folds
        else:
            assert r.splits and "test" in r.splits and "train" in r.splits


@pytest.mark.parametrize("alias,name", [("ESC-50", "esc50"), ("esc_50", "esc50"), ("UrbanSound8K", "us8k"),
                                        ("FMA small", "fma-small"), ("medley_solos_db", "medley-solos-db"),
                                        ("MagnaTagATune", "mtt"), ("IRMAS", "irmas")])
def test_get_recipe_aliases(alias, name):
    assert get_recipe(alias).name == name


def test_get_recipe_unknown_lists_names():
    with pytest.raises(SupportSetError, match=r"unknown dataset 'nsynth' \(known: esc50, us8k, fsd50k"):
        get_recipe("nsynth")


def test_recipes_do_not_import_torch():
    code = ("import sys, icl_audio.recipes, icl_audio.download; "
            "bad = [m for m in ('torch', 'transformers', 'faiss') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_missing_root_and_empty_root_errors(name, tmp_path):
    r = get_recipe(name)
    with pytest.raises(SupportSetError, match="root .*nowhere: not a folder"):
        r.prepare(tmp_path / "nowhere")
    with pytest.raises(SupportSetError, match=r"root .*: missing .*expected the official layout"):
        r.prepare(tmp_path)


def test_esc50_missing_metadata_message_is_exact(tmp_path):
    with pytest.raises(SupportSetError) as e:
        get_recipe("esc50").prepare(tmp_path)
    assert str(e.value) == (f"ESC-50 root {tmp_path}: missing meta/esc50.csv "
                            "(expected the official layout: meta/esc50.csv and audio/)")


# ------------------------------------------------------------------------------ ESC-50 / US8K


def test_esc50(tmp_path, caplog):
    root = make_esc50_tree(tmp_path / "ESC-50-master", missing=2)
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("esc50").prepare(root)
    assert len(items) == 15
    assert labels(items) == {("dog",): 5, ("chirping birds",): 5, ("car horn",): 5}
    assert {it.original_labels for it in items} == {("dog",), ("chirping_birds",), ("car_horn",)}
    assert Counter(it.fold for it in items) == {f: 3 for f in range(1, 6)}
    assert all(it.path.is_file() and it.split is None and it.speaker is None for it in items)
    assert "skipped 2 metadata row(s)" in caplog.text
    # The folder an archive was extracted into works too.
    assert get_recipe("esc50").prepare(tmp_path) == items


def test_esc50_all_audio_missing_is_an_error(tmp_path):
    root = make_esc50_tree(tmp_path, folds=1)
    for p in (root / "audio").iterdir():
        p.unlink()
    with pytest.raises(SupportSetError, match="none of the 3 audio files its metadata lists exist"):
        get_recipe("esc50").prepare(root)


def test_esc50_missing_audio_folder(tmp_path):
    make_esc50_tree(tmp_path, folds=1)
    for p in (tmp_path / "audio").iterdir():
        p.unlink()
    (tmp_path / "audio").rmdir()
    with pytest.raises(SupportSetError, match="missing audio/ "):
        get_recipe("esc50").prepare(tmp_path)


def test_us8k(tmp_path, caplog):
    root = make_us8k_tree(tmp_path, missing=1)
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("us8k").prepare(root)
    assert len(items) == 30
    assert labels(items) == {("air conditioner",): 10, ("car horn",): 10, ("dog bark",): 10}
    assert {it.original_labels[0] for it in items} == {"air_conditioner", "car_horn", "dog_bark"}
    assert all(it.path.parent.name == f"fold{it.fold}" for it in items)
    assert "skipped 1 metadata row(s)" in caplog.text
    r = get_recipe("us8k")
    assert r.evaluation_units(items) == list(range(1, 11))
    support, query = r.split_items(items, 3)
    assert len(query) == 3 and {it.fold for it in query} == {3}
    assert len(support) == 27 and 3 not in {it.fold for it in support}


# ------------------------------------------------------------------------------ MagnaTagATune


# ARCH's list, copied here from its loader independently of icl_audio.recipes.mtt.
ARCH_TOP50 = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano",
    "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals",
    "no vocals", "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft",
    "sitar", "solo", "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal",
    "beats", "harp", "cello", "no voice", "weird", "country", "metal", "female voice", "choral",
]


def test_mtt_top50_tags_musicnn_split_and_dropped_clips(tmp_path, caplog):
    from icl_audio.recipes.mtt import TOP50_TAGS

    assert list(TOP50_TAGS) == ARCH_TOP50
    root = make_mtt_tree(tmp_path / "mtt", missing=2)
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("mtt").prepare(root)
    by_id = {int(it.path.name.split("-")[0].split("_")[1]): it for it in items}
    # 40 has only tags outside the top 50 and 50 is in no split file: both dropped, as in ARCH.
    assert set(by_id) == {2, 6, 10, 11, 14, 17, 21, 24, 29, 31, 33}
    assert by_id[6].labels == ("guitar", "rock")  # "jazz" is not a top-50 tag
    assert set(by_id[31].labels) == {"piano", "quiet"} and by_id[31].split == "test"
    assert set(by_id[11].labels) == {"classical", "piano", "no vocals"}
    assert all(it.labels == it.original_labels for it in items)
    assert Counter(it.split for it in items) == {"train": 6, "val": 2, "test": 3}
    assert by_id[2].path == root / "f" / "artist_2-album-02-track_2-30-59.mp3" and by_id[2].path.is_file()
    assert "skipped 2 metadata row(s)" in caplog.text
    r = get_recipe("mtt")
    assert r.evaluation_units(items) == ["test"]
    support, query = r.split_items(items, "test")
    assert {it.split for it in support} == {"train"} and len(query) == 3
    assert get_recipe("mtt").prepare(tmp_path) == items  # the folder the archive was extracted into


def test_mtt_bad_inputs_are_one_line(tmp_path):
    root = make_mtt_tree(tmp_path / "mtt")
    (root / "val_gt_mtt.tsv").unlink()
    with pytest.raises(SupportSetError, match=r"missing val_gt_mtt.tsv"):
        get_recipe("mtt").prepare(root)
    root = make_mtt_tree(tmp_path / "mtt2")
    (root / "test_gt_mtt.tsv").write_text("2\t[]\n", encoding="utf-8")  # 2 is a train clip too
    with pytest.raises(SupportSetError, match=r"clip_id 2 is in both train_gt_mtt.tsv and test_gt_mtt.tsv"):
        get_recipe("mtt").prepare(root)
    root = make_mtt_tree(tmp_path / "mtt3")
    meta = root / "annotations_final.csv"
    meta.write_text(meta.read_text().replace("\t", ","), encoding="utf-8")  # a comma-separated copy
    with pytest.raises(SupportSetError, match=r"lacks column\(s\) clip_id, mp3_path, guitar"):
        get_recipe("mtt").prepare(root)


# ------------------------------------------------------------------------------ IRMAS


def test_irmas_training_folders_and_multi_label_test_parts(tmp_path, caplog):
    root = make_irmas_tree(tmp_path / "IRMAS", unlabelled=1)
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("irmas").prepare(root)
    train = [it for it in items if it.split in ("train", "val")]
    assert labels(train) == {("cello",): 5, ("acoustic guitar",): 5, ("voice",): 5}
    assert {it.original_labels for it in train} == {("cel",), ("gac",), ("voi",)}
    assert all(it.path.parent.name == it.original_labels[0] for it in train)
    assert Counter(it.split for it in train) == {"train": 12, "val": 3}  # ARCH: 20% held out
    test = {it.path.stem: it for it in items if it.split == "test"}
    assert set(test) == {"01 - Song one-1", "01 - Song one-2", "02 - Song two-1", "02 - Song two-2", "03 - Song three-1"}
    assert test["01 - Song one-2"].labels == ("acoustic guitar", "voice")
    assert test["01 - Song one-2"].original_labels == ("gac", "voi")
    assert test["02 - Song two-2"].labels == ("cello", "acoustic guitar")
    assert test["03 - Song three-1"].path.parent == root / "IRMAS-TestingData-Part3" / "Part3"
    assert "skipped 1 test wav(s) without a label .txt" in caplog.text
    assert get_recipe("irmas").prepare(root) == items  # the hold-out is seeded: stable
    support, query = get_recipe("irmas").split_items(items, "test")
    assert len(support) == 12 and len(query) == 5


def test_irmas_missing_parts_and_bad_codes(tmp_path, caplog):
    root = make_irmas_tree(tmp_path / "a", parts=(1,))
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("irmas").prepare(root)
    assert sum(it.split == "test" for it in items) == 2 and "testing part(s) 2, 3 not found" in caplog.text
    root = make_irmas_tree(tmp_path / "b")
    (root / "IRMAS-TestingData-Part2" / "Part2" / "02 - Song two-1.txt").write_text("voi\t\nbanjo\n")
    with pytest.raises(SupportSetError, match=r"02 - Song two-1.txt: unknown instrument code 'banjo'"):
        get_recipe("irmas").prepare(root)


# ------------------------------------------------------------------------------ FSD50K


def test_fsd50k_multi_label_and_splits(tmp_path, caplog):
    root = make_fsd50k_tree(tmp_path, missing=1)
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("fsd50k").prepare(root)
    assert Counter(it.split for it in items) == {"train": 4, "val": 2, "test": 3}
    dog = next(it for it in items if it.path.name == "16399.wav")
    assert dog.labels == ("Bark", "Dog", "Domestic animals and pets", "Animal")
    assert dog.original_labels == ("Bark", "Dog", "Domestic_animals_and_pets", "Animal")
    assert all(it.path.parent.name == ("FSD50K.eval_audio" if it.split == "test" else "FSD50K.dev_audio")
               for it in items)
    assert "skipped 1 metadata row(s)" in caplog.text
    r = get_recipe("fsd50k")
    assert r.multi_label and r.evaluation_units(items) == ["test"]
    support, query = r.split_items(items, "test")
    assert (len(support), len(query)) == (4, 3)
    support, query = r.split_items(items, "test", include_val=True)
    assert (len(support), len(query)) == (6, 3)
    support, query = r.split_items(items, "val")
    assert (len(support), len(query)) == (4, 2)


def test_fsd50k_missing_eval_csv_is_named(tmp_path):
    make_fsd50k_tree(tmp_path)
    (tmp_path / "FSD50K.ground_truth" / "eval.csv").unlink()
    with pytest.raises(SupportSetError, match=r"missing FSD50K.ground_truth/eval.csv \(expected"):
        get_recipe("fsd50k").prepare(tmp_path)


# ------------------------------------------------------------------------------ VIVAE / EMOVO


def test_vivae_leave_one_speaker_out(tmp_path, caplog):
    root = make_vivae_tree(tmp_path, speakers=(1, 2, 11))
    write_clip(root / "full_set" / "notes.wav", "x")  # not a VIVAE name: skipped with a warning
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("vivae").prepare(root)
    assert len(items) == 9 and "skipped 1 file" in caplog.text
    assert labels(items) == {("achievement",): 3, ("anger",): 3, ("fear",): 3}
    assert {(it.speaker, it.fold) for it in items} == {("S01", 1), ("S02", 2), ("S11", 11)}
    r = get_recipe("vivae")
    assert r.evaluation_units(items) == [1, 2, 11]
    assert r.evaluation_units() == list(range(1, 12))
    support, query = r.split_items(items, 11)
    assert {it.speaker for it in query} == {"S11"} and {it.speaker for it in support} == {"S01", "S02"}


def test_emovo_codes_to_words_and_speakers(tmp_path):
    root = make_emovo_tree(tmp_path, emotions=("dis", "gio", "neu", "pau", "rab", "sor", "tri"))
    items = get_recipe("emovo").prepare(root)
    assert len(items) == 42
    words = {it.original_labels[0]: it.labels[0] for it in items}
    assert words == {"dis": "disgust", "gio": "joy", "neu": "neutral", "pau": "fear", "rab": "anger",
                     "sor": "surprise", "tri": "sadness"}
    assert {(it.speaker, it.fold) for it in items} == {("f1", 1), ("f2", 2), ("f3", 3), ("m1", 4), ("m2", 5),
                                                       ("m3", 6)}
    # The EMOVO folder itself is accepted as the root too.
    assert get_recipe("emovo").prepare(root / "EMOVO") == items
    support, query = get_recipe("emovo").split_items(items, 4)
    assert {it.speaker for it in query} == {"m1"} and len(support) == 35


# ------------------------------------------------------------------------------ FMA-small


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_fma_small_both_layouts(tmp_path, layout, caplog):
    root = make_fma_small_tree(tmp_path, layout=layout, missing=1)
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("fma-small").prepare(root)
    # 12 genre tracks; the no-genre track, the medium-subset track and the missing one are out.
    assert len(items) == 12
    assert labels(items) == {("Hip-Hop",): 3, ("Rock",): 3, ("Folk",): 3, ("Electronic",): 3}
    assert "skipped 1 metadata row(s)" in caplog.text
    ids = fma_track_ids(12)
    assert [int(it.path.stem) for it in items] == ids
    if layout == "nested":
        assert all(it.path.parent.name == f"{int(it.path.stem) // 1000:03d}" for it in items)
    else:
        assert all(it.path.parent.name == "fma_small" for it in items)
    assert Counter(it.split for it in items) == {"train": 8, "val": 2, "test": 2}
    data, sr = sf.read(items[0].path)
    assert sr == 16000 and len(data) > 1000


def test_fma_split_is_deterministic_and_layout_independent(tmp_path):
    a = get_recipe("fma-small").prepare(make_fma_small_tree(tmp_path / "a", layout="nested", per_genre=10))
    b = get_recipe("fma-small").prepare(make_fma_small_tree(tmp_path / "b", layout="flat", per_genre=10))
    assert [(it.path.stem, it.split) for it in a] == [(it.path.stem, it.split) for it in b]
    assert Counter(it.split for it in a) == {"train": 32, "val": 4, "test": 4}


def test_fma_tracks_csv_without_genre_column(tmp_path):
    make_fma_small_tree(tmp_path)
    (tmp_path / "fma_metadata" / "tracks.csv").write_text("track_id,title\n2,x\n")
    with pytest.raises(SupportSetError, match=r"no \('track', 'genre_top'\) column"):
        get_recipe("fma-small").prepare(tmp_path)


def test_random_split_is_stable_and_proportional():
    keys = [str(i) for i in range(100)]
    s1 = random_split(keys, (("train", .8), ("val", .1), ("test", .1)))
    s2 = random_split(list(reversed(keys)), (("train", .8), ("val", .1), ("test", .1)))
    assert s1 == s2 and Counter(s1.values()) == {"train": 80, "val": 10, "test": 10}
    halves = (("train", .8), ("test", .2))
    assert random_split(keys, halves, seed=1) != random_split(keys, halves)


# ------------------------------------------------------------------------------ Medley-solos-DB


@pytest.mark.parametrize("audio_subdir", ["audio", ""])
def test_medley_solos_db(tmp_path, audio_subdir, caplog):
    root = make_medley_solos_db_tree(tmp_path, audio_subdir=audio_subdir, missing=1)
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("medley-solos-db").prepare(root)
    assert len(items) == 9 and "skipped 1 metadata row(s)" in caplog.text
    assert labels(items) == {("clarinet",): 3, ("distorted electric guitar",): 3, ("piano",): 3}
    assert Counter(it.split for it in items) == {"train": 3, "val": 3, "test": 3}
    official = {"train": "training", "val": "validation", "test": "test"}
    assert all(it.path.name.startswith(f"Medley-solos-DB_{official[it.split]}-") for it in items)


# ------------------------------------------------------------------------------ RAVDESS


def test_ravdess_emotions_actors_split_and_folds(tmp_path):
    root = make_ravdess_tree(tmp_path)
    items = get_recipe("ravdess").prepare(root)
    assert len(items) == 24
    assert labels(items) == {("neutral",): 6, ("happy",): 6, ("angry",): 6, ("surprised",): 6}
    assert {it.original_labels[0] for it in items} == {"01", "03", "05", "08"}
    assert {it.speaker for it in items} == {"01", "02", "07", "13", "19", "24"}
    assert {(it.speaker, it.fold) for it in items} == {("01", 1), ("02", 1), ("07", 2), ("13", 3), ("19", 4),
                                                       ("24", 4)}
    assert Counter(it.split for it in items) == {"train": 19, "test": 5}
    assert get_recipe("ravdess").prepare(root) == items  # deterministic
    r = get_recipe("ravdess")
    assert r.protocol == "splits" and r.evaluation_units(items) == ["test"]
    assert r.evaluation_units(items, protocol="folds") == [1, 2, 3, 4]
    support, query = r.split_items(items, 4)  # speaker-independent: no actor on both sides
    assert {it.speaker for it in query} == {"19", "24"}
    assert not {it.speaker for it in query} & {it.speaker for it in support}
    support, query = r.split_items(items, "test")
    assert (len(support), len(query)) == (19, 5)


def test_ravdess_accepts_parent_of_actor_folders(tmp_path):
    make_ravdess_tree(tmp_path / "Audio_Speech_Actors_01-24", actors=(3,), emotions=("07",))
    items = get_recipe("ravdess").prepare(tmp_path)
    assert [(it.labels, it.speaker, it.fold) for it in items] == [(("disgust",), "03", 1)]


# ------------------------------------------------------------------------------ AudioMNIST


def test_audiomnist_digits_speakers_and_arch_folds(tmp_path):
    root = make_audiomnist_tree(tmp_path / "AudioMNIST-master")
    items = get_recipe("audiomnist").prepare(tmp_path)
    assert len(items) == 15
    assert labels(items) == {("zero",): 5, ("one",): 5, ("two",): 5}
    assert {it.original_labels[0] for it in items} == {"0", "1", "2"}
    assert {(it.speaker, it.fold) for it in items} == {("12", 1), ("26", 2), ("28", 3), ("36", 4), ("43", 5)}
    assert root == tmp_path / "AudioMNIST-master"
    assert sorted(s for sp in FOLD_SPEAKERS.values() for s in sp) == list(range(1, 61))
    support, query = get_recipe("audiomnist").split_items(items, "2")  # digits from a CLI are fine
    assert {it.speaker for it in query} == {"26"} and len(support) == 12


# ------------------------------------------------------------------------------ SLURP


@pytest.mark.parametrize("layout", ["flat", "repo"])
def test_slurp_both_layouts(tmp_path, layout, caplog):
    root = make_slurp_tree(tmp_path, layout=layout, missing=1)
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = get_recipe("slurp").prepare(root)
    assert len(items) == 18 and "skipped 3 metadata row(s)" in caplog.text
    assert labels(items) == {("alarm set",): 6, ("weather query",): 6, ("play music",): 6}
    assert {it.original_labels[0] for it in items} == {"alarm_set", "weather_query", "play_music"}
    assert Counter(it.split for it in items) == {"train": 6, "val": 6, "test": 6}
    assert all(it.path.parent.name == "slurp_real" and it.path.suffix == ".flac" for it in items)
    assert not any("synth" in str(it.path) for it in items)


def test_slurp_missing_pieces_are_named(tmp_path):
    make_slurp_tree(tmp_path, layout="repo")
    (tmp_path / "dataset" / "slurp" / "devel.jsonl").unlink()
    with pytest.raises(SupportSetError, match="missing dataset/slurp/devel.jsonl"):
        get_recipe("slurp").prepare(tmp_path)
    other = tmp_path / "other"
    make_slurp_tree(other, layout="flat")
    for p in (other / "slurp_real").iterdir():
        p.unlink()
    (other / "slurp_real").rmdir()
    with pytest.raises(SupportSetError, match="missing slurp_real/ audio folder"):
        get_recipe("slurp").prepare(other)


# ------------------------------------------------------------------------------ Recipe helpers


def test_split_items_rejects_unknown_units(tmp_path):
    items = get_recipe("esc50").prepare(make_esc50_tree(tmp_path))
    with pytest.raises(SupportSetError, match="has no fold 7"):
        get_recipe("esc50").split_items(items, 7)
    with pytest.raises(SupportSetError, match="cannot evaluate on split 'test'"):
        get_recipe("esc50").split_items(items, "test")
    with pytest.raises(SupportSetError, match="cannot evaluate on split 'train'"):
        get_recipe("slurp").split_items([], "train")
    with pytest.raises(SupportSetError, match="has no folds"):
        get_recipe("slurp").evaluation_units(protocol="folds")


def test_item_is_frozen_and_has_label():
    it = Item(path=Path("a.wav"), labels=("x", "y"), original_labels=("X", "Y"))
    assert it.label == "x"
    with pytest.raises(Exception):
        it.fold = 2  # type: ignore[misc]


# ------------------------------------------------------------------------------ generic sources


def test_from_folder(tmp_path):
    odd = "café, bar & grill ♪"
    for label in ("b sound", "a", odd):
        write_clip(tmp_path / label / "z.wav", label)
        write_clip(tmp_path / label / "sub" / "a.FLAC", label)
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    (tmp_path / "a" / "._z.wav").write_bytes(b"AppleDouble junk")
    write_clip(tmp_path / "loose.wav", "x")  # not in a label folder: ignored
    items = from_folder(tmp_path)
    assert [(it.labels[0], it.path.relative_to(tmp_path).as_posix()) for it in items] == [
        ("a", "a/sub/a.FLAC"), ("a", "a/z.wav"), ("b sound", "b sound/sub/a.FLAC"), ("b sound", "b sound/z.wav"),
        (odd, f"{odd}/sub/a.FLAC"), (odd, f"{odd}/z.wav"),
    ]
    assert all(it.original_labels == it.labels for it in items)


def test_from_folder_errors(tmp_path):
    with pytest.raises(SupportSetError, match="not a folder"):
        from_folder(tmp_path / "nope")
    (tmp_path / "empty label").mkdir()
    with pytest.raises(SupportSetError, match="no audio files in label sub-folders"):
        from_folder(tmp_path)


def test_from_csv_multilabel_unicode_commas(tmp_path, caplog):
    for name in ("a.wav", "b c.wav", "sub/ü.flac"):
        write_clip(tmp_path / name, name)
    absolute = write_clip(tmp_path / "elsewhere" / "d.wav", "d")
    csv_path = tmp_path / "set.csv"
    csv_path.write_text(
        "\ufeffPath,Label,split,fold,speaker\n"
        "a.wav,dog barking,train,1,s1\n"
        '"b c.wav","rock, pop; jazz ; jazz",test,,\n'
        'sub/ü.flac,"über ""quoted"" label",,,\n'
        f"{absolute},x,,,\n"
        "gone.wav,dog barking,,,\n"
        "\n",
        encoding="utf-8",
    )
    with caplog.at_level(logging.WARNING, logger="icl_audio.recipes"):
        items = from_csv(csv_path)
    assert [it.labels for it in items] == [("dog barking",), ("rock, pop", "jazz"), ('über "quoted" label',), ("x",)]
    assert [it.split for it in items] == ["train", "test", None, None]
    assert (items[0].fold, items[0].speaker) == (1, "s1")
    assert items[1].path == tmp_path / "b c.wav" and items[3].path == absolute
    assert "skipped 1 metadata row(s)" in caplog.text


def test_from_csv_errors(tmp_path):
    write_clip(tmp_path / "a.wav", "a")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\na.wav,x\n")
    with pytest.raises(SupportSetError, match=r"missing column 'path' \(header must be path,label\[,split\]"):
        from_csv(bad)
    bad.write_text("path,label\na.wav,\n")
    with pytest.raises(SupportSetError, match="line 2: empty label"):
        from_csv(bad)
    bad.write_text("path,label,fold\na.wav,x,one\n")
    with pytest.raises(SupportSetError, match="line 2: fold must be an integer"):
        from_csv(bad)
    bad.write_text("path,label\n")
    with pytest.raises(SupportSetError, match="no rows"):
        from_csv(bad)
    bad.write_text("path,label\ngone.wav,x\n")
    with pytest.raises(SupportSetError, match="none of the 1 audio files"):
        from_csv(bad)
    with pytest.raises(SupportSetError, match="no such file"):
        from_csv(tmp_path / "nope.csv")
