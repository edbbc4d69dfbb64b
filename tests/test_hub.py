"""The one model-name resolver (icl_audio.hub.resolve_model) and the folder revision it reports."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from icl_audio.errors import ModelError
from icl_audio.hub import folder_revision, resolve_model


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def _model_folder(path: Path, weights: bytes = b"\x01" * 64) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "model.safetensors").write_bytes(weights)
    (path / "tokenizer.json").write_text("{}")
    return path


@pytest.fixture
def offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_missing_hub_id_offline(offline):
    with pytest.raises(ModelError) as exc:
        resolve_model("icl-audio-tests/no-such-model", kind="codec", flag="--codec")
    msg = _one_line(exc)
    assert "codec icl-audio-tests/no-such-model is not in the Hugging Face cache" in msg
    assert str(offline) in msg and "offline" in msg
    assert "hf download icl-audio-tests/no-such-model" in msg and "--codec /path/to/folder" in msg


def test_alias_is_resolved_before_lookup(offline):
    with pytest.raises(ModelError) as exc:
        resolve_model("LLASA-1B", kind="LLM", aliases={"llasa-1b": "HKUSTAudio/Llasa-1B"})
    assert "LLM HKUSTAudio/Llasa-1B is not in" in _one_line(exc) and "--model /path/to/folder" in str(exc.value)


def test_hub_id_from_cache(offline):
    """A snapshot in the HF cache layout is found offline; its revision is the commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline / "models--org--tiny"
    _model_folder(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    src = resolve_model("org/tiny")
    assert (src.model_id, src.revision, src.origin) == ("org/tiny", commit, "hub")
    assert src.folder == repo / "snapshots" / commit


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError) as exc:
        resolve_model(str(tmp_path / "empty"), kind="codec")
    assert "codec folder" in _one_line(exc) and "no config.json" in str(exc.value)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(ModelError) as exc:
        resolve_model(str(weights))
    assert "is a file" in _one_line(exc) and "config.json" in str(exc.value)
    with pytest.raises(ModelError) as exc:
        resolve_model(str(tmp_path / "no" / "such"), flag="--codec")
    assert "does not exist" in _one_line(exc) and "--codec" in str(exc.value)


def test_local_folder(tmp_path):
    folder = _model_folder(tmp_path / "m")
    src = resolve_model(str(folder))
    assert (src.folder, src.model_id, src.origin) == (folder.resolve(), str(folder.resolve()), "folder")
    assert src.revision == folder_revision(folder)


def test_debug_builder(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return tmp_path / "dbg" if (tmp_path / "dbg").exists() else _model_folder(tmp_path / "dbg")

    src = resolve_model("debug", debug_build=build, debug_revision="debug-v7")
    assert (src.model_id, src.revision, src.origin, len(calls)) == ("debug", "debug-v7", "debug", 1)
    # Without a fixed version, the debug folder's content hash.
    assert resolve_model("debug", debug_build=build).revision == folder_revision(tmp_path / "dbg")

    def broken():
        raise PermissionError("read-only file system")

    with pytest.raises(ModelError) as exc:
        resolve_model("debug", kind="codec", debug_build=broken)
    assert "could not build the debug codec" in _one_line(exc) and "read-only" in str(exc.value)


def _reference_hash(folder: Path, names: list[str]) -> str:
    # The documented format: for each hashed file in name order, "name\0size\0" then its bytes.
    h = hashlib.sha256()
    for name in sorted(names):
        data = (folder / name).read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode() + data)
    return "folder-" + h.hexdigest()[:40]


def test_folder_revision_is_a_content_hash(tmp_path):
    a = _model_folder(tmp_path / "a")
    (a / "README.md").write_text("notes")  # not part of the model
    (a / "icl_audio_debug.json").write_text("{}")  # nor a build marker
    assert folder_revision(a) == _reference_hash(a, ["config.json", "model.safetensors", "tokenizer.json"])
    b = _model_folder(tmp_path / "b")  # a copy elsewhere: same revision
    assert folder_revision(b) == folder_revision(a)
    (b / "README.md").write_text("other notes")
    assert folder_revision(b) == folder_revision(a)


def test_revision_follows_weight_content(tmp_path):
    folder = _model_folder(tmp_path / "m")
    before = folder_revision(folder)
    weights = folder / "model.safetensors"
    st = weights.stat()
    weights.write_bytes(b"\x02" + b"\x01" * 63)  # same size, one byte changed
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after = folder_revision(folder)
    assert after != before
    assert after == _reference_hash(folder, ["config.json", "model.safetensors", "tokenizer.json"])
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"shard")  # a new weight file counts too
    assert folder_revision(folder) != after


def test_revision_memoised_by_size_and_mtime(tmp_path):
    """Hashed once per (path, size, mtime): a change that keeps all three is not re-read (that is the
    point: a 3.5 GB folder is not hashed on every load)."""
    folder = _model_folder(tmp_path / "m")
    first = folder_revision(folder)
    weights = folder / "model.safetensors"
    st = weights.stat()
    weights.write_bytes(b"\x03" * 64)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert folder_revision(folder) == first
