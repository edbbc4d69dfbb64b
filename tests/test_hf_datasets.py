"""Hugging Face datasets as sources: hub ids, save_to_disk and parquet folders -> lazy items, codes, support sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import tone, write_wav
from conftest import run_main as main
from icl_audio.errors import SupportSetError

datasets = pytest.importorskip("datasets")  # the test extra installs it; this only names the dependency

DEBUG = ["--model", "debug", "--codec", "debug", "--quiet"]
LABELS = ["dog", "car_horn", "chirping_birds"]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """load_dataset writes Arrow files into the datasets cache: a fresh one per test, never the user's."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets-cache"))
    datasets.disable_progress_bars()  # the tests read stderr
    yield tmp_path / "hf-datasets-cache"
    datasets.enable_progress_bars()


def wav_bytes(path: Path) -> bytes:
    return path.read_bytes()


def audio_dataset(columns: dict, audio: list[bytes | None], names: list[str], features: dict):
    """A Dataset with an ``audio`` column built without torchcodec: a {bytes, path} struct cast to
    Audio(decode=False), as hub-datasets.md describes."""
    from datasets import Audio, Dataset, Features, Value

    feats = Features({"audio": {"bytes": Value("binary"), "path": Value("string")}, **features})
    data = {"audio": [{"bytes": b, "path": n} for b, n in zip(audio, names)], **columns}
    return Dataset.from_dict(data, features=feats).cast_column("audio", Audio(decode=False))


@pytest.fixture
def clips(tmp_path) -> list[Path]:
    """Six wav files: two per label, distinct tones."""
    out = []
    for i, f in enumerate((150, 170, 1200, 1400, 3000, 3300)):
        out.append(write_wav(tmp_path / "files" / f"clip{i}.wav", tone(f, 0.5, phase=i)))
    return out


@pytest.fixture
def labelled(tmp_path, clips):
    """save_to_disk and parquet copies of one dataset: ClassLabel labels with '_', a fold column, a
    multi-label list column, and an undecodable seventh row."""
    from datasets import ClassLabel, List, Value

    features = {"label": ClassLabel(names=LABELS), "fold": Value("int32"), "tags": List(Value("string"))}
    columns = {"label": [0, 0, 1, 1, 2, 2, 0], "fold": [1, 2, 1, 2, 1, 2, 1],
               "tags": [["dog"], ["dog", "animal"], ["car_horn"], ["car_horn", "vehicle"], ["bird"], ["bird"], ["dog"]]}
    audio = [wav_bytes(p) for p in clips] + [b"not audio at all"]
    ds = audio_dataset(columns, audio, [p.name for p in clips] + ["broken.wav"], features)
    saved = tmp_path / "saved"
    ds.save_to_disk(str(saved))
    parquet = tmp_path / "parquet"
    ds.to_parquet(str(parquet / "train-00000-of-00001.parquet"))
    return {"saved": saved, "parquet": parquet}


def test_rows_become_lazy_items_with_stable_keys(labelled, monkeypatch):
    from icl_audio import hfdata

    reads = []
    original = hfdata._AudioColumn.read
    monkeypatch.setattr(hfdata._AudioColumn, "read", lambda self, row, key: reads.append(key) or original(self, row, key))
    for kind, folder in labelled.items():
        items = hfdata.load_items(hfdata.parse_hf_spec(f"hf:{folder}"), fold_column="fold")
        assert [it.key for it in items] == [f"hf:{folder.resolve()}@train#{i}" for i in range(7)], kind
        assert [it.labels for it in items[:4:2]] == [("dog",), ("car horn",)]  # ClassLabel names, '_' as a space
        assert items[2].original_labels == ("car_horn",) and items[1].fold == 2 and items[0].split == "train"
        multi = hfdata.load_items(hfdata.parse_hf_spec(f"hf:{folder}"), label_column="tags")
        assert multi[3].labels == ("car horn", "vehicle")  # a list column is multi-label
        assert items[0].path is None and isinstance(items[0].audio, hfdata.DatasetRow)
        assert not any(isinstance(getattr(items[0].audio, f), (bytes, bytearray)) for f in ("key", "row"))
    assert reads == []  # listing rows reads labels only, never audio


