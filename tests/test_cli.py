"""The CLI as a user runs it: classify, support sets, errors as one line.

Run in this process (fixture ``cli``) except where the process is the subject: ``--help`` without
torch, and the README's first command printing only the CLI's own lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import astuple
from pathlib import Path

import pytest

from conftest import REPO, tone, write_wav


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m icl_audio ARGS` from the repository in a process of its own, as the console script
    would (for the tests whose subject is the process; the others use the in-process fixture ``cli``)."""
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


def test_classify_json_end_to_end(cli, support_folder, tmp_path):
    query = write_wav(tmp_path / "q uery ☃.wav", tone(120, 0.6))
    out = cli("classify", str(query), "--support", str(support_folder), "--k", "2", "--model", "debug", "--codec", "debug", "--json")
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
    again = cli("classify", str(query), "--support", str(support_folder), "--k", "2", "--model", "debug", "--codec", "debug", "--json")
    assert again.returncode == 0
    assert "0 encoded, 6 from cache" in again.stderr
    assert json.loads(again.stdout) == result


def test_classify_table_labels_top_and_bad_file(cli, support_folder, tmp_path):
    good = write_wav(tmp_path / "good.wav", tone(2500, 0.5))
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    out = cli(
        "classify", str(good), str(bad), "--support", str(support_folder), "--k", "1", "--labels", "bird,low hum,high beep",
        "--top", "2", "--model", "debug", "--codec", "debug", "--quiet",
    )
    # One bad file is reported at the end; the good one is still classified; exit code says some failed.
    assert out.returncode == 1
    assert "good.wav" in out.stdout and "rank" in out.stdout
    assert "bad.wav: cannot read audio" in out.stderr and "1 of 2 inputs failed" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_real_model_offline_is_one_line(cli, support_folder, tmp_path):
    query = write_wav(tmp_path / "q.wav", tone(120, 0.5))
    out = cli("classify", str(query), "--support", str(support_folder), "--codec", "debug", env={"HF_HUB_OFFLINE": "1"})
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "HKUSTAudio/Llasa-1B-Multilingual" in lines[0]
    assert "Traceback" not in out.stderr


def test_support_build_info_list_classify_rm(cli, support_folder, tmp_path):
    build = cli("support", "build", "pets", "--folder", str(support_folder), "--model", "debug", "--codec", "debug", "--quiet")
    assert build.returncode == 0, build.stderr
    assert "built pets: 6 clips, 2 labels" in build.stdout
    info = json.loads(cli("support", "info", "pets", "--json").stdout)
    assert {k: info[k] for k in ("name", "clips", "labels")} == {"name": "pets", "clips": 6, "labels": 2}
    assert info["label_counts"] == {"high beep": 3, "low hum": 3}
    assert set(info) >= {"dataset", "codec", "model", "created"}
    listed = json.loads(cli("support", "list", "--json").stdout)
    assert "pets" in [s["name"] for s in listed]
    # A stored set brings its own model and codec.
    query = write_wav(tmp_path / "q.wav", tone(2000, 0.5))
    out = cli("classify", str(query), "--support", "pets", "--k", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["predictions"]) == 2
    # Mixing in another codec is refused.
    refused = cli("support", "build", "pets", "--folder", str(support_folder), "--model", "debug", "--codec", "other/codec")
    assert refused.returncode == 2 and "refusing to mix" in refused.stderr
    assert cli("support", "rm", "pets").returncode == 0
    assert cli("support", "info", "pets").returncode == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["classify", "examples/query_two.wav", "--support", "esc50", "--model", "debug", "--codec", "debug"], "icl-audio support build esc50 --dataset esc50 --root"),
        (["classify", "examples/query_two.wav", "--support", "/no/such/folder", "--model", "debug", "--codec", "debug"], "no such folder"),
        (["classify", "examples/query_two.wav", "--support", "whatever", "--k", "-1"], "--k must be >= 0"),
        (["support", "build", "bad/name", "--folder", "."], "invalid support set name"),
        (["support", "build", "x", "--dataset", "nope", "--root", "."], "unknown dataset"),
        (["support", "build", "x", "--dataset", "esc50", "--root", "/no/such/root"], "ESC-50"),
        (["support", "info", "never-built"], "no support set named"),
    ],
)
def test_bad_invocations_are_one_line(cli, args, message):
    out = cli(*args)
    assert out.returncode == 2, out
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# -- checks before any model loads, help, quiet output ------------------------------------------


