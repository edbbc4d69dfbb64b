"""Shared fixtures: an isolated cache root, the tiny debug models, the in-process CLI, synthetic audio.

- ``debug_lm`` / ``debug_codec``: the debug models, loaded once per session from the session's cache
  root (built there on first use).
- ``cli``: runs ``icl-audio ARGS`` in this process (``icl_audio.cli.main``), handing the session's
  debug models to every ``--model debug`` / ``--codec debug`` load, and undoing what ``main`` changes
  process-wide (environment, warning filters, the SIGTERM handler, the allocator setting).
- ``new_home``: a fresh cache root (ICL_AUDIO_HOME) whose ``models/`` is seeded from the session's
  builds, so that only tests whose subject is a build build anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SR = 16_000
REPO = Path(__file__).resolve().parents[1]

# What the session builds into its cache root's models/ (the names icl_audio gives them).
TOKENIZER_DIR, DEBUG_LLM_DIR, DEBUG_CODEC_DIR = "llasa-tokenizer-v1", "debug-llasa", "debug-xcodec2"


def pytest_configure(config):
    # Every test run gets its own cache root, so nothing of the user's cache is read or written.
    # Set before any icl_audio import looks at it; subprocess CLI tests inherit it.
    if "ICL_AUDIO_HOME" not in os.environ or not os.environ.get("ICL_AUDIO_TEST_KEEP_HOME"):
        import tempfile

        os.environ["ICL_AUDIO_HOME"] = tempfile.mkdtemp(prefix="icl-audio-test-home-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # One intra-op thread (here and in the processes tests start), set before torch is imported: the
    # debug models' operators are tiny, and on a small machine shared with other jobs a second
    # OpenMP thread costs far more in synchronisation than it computes (the linear probe's 4,000
    # training steps: 12.6 s with two threads, 1.9 s with one, on this 2-core machine). The codec's
    # multi-thread paths are tested with two threads explicitly (fixture `two_threads`).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    global _SESSION_HOME
    _SESSION_HOME = os.environ["ICL_AUDIO_HOME"]


_SESSION_HOME = ""


def session_home() -> Path:
    """The cache root this test session set up (tests may point ICL_AUDIO_HOME elsewhere for a while)."""
    return Path(_SESSION_HOME)


@pytest.fixture(autouse=True)
def _forget_support_sets_made_here():
    """Support sets a test stores under the session's cache root are removed after it, so that a name
    one test uses ("pets") never meets another test's set of that name, whatever the order."""
    root = session_home() / "support"
    before = set(os.listdir(root)) if root.is_dir() else set()
    yield
    if root.is_dir():
        for name in set(os.listdir(root)) - before:
            shutil.rmtree(root / name, ignore_errors=True)


# -- synthetic audio ---------------------------------------------------------------------------------


def tone(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.3, phase: float = 0.0) -> np.ndarray:
    """A float32 sine tone."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def noise(seconds: float = 1.0, sr: int = SR, amp: float = 0.1, seed: int = 0) -> np.ndarray:
    """Float32 white noise, reproducible by seed."""
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * sr)))).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    """Write samples to a sound file (format from the suffix), creating parent folders."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, sr, subtype=subtype)
    return path


@pytest.fixture
def support_folder(tmp_path: Path) -> Path:
    """A tiny support folder: two labels ("low hum", "high beep") with three clips each."""
    root = tmp_path / "support"
    for i, f in enumerate((110, 130, 150)):
        write_wav(root / "low hum" / f"low_{i}.wav", tone(f, 0.6, phase=i))
    for i, f in enumerate((2000, 2500, 3000)):
        write_wav(root / "high beep" / f"high_{i}.wav", tone(f, 0.6, phase=i))
    return root


# -- the debug models ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def debug_codec():
    from icl_audio.codec import load_codec

    return load_codec("debug", device="cpu")


@pytest.fixture(scope="session")
def debug_lm():
    from icl_audio.llm import load_lm

    return load_lm("debug", device="cpu")


