"""`icl-audio bench memory`: the peak of every stage, measured from the kernel's high-water mark, per
support-set size (debug models here; the real shapes are the default)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from icl_audio.bench import memory as bench_memory
from icl_audio.bench.memory import BUILD_STAGES, STAGES, MemoryBenchConfig, PeakMeter, format_table

SMALL = dict(seconds=0.4, labels=3, k=1, model="debug", codec="debug")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the high-water mark is reset through /proc")
def test_a_short_spike_inside_a_stage_is_its_peak():
    meter = PeakMeter()
    assert meter.method == "vmhwm-reset"
    figures: dict = {}

    def spike():
        block = np.ones(25_000_000)  # 200 MB, freed before the stage ends
        return float(block[-1])

    meter.measure("spike", spike, figures)
    meter.measure("quiet", lambda: None, figures)
    assert figures["spike"]["peak_above_before_mb"] > 150
    assert figures["spike"]["rss_after_mb"] < figures["spike"]["peak_mb"] - 150
    assert figures["quiet"]["peak_above_before_mb"] < 50  # the spike's mark was reset before this stage


@pytest.fixture
def loaded_models(monkeypatch, debug_lm, debug_codec):
    """The builders hand out the session's debug models (a real run loads them in each process)."""
    monkeypatch.setattr(bench_memory, "build_llm", lambda name, **options: debug_lm)
    monkeypatch.setattr(bench_memory, "build_codec", lambda name: debug_codec)


@pytest.mark.usefixtures("loaded_models")
def test_every_stage_per_size_through_the_cli(monkeypatch, capsys):
    from icl_audio.cli import main

    # Each size runs in a child process in a real run; in-process here (the child is tested below).
    monkeypatch.setattr(bench_memory, "_measure_in_child", bench_memory.measure_stages)
    assert main(["bench", "memory", "--model", "debug", "--codec", "debug", "--clips", "3,1", "--seconds", "0.4",
                 "--labels", "3", "--k", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "debug" and list(result["sizes"]) == ["1", "3"]
    for size in result["sizes"].values():
        assert list(size["stages"]) == list(STAGES)
        for stage in size["stages"].values():
            assert stage["peak_mb"] >= stage["rss_before_mb"] - 1 and stage["peak_mb"] >= stage["rss_after_mb"] - 1
        assert size["build_peak_mb"] == max(size["stages"][s]["peak_mb"] for s in BUILD_STAGES)
        assert size["codes_per_clip"] == 0.4 * 50
    assert result["build_peak_growth_mb"] == pytest.approx(
        result["sizes"]["3"]["build_peak_mb"] - result["sizes"]["1"]["build_peak_mb"], abs=0.11)
    table = format_table(result)
    assert all(stage in table for stage in STAGES) and "build peak growth, 1 -> 3 clips" in table
    assert main(["bench", "memory", "--clips", "0"]) != 0
    err = capsys.readouterr().err
    assert "support sizes" in err and len(err.strip().splitlines()) == 1


@pytest.mark.usefixtures("loaded_models")
def test_the_child_process_protocol(monkeypatch, capsys):
    """What a child reads (the request on stdin) and writes (one JSON line), run in-process here."""
    import io
    import subprocess

    def run_child(argv, input, stdout, text, check):
        assert argv[1:] == ["-m", "icl_audio.bench.memory"]
        monkeypatch.setattr(sys, "stdin", io.StringIO(input))
        bench_memory._child_main()
        return subprocess.CompletedProcess(argv, 0, stdout=capsys.readouterr().out)

    monkeypatch.setattr(bench_memory.subprocess, "run", run_child)
    out = bench_memory._measure_in_child(MemoryBenchConfig(clips=(1,), **SMALL), 1)
    assert out["clips"] == 1 and list(out["stages"]) == list(STAGES)