def test_same_clip_from_file_and_dataset_gives_identical_codes_encoded_once(labelled, clips, debug_codec, tmp_path):
    from icl_audio import hfdata
    from icl_audio.codecache import CodeCache
    from icl_audio.encoding import EncodeTally, stream_codes

    cache = CodeCache(tmp_path / "codes")
    from_files, tally = list(stream_codes(clips, debug_codec, cache=cache)), EncodeTally()
    items = hfdata.load_items(hfdata.parse_hf_spec(f"hf:{labelled['saved']}"))
    from_rows = list(stream_codes([it.audio for it in items], debug_codec, cache=cache, tally=tally))
    assert (tally.encoded, tally.reused) == (0, 6)  # the cache keys on audio content: nothing encoded again
    for a, b in zip(from_files, from_rows):
        assert np.array_equal(a.codes, b.codes)
    fresh = list(stream_codes(clips[:2], debug_codec, cache=None))  # no cache at all: the same codes
    assert all(np.array_equal(a.codes, b.codes) for a, b in zip(fresh, from_rows))
    bad = from_rows[6]
    assert bad.codes is None and bad.source == items[6].key and "cannot read audio" in bad.error
    tally = EncodeTally()
    list(stream_codes([it.audio for it in items], debug_codec, cache=cache, tally=tally))  # the dataset read twice
    assert (tally.encoded, tally.reused, len(tally.skipped)) == (0, 6, 1)