@pytest.fixture(scope="session")
def session_models(debug_lm, debug_codec) -> Path:
    """The session cache root's ``models/`` folder, holding the tokenizer and both debug builds."""
    from icl_audio.tokenizer import ensure_tokenizer

    ensure_tokenizer()  # made by the debug LLM's build; asked for here because seeding copies it
    models = session_home() / "models"
    assert all((models / name).is_dir() for name in (TOKENIZER_DIR, DEBUG_LLM_DIR, DEBUG_CODEC_DIR))
    return models


@pytest.fixture(scope="session")
def auto_tokenizer(session_models):
    """transformers' ``AutoTokenizer`` reading the debug model's tokenizer files (Llasa's tokenizer, copied
    from the tokenizer build): the reference the fast tokenizer reading is compared with. Read once (it
    copies 65,800 added tokens around: several seconds)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(session_models / DEBUG_LLM_DIR), local_files_only=True)


@pytest.fixture(scope="session")
def llasa_tokenizer(session_models):
    """Llasa's tokenizer as ``load_tokenizer`` gives it, read once."""
    from icl_audio.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture
def shared_tokenizer(llasa_tokenizer, monkeypatch):
    """``load_tokenizer()`` hands back the session's tokenizer (1-2 s a read), for tests about what is
    built with it (random models of the speed bench)."""
    import icl_audio.tokenizer

    monkeypatch.setattr(icl_audio.tokenizer, "load_tokenizer", lambda: llasa_tokenizer)


def _on_this_cpu(kwargs: dict) -> bool:
    import torch

    device = str(kwargs.get("device", "auto"))
    return device == "cpu" or (device == "auto" and not torch.cuda.is_available())


