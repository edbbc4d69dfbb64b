"""Stored support sets: round trip, atomic replacement, damage detection, listing, removal, locking."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import pytest

from icl_audio import support as store
from icl_audio.errors import CacheError, SupportSetError


def fake_set(n: int = 6, seed: int = 0, labels=("dog", "cat")) -> store.SupportSet:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return store.SupportSet(
        sources=tuple(f"/data/clip {i} ☃.wav" for i in range(n)),
        labels=tuple((labels[i % len(labels)],) for i in range(n)),
        codes=tuple(rng.integers(0, 65536, size=10 + i).astype(np.int64) for i in range(n)),
        embeddings=emb,
        meta={"codec": {"id": "c", "revision": "r"}, "model": {"id": "m", "revision": "r"}},
    )


def test_round_trip(tmp_path):
    s = fake_set()
    manifest = store.save_support_set("pets", s, {"dataset": None})
    assert manifest["clips"] == 6 and manifest["labels"] == ["cat", "dog"]
    loaded = store.load_support_set("pets")
    assert loaded.sources == s.sources and loaded.labels == s.labels
    for a, b in zip(loaded.codes, s.codes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.embeddings, s.embeddings)
    assert loaded.index.search(s.embeddings[2], 1)[0][0].index == 2
    assert store.read_manifest("pets")["label_counts"] == {"dog": 3, "cat": 3}
    assert "pets" in [m["name"] for m in store.list_support_sets()]


def test_replacing_keeps_one_previous_version(tmp_path):
    for seed in range(4):
        store.save_support_set("rep", fake_set(seed=seed))
    folder = store.set_dir("rep")
    datas = [p for p in folder.iterdir() if p.name.startswith("data-")]
    assert len(datas) == 2
    np.testing.assert_array_equal(store.load_support_set("rep").embeddings, fake_set(seed=3).embeddings)


def _data_dir(name):
    folder = store.set_dir(name)
    return folder / (folder / "current").read_text().strip()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "codes.npy").write_bytes((d / "codes.npy").read_bytes()[:100]), "damaged"),
        (lambda d: (d / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda d: (d / "manifest.json").write_text(json.dumps({"format_version": 99})), "unknown format version"),
        (lambda d: (d / "offsets.npy").unlink(), "missing files"),
        (lambda d: (d / "items.jsonl").write_text("{}\n"), "disagree"),
    ],
)
def test_damaged_sets_give_one_clear_line(damage, message):
    store.save_support_set("broken", fake_set())
    damage(_data_dir("broken"))
    with pytest.raises(CacheError) as err:
        store.load_support_set("broken")
    assert message in str(err.value) and "\n" not in str(err.value)
    # The library names the set; what command to run is the CLI's to say (tests/test_robustness.py).
    assert isinstance(err.value, store.DamagedSetError) and err.value.set_name == "broken"
    assert "icl-audio" not in str(err.value)


def test_tampered_codes_fail_the_content_hash():
    store.save_support_set("tamper", fake_set())
    d = _data_dir("tamper")
    codes = np.load(d / "codes.npy")
    codes[0] ^= 1
    np.save(d / "codes.npy", codes)
    with pytest.raises(CacheError, match="content hash"):
        store.load_support_set("tamper")


def test_deleted_index_is_rebuilt():
    store.save_support_set("noidx", fake_set())
    (_data_dir("noidx") / "index.faiss").unlink()
    loaded = store.load_support_set("noidx")
    assert loaded.index.search(loaded.embeddings[1], 1)[0][0].index == 1


def test_names_and_missing_sets():
    for bad in ("", "../x", "a/b", ".hidden", "-x", "x" * 101):
        with pytest.raises(SupportSetError, match="invalid support set name"):
            store.validate_name(bad)
    with pytest.raises(SupportSetError, match="no support set named"):
        store.load_support_set("never-built")
    with pytest.raises(SupportSetError, match="no support set named"):
        store.remove_support_set("never-built")


def test_remove():
    store.save_support_set("gone", fake_set())
    store.remove_support_set("gone")
    assert not store.exists("gone")
    assert "gone" not in [m["name"] for m in store.list_support_sets()]


def _writer(home: str, seed: int, rounds: int) -> None:
    import os

    os.environ["ICL_AUDIO_HOME"] = home
    from icl_audio import support as s

    for r in range(rounds):
        with s.lock_for("shared"):
            s.save_support_set("shared", fake_set(seed=seed))
        s.load_support_set("shared")


def test_concurrent_writers_and_readers_never_see_a_broken_set():
    import os

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(os.environ["ICL_AUDIO_HOME"], seed, 5)) for seed in (1, 2)]
    for p in procs:
        p.start()
    seen = 0
    while any(p.is_alive() for p in procs):
        if store.exists("shared"):
            loaded = store.load_support_set("shared")  # must never raise
            assert len(loaded) == 6
            seen += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    final = store.load_support_set("shared")
    assert any(np.array_equal(final.embeddings, fake_set(seed=s).embeddings) for s in (1, 2))


def test_a_reader_follows_current_when_writers_removed_the_folder_it_named(monkeypatch):
    # The race the test above meets about once in 30 runs, made certain: between a reader's reading of
    # `current` and its opening of the folder named there, two writers replace the set (the second
    # removes that folder, keeping only the live data and the one before).
    from pathlib import Path

    store.save_support_set("raced", fake_set(seed=1))
    real_is_dir = Path.is_dir
    raced = []

    def is_dir_after_two_writes(self):
        if self.name.startswith("data-") and not raced:
            raced.append(self.name)
            for seed in (2, 3):
                store.save_support_set("raced", fake_set(seed=seed))
            assert not real_is_dir(self)  # the folder the reader read from `current` is gone
        return real_is_dir(self)

    monkeypatch.setattr(Path, "is_dir", is_dir_after_two_writes)
    loaded = store.load_support_set("raced")
    assert raced and np.array_equal(loaded.embeddings, fake_set(seed=3).embeddings)


def test_support_spec_is_decided_before_any_model(tmp_path, monkeypatch):
    import soundfile as sf

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "critters" / "dog"
    folder.mkdir(parents=True)
    sf.write(str(folder / "a.wav"), np.zeros(1600, np.float32), 16000)
    src = store.parse_support_spec("critters")
    assert src.kind == "folder" and [it.path.name for it in src.items] == ["a.wav"]
    store.save_support_set("critters", fake_set())
    # A folder here and a stored set of the same name: refused, not guessed.
    with pytest.raises(SupportSetError, match="ambiguous support 'critters'.*use ./critters for the folder"):
        store.parse_support_spec("critters")
    assert store.parse_support_spec("./critters").kind == "folder"
    monkeypatch.chdir(tmp_path / "critters")
    stored = store.parse_support_spec("critters")
    assert stored.kind == "stored" and stored.items == ()
    with pytest.raises(store.NotBuiltError) as err:
        store.parse_support_spec("esc50")
    assert err.value.set_name == "esc50"
    with pytest.raises(SupportSetError, match="no such folder, CSV file or stored support set"):
        store.parse_support_spec("nothing-here")


def test_library_errors_name_no_command_line_syntax():
    # The CLI adds "run `icl-audio support ...`" hints (icl_audio/cli/render.py:hint_for); the
    # library, used from Python, only says what is wrong.
    from pathlib import Path

    root = Path(store.__file__).parent
    for name in ("support.py", "classifier.py", "encoding.py", "retrieval.py", "codecache.py"):
        assert "icl-audio " not in (root / name).read_text(), name