@pytest.fixture
def no_models(cli):
    """Make any model load fail the test: what is checked here must be checked before loading.
    (Patched over the ``cli`` fixture's model sharing, and undone before it.)"""
    import icl_audio.codec
    import icl_audio.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(icl_audio.models, "load_lm", refuse)
        patch.setattr(icl_audio.codec, "load_codec", refuse)
        yield


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mode", "nonsense"], "Invalid value for '--mode': 'nonsense' is not one of 'direct', 'channel'"),
        (["--normalize", "median"], "Invalid value for '--normalize'"),
        (["--template", "no-such-template"], "unknown template 'no-such-template'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--max-context", "3"], "max_context must be an integer >= 16"),
        (["--top", "0"], "--top must be >= 1"),
        (["--labels", " , "], "--labels is empty"),
    ],
)
def test_bad_options_fail_in_one_line_before_models_load(no_models, cli, support_folder, tmp_path, args, message):
    query = str(write_wav(tmp_path / "q.wav", tone(120, 0.3)))
    code, out, err = astuple(cli("classify", query, "--support", str(support_folder), "--model", "debug", "--codec", "debug", *args))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err


def test_missing_input_fails_in_one_line_before_models_load(no_models, cli, support_folder, tmp_path):
    query = str(write_wav(tmp_path / "q.wav", tone(120, 0.3)))
    code, out, err = astuple(cli("classify", query, str(tmp_path / "nope.wav"), "--support", str(support_folder)))
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"error: {tmp_path / 'nope.wav'}: no such file"]
    code, _, err = astuple(cli("classify", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "--support", str(support_folder)))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "2 of 2 inputs cannot be read" in err


def test_a_name_that_is_a_folder_here_and_a_stored_set_is_ambiguous(no_models, cli, support_folder, tmp_path):
    from test_support_store import fake_set

    from icl_audio import support as store

    store.save_support_set("both", fake_set())
    (tmp_path / "both").symlink_to(support_folder, target_is_directory=True)
    query = str(write_wav(tmp_path / "q.wav", tone(120, 0.3)))
    code, _, err = astuple(cli("classify", query, "--support", "both", cwd=tmp_path))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "ambiguous support 'both'" in err and "use ./both for the folder" in err


def test_help_shows_choices_metavars_and_the_install_hint(cli):
    out = cli("classify", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())  # help text is wrapped to the terminal
    for expected in ("<direct|channel>", "<sum|mean>", "auto|cpu|cuda|cuda:N", "--support FOLDER|CSV|hf:ID|NAME", "--k N",
                     "icl-audio[int8]", "[default: HKUSTAudio/Llasa-1B-Multilingual, or the stored set's]"):
        assert expected in text, expected
    assert "<bool>" not in text and "<str>" not in text and "<int>" not in text


def test_cli_choices_match_the_library():
    from icl_audio.cli.classify import MODES, NORMALIZE
    from icl_audio.prompt import MODES as LIB_MODES
    from icl_audio.scoring import NORMALIZE as LIB_NORMALIZE

    assert tuple(MODES) == tuple(LIB_MODES) and tuple(NORMALIZE) == tuple(LIB_NORMALIZE)


def test_normal_runs_print_only_the_clis_own_lines():
    # A process of its own: third-party libraries are imported fresh there, under the CLI's settings.
    # The README's first command (with --json, so that stdout can be parsed).
    out = run_cli("classify", "examples/query_two.wav", "--support", "examples/support", "--k", "2", "--model", "debug",
                  "--codec", "debug", "--json")
    assert out.returncode == 0, out.stderr
    own = ("support: ", "encoding support clips", "encoding queries", "note: ")
    for line in out.stderr.splitlines():
        assert line.strip() == "" or line.startswith(own), f"not the CLI's own line: {line!r}"
    lowered = out.stderr.lower()
    assert "deprecat" not in lowered and "warning" not in lowered and "[transformers]" not in lowered
    result = json.loads(out.stdout)  # stdout holds only the result
    assert result["audio"] == "examples/query_two.wav"
    assert {p["label"] for p in result["predictions"]} == {p.name for p in (REPO / "examples" / "support").iterdir()}


def test_a_long_path_is_printed_whole_on_one_line(cli, support_folder, tmp_path):
    deep = tmp_path / ("a_rather_long_folder_name_" * 3) / ("and_a_long_clip_file_name_" * 3 + "end.wav")
    write_wav(deep, tone(120, 0.4))
    out = cli("classify", str(deep), "--support", str(support_folder), "--k", "1", "--model", "debug", "--codec", "debug", "--quiet",
              env={"COLUMNS": "60"})
    assert out.returncode == 0, out.stderr
    assert len(str(deep)) > 60
    assert str(deep) in out.stdout.splitlines()