def test_support_build_and_classify_from_a_dataset(labelled, tmp_path, capsys):
    from icl_audio import support as store

    assert main(["support", "build", "hf-pets", "--hf", str(labelled["parquet"]), *DEBUG]) == 1  # one row skipped
    out = capsys.readouterr()
    err = "".join(out.err.split())  # the console folds long lines, even inside a path
    assert "built hf-pets: 6 clips, 3 labels" in out.out
    assert f"skipped:hf:{labelled['parquet'].resolve()}@train#6:cannotreadaudio" in err
    sset = store.load_support_set("hf-pets")
    assert sset.sources[0] == f"hf:{labelled['parquet'].resolve()}@train#0"
    assert store.read_manifest("hf-pets")["source"]["kind"] == "hf"
    query = write_wav(tmp_path / "q.wav", tone(160, 0.5))
    assert main(["classify", str(query), "--support", f"hf:{labelled['saved']}@train", "--k", "2", "--json", *DEBUG]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(p["label"] for p in result["predictions"]) == ["car horn", "chirping birds", "dog"]
    assert all(d["path"].startswith(f"hf:{labelled['saved'].resolve()}@train#") for d in result["demonstrations"])


@pytest.mark.parametrize("args,message", [
    (["--hf", "{saved}", "--label-column", "nope"], "no column 'nope' (columns: audio, label, fold, tags)"),
    (["--hf", "{saved}", "--audio-column", "fold"], "column 'fold' is not audio (it holds Value('int32')); audio columns: audio"),
    (["--hf", "{saved}@test"], "has no split 'test' (splits: train)"),
    (["--hf", "{parquet}", "--config", "nosuch"], "has no config 'nosuch'"),
    (["--hf", "{empty}@test"], "@test has no rows (an empty split)"),
    (["--hf", "{unlabelled}"], "column 'label' holds no labels in any of its 1 rows"),
    (["--hf", "{two_labels}"], "cannot tell the label column: 2 ClassLabel columns (a, b) and none named 'label'"),
    (["--hf", "nobody/nothing"], "not in the datasets cache"),
])
def test_bad_dataset_inputs_are_one_line_before_any_model_loads(args, message, labelled, clips, tmp_path, capsys):
    from datasets import ClassLabel, DatasetDict, Value

    paths = dict(labelled)
    paths["empty"] = tmp_path / "empty"
    one = audio_dataset({"label": [0]}, [wav_bytes(clips[0])], ["a.wav"], {"label": ClassLabel(names=LABELS)})
    DatasetDict({"train": one, "test": one.select([])}).save_to_disk(str(paths["empty"]), num_shards={"train": 1, "test": 1})
    paths["unlabelled"] = tmp_path / "unlabelled"
    audio_dataset({"label": [None]}, [wav_bytes(clips[0])], ["a.wav"], {"label": Value("string")}).save_to_disk(
        str(paths["unlabelled"]))
    paths["two_labels"] = tmp_path / "two"
    audio_dataset({"a": [0], "b": [1]}, [wav_bytes(clips[0])], ["a.wav"],
                  {"a": ClassLabel(names=LABELS), "b": ClassLabel(names=LABELS)}).save_to_disk(str(paths["two_labels"]))
    args = [a.format(**paths) for a in args]
    capsys.readouterr()
    # A model that does not exist: the dataset's error must come first.
    assert main(["support", "build", "x", *args, "--model", "nobody/no-model", "--codec", "debug", "-q"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    if "cannot tell the label column" in message:
        assert "--label-column COLUMN" in err  # the CLI points at the option


def test_classify_support_spec_needs_a_label_column_it_can_tell(tmp_path, clips, capsys):
    from datasets import Value

    folder = tmp_path / "speech"
    audio_dataset({"text": ["a"], "speaker": ["s1"]}, [wav_bytes(clips[0])], ["a.wav"],
                  {"text": Value("string"), "speaker": Value("string")}).save_to_disk(str(folder))
    query = write_wav(tmp_path / "q.wav", tone(160, 0.5))
    assert main(["classify", str(query), "--support", f"hf:{folder}", "--model", "nobody/no-model", "-q"]) == 2
    err = capsys.readouterr().err
    assert "no ClassLabel column and none named 'label' (columns: text, speaker)" in err
    assert f"icl-audio support build NAME --hf {folder.resolve()}@train --label-column COLUMN" in err


def _hub_cache(cache: Path, repo: str, source_parquet: Path) -> None:
    """Lay out the datasets cache as `load_dataset(repo)` leaves it (packaged_modules/cache reads it offline):
    <cache>/<owner>___<name>/default/0.0.0/<hash>/{dataset_info.json, <name>-train.arrow}."""
    built = datasets.load_dataset_builder("parquet", data_dir=str(source_parquet), cache_dir=str(cache / "tmp"))
    built.download_and_prepare()
    owner, name = repo.split("/")
    target = cache / f"{owner}___{name}" / "default" / "0.0.0" / "0123456789abcdef"
    target.mkdir(parents=True)
    info = json.loads((Path(built.cache_dir) / "dataset_info.json").read_text())
    info.update(config_name="default", dataset_name=name)
    (target / "dataset_info.json").write_text(json.dumps(info))
    for arrow in Path(built.cache_dir).glob("*-train*.arrow"):
        shutil.copy(arrow, target / arrow.name.replace("parquet-", f"{name}-"))
    shutil.rmtree(cache / "tmp")


def test_hub_id_offline_reads_the_datasets_cache_or_says_how_to_fetch(labelled, datasets_cache):
    from icl_audio import hfdata

    assert datasets.config.HF_HUB_OFFLINE  # conftest: every test runs offline
    _hub_cache(datasets_cache, "icl-audio-tests/pets", labelled["parquet"])
    items = hfdata.load_items(hfdata.parse_hf_spec("hf:icl-audio-tests/pets"))
    assert len(items) == 7 and items[0].key == "hf:icl-audio-tests/pets@train#0" and items[2].labels == ("car horn",)
    with pytest.raises(SupportSetError) as exc:
        hfdata.load_items(hfdata.parse_hf_spec("hf:icl-audio-tests/other:cfg@train"))
    msg = str(exc.value)
    assert "\n" not in msg and "not in the datasets cache" in msg
    assert "datasets.load_dataset('icl-audio-tests/other', 'cfg')" in msg


def test_parse_hf_spec():
    from icl_audio.hfdata import HubSpec, parse_hf_spec

    assert parse_hf_spec("hf:vtsouval/emovo:fold1@test") == HubSpec("vtsouval/emovo", "fold1", "test")
    assert parse_hf_spec("hf:ashraq/esc50") == HubSpec("ashraq/esc50")
    assert parse_hf_spec("/data/my set@validation", config="c") == HubSpec("/data/my set", "c", "validation")
    with pytest.raises(SupportSetError, match="names split 'test' and --split says 'train'"):
        parse_hf_spec("hf:a/b@test", split="train")


def test_library_modules_name_no_command_line_syntax():
    # As for support.py (test_support_store): the CLI adds the commands to run (cli/render.py:hint_for).
    root = Path(__file__).resolve().parents[1] / "icl_audio"
    for name in ("support_set", "support_encode", "support_store", "support_named", "support_spec", "hfdata"):
        assert "icl-audio " not in (root / f"{name}.py").read_text(), name
