"""`icl-audio prompt`: what the model is fed, on classify's code path (the CLI in this process)."""

from __future__ import annotations

import json

import soundfile as sf

from conftest import tone, write_wav
from icl_audio.cli.prompt import abbreviate_speech


def test_abbreviate_speech():
    assert abbreviate_speech("a<|s_1|><|s_22|><|s_3|>b<|s_4|>") == "a<|s_×3|>b<|s_×1|>"


def test_prompt_json_channel_is_the_training_format(cli, tmp_path, support_folder):
    query = write_wav(tmp_path / "q.wav", tone(440, 0.57))
    n = sf.info(str(query)).frames
    proc = cli("prompt", str(query), "--support", str(support_folder), "--k", "2", "--mode", "channel",
               "--model", "debug", "--codec", "debug", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert record["audio"] == str(query) and len(record["demonstrations"]) == 2
    assert record["prompt_ids"][:2] == [128000, 128006] and record["hidden_ids"] == [128009]
    assert {c["label"] for c in record["candidates"]} == {"low hum", "high beep"}
    for c in record["candidates"]:
        scored = c["ids"][c["scored_from"]:]
        # the query's n // 320 speech tokens, then <|SPEECH_GENERATION_END|>
        assert len(scored) == n // 320 + 1 and scored[-1] == 128261
        assert all(128264 <= t < 128264 + 65536 for t in scored[:-1])
        assert c["ids"][c["scored_from"] - 1] == 128260  # <|SPEECH_GENERATION_START|>


def test_prompt_bad_mode_fails_in_one_line(cli, tmp_path, support_folder):
    query = write_wav(tmp_path / "q.wav", tone(440, 0.5))
    proc = cli("prompt", str(query), "--support", str(support_folder), "--mode", "sideways")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
