"""Bad audio files found from their header, before any model loads (icl_audio.audio.check_audio_header)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tone, write_wav
from icl_audio.audio import check_audio_header
from icl_audio.errors import AudioError


def _bad_files(tmp):
    (tmp / "empty.wav").write_bytes(b"")
    (tmp / "text.wav").write_text("hello, I am text named .wav\n" * 20)
    write_wav(tmp / "zero.wav", np.zeros(0, dtype=np.float32))
    (tmp / "folder.wav").mkdir()
    return {"empty.wav": "empty file", "text.wav": "not audio soundfile can read", "zero.wav": "no audio frames",
            "folder.wav": "is a directory", "missing.wav": "no such file"}


def test_header_check(tmp_path):
    for name, message in _bad_files(tmp_path).items():
        with pytest.raises(AudioError) as exc:
            check_audio_header(tmp_path / name)
        assert str(exc.value) == f"{tmp_path / name}: {message}" or message in str(exc.value), exc.value
    check_audio_header(write_wav(tmp_path / "good.flac", tone(300, 0.1)))  # passes, reading the header only


def test_every_input_bad_stops_before_any_model_loads(tmp_path, support_folder, capsys, monkeypatch):
    import icl_audio.models as models
    from conftest import run_main as main

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_lm", no_model)
    monkeypatch.setattr(models, "load_codec", no_model)
    _bad_files(tmp_path)
    files = [str(tmp_path / n) for n in ("empty.wav", "text.wav", "zero.wav")]
    code = main(["classify", *files, "--support", str(support_folder), "--model", "debug", "--codec", "debug", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: none of the 3 inputs is audio that can be read:")
    assert "empty.wav: empty file" in err[0] and "zero.wav: no audio frames" in err[0]
    code = main(["prompt", files[1], "--support", str(support_folder), "--model", "debug", "--codec", "debug"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {files[1]}: not audio soundfile can read (Format not recognised.)"] or \
        (code == 2 and len(err) == 1 and "not audio soundfile can read" in err[0]), err
