"""The one build-once helper: whole builds only, stale builds replaced, crashes and races leave nothing behind."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from icl_audio.fsutil import build_once, is_built


def _writer(content: str, calls: list):
    def build(folder: Path) -> None:
        calls.append(folder)
        folder.mkdir()
        (folder / "data.txt").write_text(content)
    return build


def test_builds_once_and_reuses(tmp_path):
    calls: list = []
    target = tmp_path / "thing"
    out = build_once(target, _writer("a", calls), marker="m.json", stamp={"version": 1}, required=("data.txt",))
    assert out == target and (target / "data.txt").read_text() == "a"
    assert json.loads((target / "m.json").read_text()) == {"version": 1}
    build_once(target, _writer("b", calls), marker="m.json", stamp={"version": 1}, required=("data.txt",))
    assert len(calls) == 1 and (target / "data.txt").read_text() == "a"  # reused, not rebuilt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]  # no temporary folder left


def test_other_version_or_missing_file_is_rebuilt(tmp_path):
    calls: list = []
    target = tmp_path / "thing"
    build_once(target, _writer("v1", calls), marker="m.json", stamp={"version": 1}, required=("data.txt",))
    build_once(target, _writer("v2", calls), marker="m.json", stamp={"version": 2}, required=("data.txt",))
    assert (target / "data.txt").read_text() == "v2" and len(calls) == 2
    (target / "data.txt").unlink()  # damaged by hand
    assert not is_built(target, "m.json", 2, ("data.txt",))
    build_once(target, _writer("v2 again", calls), marker="m.json", stamp={"version": 2}, required=("data.txt",))
    assert (target / "data.txt").read_text() == "v2 again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


def test_a_failed_build_leaves_nothing_and_keeps_the_old(tmp_path):
    target = tmp_path / "thing"
    build_once(target, _writer("old", []), marker="m.json", stamp={"version": 1})

    def broken(folder: Path) -> None:
        folder.mkdir()
        (folder / "half.txt").write_text("x")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        build_once(target, broken, marker="m.json", stamp={"version": 2})
    assert (target / "data.txt").read_text() == "old"  # the previous build is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]
    with pytest.raises(OSError):
        build_once(tmp_path / "none", lambda folder: None, marker="m.json", stamp={"version": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]


def test_concurrent_builders_both_end_with_one_whole_build(tmp_path):
    target = tmp_path / "thing"
    inside = threading.Barrier(2)

    def build(folder: Path) -> None:
        folder.mkdir()
        (folder / "data.txt").write_text(threading.current_thread().name)
        inside.wait(timeout=10)  # both are mid-build before either renames

    results: list = []
    threads = [threading.Thread(target=lambda: results.append(
        build_once(target, build, marker="m.json", stamp={"version": 1}, required=("data.txt",))), name=f"t{i}")
        for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert results == [target, target]
    assert is_built(target, "m.json", 1, ("data.txt",))
    assert (target / "data.txt").read_text() in ("t0", "t1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]