@contextlib.contextmanager
def sharing_debug_models(get_lm, get_codec):
    """While active, ``load_lm("debug")`` / ``load_codec("debug")`` on the CPU with default settings
    return ``get_lm()`` / ``get_codec()`` (the session's models) instead of loading them again (2-4 s a
    load); any other name or setting loads as usual. Loading "debug" itself is tested in test_llm and
    test_codec; the tests using this are about what comes after the load.

    The CLI, the classifier and the bench load through ``icl_audio.models`` (looked up at call time)."""
    import icl_audio.codec
    import icl_audio.models
    from icl_audio.constants import DEFAULT_CODEC, DEFAULT_LLM

    real_lm, real_codec = icl_audio.models.load_lm, icl_audio.codec.load_codec

    def load_lm(name=DEFAULT_LLM, **kwargs):
        plain = not kwargs.get("int8") and not kwargs.get("quant") and kwargs.get("dtype") is None \
            and kwargs.get("check_weights", True)
        return get_lm() if name == "debug" and plain and _on_this_cpu(kwargs) else real_lm(name, **kwargs)

    def load_codec(name=DEFAULT_CODEC, **kwargs):
        plain = set(kwargs) <= {"device", "check_weights"} and kwargs.get("check_weights", True)
        return get_codec() if name == "debug" and plain and _on_this_cpu(kwargs) else real_codec(name, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        # models.load_pair / ICLClassifier call models.load_lm, and models.load_codec calls codec.load_codec,
        # each looked up when called.
        patch.setattr(icl_audio.models, "load_lm", load_lm)
        patch.setattr(icl_audio.codec, "load_codec", load_codec)
        yield


@pytest.fixture
def shared_debug_models(debug_lm, debug_codec):
    """``sharing_debug_models`` with the session's models, for one test."""
    with sharing_debug_models(lambda: debug_lm, lambda: debug_codec):
        yield


@pytest.fixture
def two_threads():
    """Two intra-op torch threads for one test (the suite runs with one: see pytest_configure), so that
    the codec's multi-thread paths (workers, a clip's two branches side by side) run."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


# -- the CLI in this process ------------------------------------------------------------------------


@dataclass(frozen=True)
class CliRun:
    """What a CLI run gave: the exit code and what it printed (as ``subprocess.CompletedProcess`` names them)."""

    returncode: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def isolated_cli_state(env: dict | None = None, cwd: Path | None = None):
    """Run a block (a ``main([...])`` call) with ``env`` added and in ``cwd``, then put back what ``main``
    changes process-wide: the environment (quiet_third_parties' settings, ICL_AUDIO_DEBUG), the warning
    filters and ``warnings.showwarning``, the SIGTERM handler. The allocator setting main makes
    (``keep_freed_memory``) is skipped: it would last for the rest of the test process."""
    import icl_audio.memory

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    saved_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
            patch.setattr(icl_audio.memory, "keep_freed_memory", lambda: False)
            os.environ.update({k: str(v) for k, v in (env or {}).items()})
            if cwd is not None:
                os.chdir(cwd)
            yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGTERM, saved_sigterm)


def run_main(args) -> int:
    """``icl_audio.cli.main(args)`` in this process, with what it changes process-wide put back after
    (:func:`isolated_cli_state`), for tests that read its output with ``capsys`` themselves."""
    from icl_audio.cli import main

    with isolated_cli_state():
        return main([str(a) for a in args])


@pytest.fixture
def cli(capsys, shared_debug_models):
    """``cli(*args, env=None, cwd=REPO) -> CliRun``: ``icl-audio ARGS`` run in this process, as the console
    script runs it (exit code returned, one-line errors on stderr, results on stdout). What the test
    printed before the call is not part of the run's output."""
    from icl_audio.cli import main

    def run(*args, env: dict | None = None, cwd: Path | None = REPO) -> CliRun:
        capsys.readouterr()
        with isolated_cli_state(env, cwd):
            code = main([str(a) for a in args])
        out = capsys.readouterr()
        return CliRun(code, out.out, out.err)

    return run


def interrupted_bench(cfg, after: int) -> list[Path]:
    """``run_bench(cfg)`` stopped after ``after`` prediction lines, as a Ctrl-C would stop it; returns
    rank 0's prediction files (asserting that they hold exactly those lines)."""
    from icl_audio.bench.arch import run_bench

    class Stop(Exception):
        pass

    seen: list[str] = []

    def interrupt(run, query):
        seen.append(run.name)
        if len(seen) == after:
            raise Stop

    with pytest.raises(Stop):
        run_bench(cfg, on_prediction=interrupt)
    partial = list((cfg.out / "predictions" / "rank0").glob("*.jsonl"))
    assert sum(len(p.read_text().splitlines()) for p in partial) == after
    return partial


# -- fresh cache roots ----------------------------------------------------------------------------


def seed_models(home: Path, names=(TOKENIZER_DIR, DEBUG_LLM_DIR, DEBUG_CODEC_DIR), *, copy: bool = False) -> Path:
    """Give cache root ``home`` the session's built ``names`` (folders of models/): hard links (a few
    milliseconds; builds replace folders, never write into them), or copies with ``copy=True`` for a
    test that damages the files in place. Returns ``home``."""
    source = session_home() / "models"
    for name in names:
        target = home / "models" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copytree(source / name, target)
            continue
        try:
            shutil.copytree(source / name, target, copy_function=os.link)
        except OSError:  # another file system: no hard links
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source / name, target)
    return home


@pytest.fixture
def new_home(tmp_path, monkeypatch, session_models):
    """``new_home(name="home", seed=(...all three...), copy=False) -> Path``: a fresh cache root, made
    the current one (ICL_AUDIO_HOME) until the test ends, its models/ seeded from the session's builds
    (``seed=()``: empty)."""

    def make(name: str = "home", seed=(TOKENIZER_DIR, DEBUG_LLM_DIR, DEBUG_CODEC_DIR), copy: bool = False) -> Path:
        home = tmp_path / name
        home.mkdir()
        seed_models(home, seed, copy=copy)
        monkeypatch.setenv("ICL_AUDIO_HOME", str(home))
        return home

    return make
