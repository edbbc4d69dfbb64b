"""Library code leaves process-wide state alone unless asked: the codec's worker threads set their own
thread counts (the caller's stays), malloc is trimmed only after the opt-in, the one crop policy."""

from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest
import torch

from icl_audio import memory


def test_codec_workers_set_their_own_thread_count_and_leave_the_callers(debug_codec, monkeypatch):
    from icl_audio.codec import Codec

    codec = Codec(debug_codec.model, model_id="debug", revision="r", device=torch.device("cpu"))
    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        in_workers, in_caller = [], []
        original = Codec.encode_batch
        monkeypatch.setattr(Codec, "encode_batch", lambda self, clips, **k: in_workers.append(
            (threading.get_ident(), torch.get_num_threads())) or original(self, clips, **k))
        monkeypatch.setattr(Codec, "_parallelism", lambda self, n: (2, 1))
        clips = [np.full(3200 + 320 * i, 0.01 * (i + 1), dtype=np.float32) for i in range(4)]
        codec.encode(clips, progress=lambda n: in_caller.append(torch.get_num_threads()))
        later = []
        thread = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        assert {count for _, count in in_workers} == {1}
        assert threading.get_ident() not in {ident for ident, _ in in_workers}
        assert set(in_caller) == {3} and torch.get_num_threads() == 3
        assert later == [3]  # a thread started afterwards takes the caller's count, not the workers'
    finally:
        torch.set_num_threads(saved)


class _FakeLibc:
    def __init__(self):
        self.trims = 0

    def malloc_trim(self, pad):
        self.trims += 1
        return 1


def test_malloc_is_trimmed_only_after_the_opt_in(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(memory, "_libc", lambda: libc)
    monkeypatch.setattr(memory, "_kept", False)
    assert memory.release_freed_memory() is False and libc.trims == 0  # an API user who did not opt in
    monkeypatch.setattr(memory, "_kept", True)  # what keep_freed_memory records when it takes effect
    assert memory.release_freed_memory() is True and libc.trims == 1


def test_the_cli_opts_in(monkeypatch, capsys):
    from icl_audio import cli

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    try:
        cli.main(["--help"])
    except SystemExit:
        pass
    assert calls == [1] and "Usage" in capsys.readouterr().out


def test_one_crop_policy_the_head(debug_codec):
    from icl_audio import audio, codec, constants
    from icl_audio.codec import Codec

    assert audio.DEFAULT_MAX_SECONDS is constants.DEFAULT_MAX_SECONDS
    assert inspect.signature(Codec).parameters["max_seconds"].default == constants.DEFAULT_MAX_SECONDS
    assert inspect.signature(audio.load_audio).parameters["max_seconds"].default == constants.DEFAULT_MAX_SECONDS
    assert not hasattr(codec, "CROP_POLICIES")
    x = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    short = Codec(debug_codec.model, model_id="debug", revision="r", device=torch.device("cpu"), max_seconds=1.0)
    with pytest.warns(UserWarning, match="keeping the first 1 s"):
        read = audio.load_audio(x, max_seconds=1.0).samples
    np.testing.assert_array_equal(short.prepare(x), read)  # the codec keeps what reading keeps: the head
    np.testing.assert_array_equal(read, x[:16000])
