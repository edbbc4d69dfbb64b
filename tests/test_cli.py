"""The CLI end to end, as a user runs it: classify, support sets, errors as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tone, write_wav

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m icl_audio ARGS` from the repository, as the console script would."""
    return subprocess.run(
        [sys.executable, "-m", "icl_audio", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_help_does_not_import_heavy_libraries():
    # `icl-audio --help` must be instant: the CLI module may not import torch, transformers or faiss.
    code = (
        "import sys; from icl_audio.cli import app; "
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'numpy') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    help_out = run_cli("--help")
    assert help_out.returncode == 0 and "classify" in help_out.stdout


def test_classify_json_end_to_end(support_folder, tmp_path):
    query = write_wav(tmp_path / "q uery ☃.wav", tone(120, 0.6))
    out = run_cli("classify", str(query), "--support", str(support_folder), "--k", "2", "--model", "debug", "--codec", "debug", "--json")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 1
    result = lines[0]
    assert result["audio"] == str(query)
    labels = [p["label"] for p in result["predictions"]]
    assert sorted(labels) == ["high beep", "low hum"]
    scores = [p["score"] for p in result["predictions"]]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4
    assert len(result["demonstrations"]) == 2
    for demo in result["demonstrations"]:
        assert Path(demo["path"]).is_file() and demo["label"] in labels and -1.0 <= demo["similarity"] <= 1.0001
    # The second run reads every code from the cache: nothing is encoded again.
    again = run_cli("classify", str(query), "--support", str(support_folder), "--k", "2", "--model", "debug", "--codec", "debug", "--json")
    assert again.returncode == 0
    assert "0 encoded, 6 from cache" in again.stderr
    assert json.loads(again.stdout) == result


def test_classify_table_labels_top_and_bad_file(support_folder, tmp_path):
    good = write_wav(tmp_path / "good.wav", tone(2500, 0.5))
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    out = run_cli(
        "classify", str(good), str(bad), "--support", str(support_folder), "--k", "1", "--labels", "bird,low hum,high beep",
        "--top", "2", "--model", "debug", "--codec", "debug", "--quiet",
    )
    # One bad file is reported at the end; the good one is still classified; exit code says some failed.
    assert out.returncode == 1
    assert "good.wav" in out.stdout and "rank" in out.stdout
    assert "bad.wav: cannot read audio" in out.stderr and "1 of 2 inputs failed" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_real_model_offline_is_one_line(support_folder, tmp_path):
    query = write_wav(tmp_path / "q.wav", tone(120, 0.5))
    out = run_cli("classify", str(query), "--support", str(support_folder), "--codec", "debug", env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "HKUSTAudio/Llasa-1B-Multilingual" in lines[0]
    assert "Traceback" not in out.stderr


def test_support_build_info_list_classify_rm(support_folder, tmp_path):
    build = run_cli("support", "build", "pets", "--folder", str(support_folder), "--model", "debug", "--codec", "debug", "--quiet")
    assert build.returncode == 0, build.stderr
    assert "built pets: 6 clips, 2 labels" in build.stdout
    info = json.loads(run_cli("support", "info", "pets", "--json").stdout)
    assert {k: info[k] for k in ("name", "clips", "labels")} == {"name": "pets", "clips": 6, "labels": 2}
    assert info["label_counts"] == {"high beep": 3, "low hum": 3}
    assert set(info) >= {"dataset", "codec", "model", "created"}
    listed = json.loads(run_cli("support", "list", "--json").stdout)
    assert "pets" in [s["name"] for s in listed]
    # A stored set brings its own model and codec.
    query = write_wav(tmp_path / "q.wav", tone(2000, 0.5))
    out = run_cli("classify", str(query), "--support", "pets", "--k", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["predictions"]) == 2
    # Mixing in another codec is refused.
    refused = run_cli("support", "build", "pets", "--folder", str(support_folder), "--model", "debug", "--codec", "other/codec")
    assert refused.returncode == 2 and "refusing to mix" in refused.stderr
    assert run_cli("support", "rm", "pets").returncode == 0
    assert run_cli("support", "info", "pets").returncode == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["classify", "x.wav", "--support", "esc50", "--model", "debug", "--codec", "debug"], "icl-audio support build esc50 --dataset esc50 --root"),
        (["classify", "x.wav", "--support", "/no/such/folder", "--model", "debug", "--codec", "debug"], "no such folder"),
        (["classify", "x.wav", "--support", "whatever", "--k", "-1"], "--k must be >= 0"),
        (["support", "build", "bad/name", "--folder", "."], "invalid support set name"),
        (["support", "build", "x", "--dataset", "nope", "--root", "."], "unknown dataset"),
        (["support", "build", "x", "--dataset", "esc50", "--root", "/no/such/root"], "ESC-50"),
        (["support", "info", "never-built"], "no support set named"),
    ],
)
def test_bad_invocations_are_one_line(args, message):
    out = run_cli(*args)
    assert out.returncode == 2, out
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
