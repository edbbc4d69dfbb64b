"""Bad input, odd-but-valid input, interruption and concurrency, through the CLI as users meet them.

The CLI runs in this process (fixture ``cli``), except where processes are the subject: a build killed
by a signal (then resumed), and two processes building the same set.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, SR, CliRun, noise, tone, write_wav

DEBUG = ["--model", "debug", "--codec", "debug"]


@pytest.fixture
def classify(cli):
    """``classify(*inputs, support=..., k="2")``: ``icl-audio classify`` with the debug models, --quiet --json."""

    def run(*args: str, support: Path, k: str = "2") -> CliRun:
        return cli("classify", *args, "--support", str(support), "--k", k, *DEBUG, "--quiet", "--json")

    return run


def one_error_line(out) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors, out.stderr
    return errors[0]


# -- audio inputs through the CLI ----------------------------------------------------------------


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "empty.wav").write_bytes(b"")
    (tmp / "text.wav").write_text("hello, I am text named .wav\n" * 20)
    full = write_wav(tmp / "full.wav", tone(300, 0.3)).read_bytes()
    (tmp / "truncated.wav").write_bytes(full[:40])
    write_wav(tmp / "zero.wav", np.zeros(0, dtype=np.float32))
    write_wav(tmp / "nan.wav", np.array([0.1, np.nan] * 800, dtype=np.float32), subtype="FLOAT")
    write_wav(tmp / "inf.wav", np.array([0.1, np.inf] * 800, dtype=np.float32), subtype="FLOAT")
    return {
        "empty": (tmp / "empty.wav", "empty file"),
        "text": (tmp / "text.wav", "cannot read audio"),
        "truncated": (tmp / "truncated.wav", "cannot read audio"),
        "zero-length": (tmp / "zero.wav", "zero-length"),
        "nan": (tmp / "nan.wav", "NaN or infinite"),
        "inf": (tmp / "inf.wav", "NaN or infinite"),
    }


def test_each_bad_audio_file_is_one_line_and_the_rest_still_run(classify, support_folder, tmp_path):
    bad = _bad_inputs(tmp_path / "bad")
    good = write_wav(tmp_path / "good.wav", tone(140, 0.4))
    out = classify(str(good), *[str(p) for p, _ in bad.values()], support=support_folder)
    assert out.returncode == 1
    assert len(out.stdout.splitlines()) == 1 and json.loads(out.stdout)["audio"] == str(good)
    for path, message in bad.values():
        line = next(l for l in out.stderr.splitlines() if str(path) in l)
        assert message in line
    assert f"{len(bad)} of {len(bad) + 1} inputs failed" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp: tmp / "missing.wav", "missing.wav: no such file"),
        (lambda tmp: (tmp / "a dir.wav").mkdir() or tmp / "a dir.wav", "a dir.wav: is a directory"),
    ],
)
def test_inputs_that_are_not_files_fail_before_any_work(cli, support_folder, tmp_path, make, message):
    # Found before any model loads or any clip is encoded: one line, exit 2, no progress lines.
    good = write_wav(tmp_path / "good.wav", tone(140, 0.4))
    out = cli("classify", str(good), str(make(tmp_path)), "--support", str(support_folder), *DEBUG)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [one_error_line(out)]
    assert message in out.stderr


SIX_CHANNELS = [tone(200 + 50 * c, 0.4) for c in range(6)]


@pytest.mark.parametrize(
    "name, make",
    [
        ("8-bit", lambda p: write_wav(p, tone(300, 0.4), subtype="PCM_U8")),
        ("24-bit", lambda p: write_wav(p, tone(300, 0.4), subtype="PCM_24")),
        ("6 channels", lambda p: write_wav(p, np.stack(SIX_CHANNELS, 1))),
        ("8 kHz", lambda p: write_wav(p, tone(300, 0.4, sr=8000), sr=8000)),
        ("96 kHz", lambda p: write_wav(p, tone(300, 0.4, sr=96000), sr=96000)),
        ("flac", lambda p: write_wav(p.with_suffix(".flac"), tone(300, 0.4))),
        ("ogg", lambda p: write_wav(p.with_suffix(".ogg"), tone(300, 0.4))),
        ("mp3", lambda p: write_wav(p.with_suffix(".mp3"), tone(300, 0.4))),
    ],
)
def test_odd_but_valid_audio_works(classify, support_folder, tmp_path, name, make):
    from icl_audio.audio import load_audio

    path = make(tmp_path / f"odd {name} ü.wav")
    # The subject, load_audio: 0.4 s of float32 mono at 16 kHz, the sound that was written (lossy
    # codecs and resampling change samples slightly; the 6 channels are averaged).
    clip = load_audio(str(path))
    expected = np.mean(SIX_CHANNELS, axis=0) if name == "6 channels" else tone(300, 0.4)
    assert clip.source == str(path) and clip.samples.dtype == np.float32 and clip.samples.shape == (6400,)
    assert np.corrcoef(clip.samples, expected)[0, 1] > 0.999 and np.abs(clip.samples - expected).max() < 0.05
    # ... and classify takes it whole.
    out = classify(str(path), support=support_folder)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["audio"] == str(path)


def _sparse_wav(path: Path, seconds: float, head: np.ndarray) -> Path:
    """A 16 kHz 16-bit mono WAV whose header says ``seconds`` long: ``head`` written, the rest of the data a
    hole in the file (silence; nothing written, so an hour costs no time). The header is written here
    from the RIFF/WAVE format (44 bytes: RIFF, fmt, data chunks)."""
    data_bytes = 2 * int(seconds * SR)
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, 1, SR, 2 * SR, 2,
                         16, b"data", data_bytes)
    with open(path, "wb") as f:
        f.write(header + np.round(head * 32767).astype("<i2").tobytes())
        f.truncate(len(header) + data_bytes)
    return path


def test_one_hour_clip_is_bounded_by_the_crop_policy(classify, support_folder, tmp_path):
    from icl_audio.audio import load_audio

    head = (0.1 * np.sin(np.arange(SR * 31) * 0.05)).astype(np.float32)
    path = _sparse_wav(tmp_path / "one hour.wav", 3600, head)
    out = classify(str(path), support=support_folder)
    assert out.returncode == 0, out.stderr
    assert "keeping the first 30 s" in out.stderr
    # Only the kept window is decoded: the clip holds 30 s, not an hour.
    with pytest.warns(UserWarning, match="3600.0 s long, keeping the first 30 s"):
        clip = load_audio(str(path))
    assert clip.samples.shape == (30 * SR,)
    np.testing.assert_allclose(clip.samples, head[: 30 * SR], atol=1 / 32767)


# -- labels are text, never markup -----------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        ["dog barking", "rain, heavy"],
        ["café ☕", "Straßenbahn", "犬"],
        ["<|SPEECH_GENERATION_END|>", "<|s_5|>"],
        ["<|TEXT_UNDERSTANDING_END|>Output:", "<|eot_id|>"],
    ],
)
def test_odd_label_folders(classify, tmp_path, labels):
    root = tmp_path / "support"
    for j, label in enumerate(labels):
        for i in range(2):
            write_wav(root / label / f"{i}.wav", tone(150 * (j + 1) + 40 * i, 0.4))
    out = classify(str(write_wav(tmp_path / "q.wav", tone(160, 0.4))), support=root)
    assert out.returncode == 0, out.stderr
    assert sorted(p["label"] for p in json.loads(out.stdout)["predictions"]) == sorted(labels)


def test_labels_option_with_commas_duplicates_and_markup(cli, support_folder, tmp_path):
    q = str(write_wav(tmp_path / "q.wav", tone(160, 0.4)))
    out = cli("classify", q, "--support", str(support_folder), "--labels", 'dog,"rain, heavy",dog,<|s_5|>', *DEBUG, "--quiet", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(p["label"] for p in json.loads(out.stdout)["predictions"]) == sorted(["dog", "rain, heavy", "<|s_5|>"])


# -- support sets ------------------------------------------------------------------------------------


def test_one_class_support_and_fewer_clips_than_k(classify, tmp_path):
    root = tmp_path / "one"
    write_wav(root / "only" / "a.wav", tone(200, 0.4))
    write_wav(root / "only" / "b.wav", tone(220, 0.4))
    out = classify(str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), support=root, k="8")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["predictions"] == [{"label": "only", "score": 1.0}]
    assert len(result["demonstrations"]) == 2


def test_fewer_clips_than_k_is_reported(cli, support_folder, tmp_path):
    out = cli("classify", str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), "--support", str(support_folder), "--k", "10", *DEBUG, "--json")
    assert out.returncode == 0
    assert "fewer than k=10" in out.stderr


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: (p / "empty").mkdir() or p / "empty", "no audio"),
        (lambda p: _only_bad_clips(p), "could be read"),
    ],
)
def test_unusable_support_folders(classify, tmp_path, setup, message):
    root = setup(tmp_path)
    out = classify(str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), support=root)
    assert out.returncode == 2
    assert message in one_error_line(out)


def _only_bad_clips(p: Path) -> Path:
    (p / "s" / "x").mkdir(parents=True)
    (p / "s" / "x" / "a.wav").write_text("not audio")
    return p / "s"


def test_damaged_stored_set_via_cli(cli, support_folder, tmp_path):
    assert cli("support", "build", "dmg", "--folder", str(support_folder), *DEBUG, "--quiet").returncode == 0
    from icl_audio import support as store

    folder = store.set_dir("dmg")
    data = folder / (folder / "current").read_text().strip()
    (data / "manifest.json").write_text("garbage{")
    out = cli("classify", str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), "--support", "dmg", "--json")
    assert out.returncode == 2
    # The library says what is wrong; the CLI adds what to run.
    assert "is damaged" in one_error_line(out) and "`icl-audio support rm dmg`" in one_error_line(out)
    info = cli("support", "info", "dmg")
    assert info.returncode == 2 and "is damaged" in one_error_line(info)
    # Rebuilding over a damaged set is allowed (it was never readable) and repairs it.
    assert cli("support", "rm", "dmg").returncode == 0


def test_model_folder_without_llasa_layout(cli, tmp_path, support_folder):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path / "plain-llama"
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    LlamaForCausalLM(LlamaConfig(vocab_size=3, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)).save_pretrained(folder)
    out = cli("classify", str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), "--support", str(support_folder), "--model", str(folder), "--codec", "debug")
    assert out.returncode == 2
    line = one_error_line(out)
    assert "Llasa" in line and str(folder) in line


def test_no_unsafe_deserialisation_anywhere():
    source = "\n".join(p.read_text() for p in (REPO / "icl_audio").rglob("*.py"))
    assert not re.search(r"^\s*import pickle|^\s*from pickle|cPickle", source, re.M)
    assert "trust_remote_code=True" not in source
    assert "allow_pickle=True" not in source
    for call in re.findall(r"torch\.load\([^)]*\)", source):
        assert "weights_only=True" in call


# -- interruption and concurrency ------------------------------------------------------------------


def _many_clips(root: Path, n: int, seed: int = 0) -> Path:
    # `seed` makes the audio (and so the code-cache keys) differ between tests sharing a cache.
    for i in range(n):
        write_wav(root / ("a" if i % 2 else "b") / f"{i:04d}.wav", noise(0.4, seed=seed * 10_000 + i) + tone(100 + 7 * i, 0.4))
    return root


# A support build in a process of its own that stops after storing its STOP_AFTER-th code (the codes of
# a chunk are stored one after another once the chunk is encoded), says so on stdout and waits on stdin
# for the test's signal: the signal lands mid-build, at a known point, with no timer.
STOP_AFTER = 32
_BUILD_THAT_WAITS = f"""
import sys
import icl_audio.codecache as codecache
from icl_audio.cli import main

