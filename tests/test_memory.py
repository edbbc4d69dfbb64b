"""The process's memory (icl_audio.memory) and the stages that hand it back: freed memory kept for
reuse within a stage, released between stages, the codec's worker threads kept across calls."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from icl_audio.encoding import stream_codes

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")


def _run(script: str, env_value: str | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "ICL_AUDIO_MALLOC"}
    if env_value:
        env["ICL_AUDIO_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_keep_freed_memory(monkeypatch):
    """The CLI's allocator setting: on Linux with glibc, freed blocks stay with the process, so a
    pass that allocates and frees the same working set again faults no pages in (glibc's default
    trims the freed heap and faults it all in again: ~18,000 faults here); ICL_AUDIO_MALLOC=system opts out."""
    from icl_audio.memory import keep_freed_memory

    monkeypatch.setenv("ICL_AUDIO_MALLOC", "system")
    assert keep_freed_memory() is False
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's malloc only")
    script = (
        "import resource, sys, numpy as np\n"
        "from icl_audio.memory import keep_freed_memory\n"
        "tuned = keep_freed_memory()\n"
        "def work():\n"
        "    blocks = [np.ones(1 << 20) for _ in range(6)]  # six 8 MB blocks, then all freed\n"
        "work()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5):\n"
        "    work()\n"
        "print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )

    def faults(env_value):
        tuned, n = _run(script, env_value)
        return tuned == "True", int(n)

    tuned, n_tuned = faults(None)
    untuned, n_default = faults("system")
    assert tuned and not untuned
    assert n_tuned < 1000 < n_default  # 5 rounds x 48 MB = 61,440 pages if all were faulted in


@linux_only
def test_release_hands_kept_memory_back():
    # 240 MB allocated in blocks below the mmap threshold and freed: kept by the process (that is
    # keep_freed_memory's point), then handed back by release_freed_memory.
    script = (
        "import re, numpy as np\n"
        "from icl_audio.memory import keep_freed_memory, release_freed_memory\n"
        "def rss():\n"
        "    return int(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024\n"
        "keep_freed_memory()\n"
        "base = rss()\n"
        "blocks = [np.ones(1 << 20) for _ in range(30)]\n"
        "del blocks\n"
        "kept = rss() - base\n"
        "released = release_freed_memory()\n"
        "print(kept, rss() - base, released)\n"
    )
    kept, after, released = _run(script)
    assert int(kept) > 200 and int(after) < 40 and released == "True"
    assert _run(script.replace("keep_freed_memory()\n", ""), "system")[2] == "False"  # opted out: nothing done


class _StageCodec:
    """A codec that records the order of stages (encode calls and memory releases)."""

    fingerprint = "stage-codec"

    def __init__(self, events):
        self.events = events

    def prepare(self, clip):
        return np.ascontiguousarray(clip, dtype=np.float32)

    def encode(self, clips, progress=None):
        self.events.append("encode")
        return [np.zeros(len(c) // 320, dtype=np.int64) for c in clips]


def test_the_callers_memory_is_released_before_every_chunk(monkeypatch):
    import icl_audio.encoding as encoding

    events: list[str] = []
    monkeypatch.setattr(encoding, "release_freed_memory", lambda: events.append("release"))
    clips = [np.full(16000, 0.1 * i, dtype=np.float32) for i in range(5)]
    for item in stream_codes(clips, _StageCodec(events), chunk_clips=2):
        events.append("caller")  # the caller's stage (the scorer) runs on each item
    assert events == ["release", "encode", "caller", "caller"] * 2 + ["release", "encode", "caller"]


def test_codec_keeps_its_worker_threads_across_calls(debug_codec, monkeypatch):
    # New threads for every call would inherit other threads' malloc arenas (see Codec._executor).
    seen: list[int] = []
    original = type(debug_codec).encode_batch

    def recording(self, clips, **kwargs):
        seen.append(threading.get_ident())
        return original(self, clips, **kwargs)

    monkeypatch.setattr(type(debug_codec), "encode_batch", recording)
    monkeypatch.setattr(type(debug_codec), "_parallelism", lambda self, n: (2, 1) if n > 1 else (1, 1))
    clips = [np.full(3200 + 320 * i, 0.01 * i, dtype=np.float32) for i in range(6)]
    for _ in range(4):
        debug_codec.encode(clips)
    debug_codec.encode(clips[:1])
    assert len(seen) >= 24 + 1
    assert threading.get_ident() not in seen
    assert len(set(seen[:-1])) <= 2  # the same two workers for every multi-clip call
    again = debug_codec._executor("icl-codec", 2, 1)
    assert again is debug_codec._executor("icl-codec", 2, 1)


def test_scorer_prepare_runs_the_head_once_before_any_score(debug_lm, monkeypatch):
    from icl_audio import engine
    from icl_audio.scoring import Scorer, ScoringOptions

    calls: list[int] = []
    original = engine.token_logprobs
    monkeypatch.setattr(engine, "token_logprobs", lambda *a, **k: calls.append(1) or original(*a, **k))
    monkeypatch.delitem(debug_lm.model.__dict__, engine._PATH_MEMO, raising=False)  # as if this model were new
    scorer = Scorer(debug_lm, ScoringOptions())
    assert scorer.prepare() is scorer and len(calls) == 1
    scorer.prepare()
    assert len(calls) == 1  # once per model
