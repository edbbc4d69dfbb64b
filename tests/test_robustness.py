"""Bad input, odd-but-valid input, interruption and concurrency, through the CLI as users meet them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time  # only to wait for a subprocess, never asserted on
from pathlib import Path

import numpy as np
import pytest

from conftest import SR, noise, tone, write_wav
from test_cli import REPO, run_cli

DEBUG = ["--model", "debug", "--codec", "debug"]


def classify(*args: str, support: Path, k: str = "2"):
    return run_cli("classify", *args, "--support", str(support), "--k", k, *DEBUG, "--quiet", "--json")


def one_error_line(out: subprocess.CompletedProcess) -> str:
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


def test_each_bad_audio_file_is_one_line_and_the_rest_still_run(support_folder, tmp_path):
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
def test_inputs_that_are_not_files_fail_before_any_work(support_folder, tmp_path, make, message):
    # Found before any model loads or any clip is encoded: one line, exit 2, no progress lines.
    good = write_wav(tmp_path / "good.wav", tone(140, 0.4))
    out = run_cli("classify", str(good), str(make(tmp_path)), "--support", str(support_folder), *DEBUG)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [one_error_line(out)]
    assert message in out.stderr


@pytest.mark.parametrize(
    "name, make",
    [
        ("8-bit", lambda p: write_wav(p, tone(300, 0.4), subtype="PCM_U8")),
        ("24-bit", lambda p: write_wav(p, tone(300, 0.4), subtype="PCM_24")),
        ("6 channels", lambda p: write_wav(p, np.stack([tone(200 + 50 * c, 0.4) for c in range(6)], 1))),
        ("8 kHz", lambda p: write_wav(p, tone(300, 0.4, sr=8000), sr=8000)),
        ("96 kHz", lambda p: write_wav(p, tone(300, 0.4, sr=96000), sr=96000)),
        ("flac", lambda p: write_wav(p.with_suffix(".flac"), tone(300, 0.4))),
        ("ogg", lambda p: write_wav(p.with_suffix(".ogg"), tone(300, 0.4))),
        ("mp3", lambda p: write_wav(p.with_suffix(".mp3"), tone(300, 0.4))),
    ],
)
def test_odd_but_valid_audio_works(support_folder, tmp_path, name, make):
    path = make(tmp_path / f"odd {name} ü.wav")
    out = classify(str(path), support=support_folder)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["audio"] == str(path)


def test_one_hour_clip_is_bounded_by_the_crop_policy(support_folder, tmp_path):
    import soundfile as sf

    from icl_audio.audio import load_audio

    path = tmp_path / "one hour.wav"
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        block = (0.1 * np.sin(np.arange(SR * 60) * 0.05)).astype(np.float32)
        for _ in range(60):
            f.write(block)
    out = classify(str(path), support=support_folder)
    assert out.returncode == 0, out.stderr
    assert "keeping the first 30 s" in out.stderr
    # Only the kept window is decoded: the clip holds 30 s, not an hour.
    with pytest.warns(UserWarning, match="keeping the first 30 s"):
        assert load_audio(str(path)).samples.shape == (30 * SR,)


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
def test_odd_label_folders(tmp_path, labels):
    root = tmp_path / "support"
    for j, label in enumerate(labels):
        for i in range(2):
            write_wav(root / label / f"{i}.wav", tone(150 * (j + 1) + 40 * i, 0.4))
    out = classify(str(write_wav(tmp_path / "q.wav", tone(160, 0.4))), support=root)
    assert out.returncode == 0, out.stderr
    assert sorted(p["label"] for p in json.loads(out.stdout)["predictions"]) == sorted(labels)


def test_labels_option_with_commas_duplicates_and_markup(support_folder, tmp_path):
    q = str(write_wav(tmp_path / "q.wav", tone(160, 0.4)))
    out = run_cli("classify", q, "--support", str(support_folder), "--labels", 'dog,"rain, heavy",dog,<|s_5|>', *DEBUG, "--quiet", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(p["label"] for p in json.loads(out.stdout)["predictions"]) == sorted(["dog", "rain, heavy", "<|s_5|>"])


# -- support sets ------------------------------------------------------------------------------------


def test_one_class_support_and_fewer_clips_than_k(tmp_path):
    root = tmp_path / "one"
    write_wav(root / "only" / "a.wav", tone(200, 0.4))
    write_wav(root / "only" / "b.wav", tone(220, 0.4))
    out = classify(str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), support=root, k="8")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["predictions"] == [{"label": "only", "score": 1.0}]
    assert len(result["demonstrations"]) == 2


def test_fewer_clips_than_k_is_reported(support_folder, tmp_path):
    out = run_cli("classify", str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), "--support", str(support_folder), "--k", "10", *DEBUG, "--json")
    assert out.returncode == 0
    assert "fewer than k=10" in out.stderr


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: (p / "empty").mkdir() or p / "empty", "no audio"),
        (lambda p: _only_bad_clips(p), "could be read"),
    ],
)
def test_unusable_support_folders(tmp_path, setup, message):
    root = setup(tmp_path)
    out = classify(str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), support=root)
    assert out.returncode == 2
    assert message in one_error_line(out)


def _only_bad_clips(p: Path) -> Path:
    (p / "s" / "x").mkdir(parents=True)
    (p / "s" / "x" / "a.wav").write_text("not audio")
    return p / "s"


def test_damaged_stored_set_via_cli(support_folder, tmp_path):
    assert run_cli("support", "build", "dmg", "--folder", str(support_folder), *DEBUG, "--quiet").returncode == 0
    from icl_audio import support as store

    folder = store.set_dir("dmg")
    data = folder / (folder / "current").read_text().strip()
    (data / "manifest.json").write_text("garbage{")
    out = run_cli("classify", str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), "--support", "dmg", "--json")
    assert out.returncode == 2
    # The library says what is wrong; the CLI adds what to run.
    assert "is damaged" in one_error_line(out) and "`icl-audio support rm dmg`" in one_error_line(out)
    info = run_cli("support", "info", "dmg")
    assert info.returncode == 2 and "is damaged" in one_error_line(info)
    # Rebuilding over a damaged set is allowed (it was never readable) and repairs it.
    assert run_cli("support", "rm", "dmg").returncode == 0


def test_model_folder_without_llasa_layout(tmp_path, support_folder):
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path / "plain-llama"
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    LlamaForCausalLM(LlamaConfig(vocab_size=3, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)).save_pretrained(folder)
    out = run_cli("classify", str(write_wav(tmp_path / "q.wav", tone(210, 0.4))), "--support", str(support_folder), "--model", str(folder), "--codec", "debug")
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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_killed_support_build_resumes_without_redoing_work(tmp_path, sig):
    from icl_audio import paths

    # A cache root of its own (sharing the built debug models), so that watching the code cache
    # for progress is cheap and sees only this build.
    home = tmp_path / "home"
    home.mkdir()
    paths.models_dir().mkdir(parents=True, exist_ok=True)
    (home / "models").symlink_to(paths.models_dir(), target_is_directory=True)
    env = {"ICL_AUDIO_HOME": str(home)}
    n = 480
    root = _many_clips(tmp_path / "many", n, seed=int(sig))
    codes_dir = home / "codes"
    proc = _popen("support", "build", "resume", "--folder", str(root), *DEBUG, "--quiet", env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        # Codes are written a chunk at a time: kill once 32 codes are stored.
        if codes_dir.exists() and sum(1 for p in codes_dir.rglob("*.codes")) >= 32:
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, -sig), f"not interrupted (exit {proc.returncode}): {err[-2000:]}"
    assert not (home / "support" / "resume" / "current").exists()  # nothing half-built is visible
    again = run_cli("support", "build", "resume", "--folder", str(root), *DEBUG, "--quiet", env=env)
    assert again.returncode == 0, again.stderr
    m = re.search(rf"{n} clips, 2 labels \((\d+) encoded, (\d+) reused", again.stdout)
    assert m, again.stdout
    encoded, reused = int(m.group(1)), int(m.group(2))
    assert encoded + reused == n and reused >= 32 and encoded >= 1
    listed = json.loads(run_cli("support", "info", "resume", "--json", env=env).stdout)
    assert listed["clips"] == n


def _default_sigint() -> None:
    # A test runner started in the background inherits SIGINT ignored, and Python then keeps it
    # ignored in children: give the CLI the Ctrl-C a user's terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "icl_audio", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            preexec_fn=_default_sigint)


def test_two_processes_building_the_same_set(tmp_path):
    root = _many_clips(tmp_path / "conc", 24, seed=99)
    procs = [_popen("support", "build", "twice", "--folder", str(root), *DEBUG, "--quiet") for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    from icl_audio import support as store

    loaded = store.load_support_set("twice")
    assert len(loaded) == 24
    q = write_wav(tmp_path / "q.wav", tone(210, 0.4))
    assert run_cli("classify", str(q), "--support", "twice", "--json", "--quiet").returncode == 0