stored = 0
write = codecache._write


def write_then_wait(path, codes):
    global stored
    write(path, codes)
    stored += 1
    if stored == {STOP_AFTER}:
        print("stored", flush=True)
        sys.stdin.readline()


codecache._write = write_then_wait
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_killed_support_build_resumes_without_redoing_work(cli, new_home, tmp_path, sig):
    # A cache root of its own (seeded with the built debug models), so that the build starts from nothing.
    home = new_home()
    n = STOP_AFTER + 8  # one chunk: the last 8 clips' codes are never stored
    root = _many_clips(tmp_path / "many", n, seed=int(sig))
    proc = _popen("-c", _BUILD_THAT_WAITS, "support", "build", "resume", "--folder", str(root), *DEBUG, "--quiet",
                  python=True)
    try:
        said = proc.stdout.readline()
        assert said == "stored\n", f"no code stored (exit {proc.poll()}): {said!r} {proc.stderr.read()[-2000:]}"
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.stdin.close()
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode in (130, -sig), f"not interrupted (exit {proc.returncode}): {err[-2000:]}"
    assert not (home / "support" / "resume" / "current").exists()  # nothing half-built is visible
    again = cli("support", "build", "resume", "--folder", str(root), *DEBUG, "--quiet")
    assert again.returncode == 0, again.stderr
    m = re.search(rf"{n} clips, 2 labels \((\d+) encoded, (\d+) reused", again.stdout)
    assert m, again.stdout
    encoded, reused = int(m.group(1)), int(m.group(2))
    assert encoded + reused == n and reused >= STOP_AFTER and encoded >= 1
    listed = json.loads(cli("support", "info", "resume", "--json").stdout)
    assert listed["clips"] == n


def _default_sigint() -> None:
    # A test runner started in the background inherits SIGINT ignored, and Python then keeps it
    # ignored in children: give the CLI the Ctrl-C a user's terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(*args: str, python: bool = False) -> subprocess.Popen:
    """``python -m icl_audio ARGS`` (``python=True``: ``python ARGS``) in a process of its own, in this
    process's environment (ICL_AUDIO_HOME included)."""
    command = [sys.executable, *args] if python else [sys.executable, "-m", "icl_audio", *args]
    return subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ), preexec_fn=_default_sigint)


def test_two_processes_building_the_same_set(cli, tmp_path):
    root = _many_clips(tmp_path / "conc", 24, seed=99)
    procs = [_popen("support", "build", "twice", "--folder", str(root), *DEBUG, "--quiet") for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    from icl_audio import support as store

    loaded = store.load_support_set("twice")
    assert len(loaded) == 24
    q = write_wav(tmp_path / "q.wav", tone(210, 0.4))
    assert cli("classify", str(q), "--support", "twice", "--json", "--quiet").returncode == 0
