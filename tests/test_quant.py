"""8-bit (LLM.int8()) and 4-bit (NF4) LLM weights through the one from_pretrained path: loaded, scored
against the bf16 path within measured tolerances, classified end to end quietly, nothing fetched from
the hub on bitsandbytes' behalf, and one-line errors where a device cannot run them.

Tolerances (measured on the debug model, hidden 64, random weights; label log-probabilities of
-20 to -60 nats): int8 differs from bf16 by at most 0.004 nats, nf4 by at most 0.04 (bf16 itself
differs from fp32 by 0.003). int8 rounds each activation row (from fp16) and each weight row to 127
levels of their absolute maximum; nf4 keeps 16 levels per block of 64 weights, hence ten times the
error. The bounds below keep a 5x margin over what was measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tone, write_wav
from icl_audio.errors import ICLAudioError, ModelError

INT8_TOLERANCE = 0.02
NF4_TOLERANCE = 0.2
LABELS = ["low hum", "high beep", "a dog barking"]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def quantised():
    from icl_audio.models import load_lm

    return {name: load_lm("debug", device="cpu", **kw) for name, kw in
            (("bf16", {"dtype": "bfloat16"}), ("int8", {"quant": "int8"}), ("nf4", {"quant": "nf4"}))}


def _label_scores(lm) -> np.ndarray:
    from icl_audio.engine import loglikelihood
    from icl_audio.prompt import Demo, PromptBuilder

    rng = np.random.default_rng(0)
    demos = [Demo(rng.integers(0, 256, 50), LABELS[i % 2]) for i in range(2)]
    prompt = PromptBuilder(lm, "llasa").build(demos, rng.integers(0, 256, 50), LABELS)
    return np.array([s for s, _ in loglikelihood(lm, list(prompt.prefix), list(prompt.targets),
                                                 hidden_ids=prompt.hidden_ids)])


def test_int8_and_nf4_load_quantised_with_a_chosen_compute_dtype(quantised):
    import bitsandbytes as bnb

    from icl_audio.devices import resolve_dtype

    int8, nf4 = quantised["int8"], quantised["nf4"]
    layer8, layer4 = int8.model.model.layers[0], nf4.model.model.layers[0]
    assert isinstance(layer8.self_attn.q_proj, bnb.nn.Linear8bitLt) and isinstance(layer8.mlp.down_proj, bnb.nn.Linear8bitLt)
    assert isinstance(layer4.self_attn.q_proj, bnb.nn.Linear4bit) and layer4.self_attn.q_proj.weight.quant_type == "nf4"
    # The head stays a plain layer (the scorer reads its weight); the compute dtypes are the stated ones.
    assert type(int8.model.get_output_embeddings()) is torch.nn.Linear
    assert int8.dtype == torch.float16 and nf4.dtype == resolve_dtype(None, torch.device("cpu"))
    assert layer4.self_attn.q_proj.compute_dtype == nf4.dtype


def test_int8_and_nf4_scores_close_to_bf16(quantised):
    bf16 = _label_scores(quantised["bf16"])
    int8 = _label_scores(quantised["int8"])
    nf4 = _label_scores(quantised["nf4"])
    assert np.all(np.isfinite(int8)) and np.all(np.isfinite(nf4))
    assert np.abs(int8 - bf16).max() <= INT8_TOLERANCE, (int8, bf16)
    assert np.abs(nf4 - bf16).max() <= NF4_TOLERANCE, (nf4, bf16)
    # Quantisation changes the scores (it ran), but not by more than the tolerances.
    assert np.abs(nf4 - bf16).max() > 0


@pytest.mark.parametrize("flags", [["--int8"], ["--quant", "nf4"]], ids=["int8", "nf4"])
def test_classify_quantised_end_to_end_is_quiet(flags, tmp_path, capsys):
    import json

    from conftest import run_main as main

    support_folder = tmp_path / "support"
    write_wav(support_folder / "low hum" / "a.wav", tone(110, 0.3))
    write_wav(support_folder / "high beep" / "b.wav", tone(2500, 0.3))
    query = write_wav(tmp_path / "q.wav", tone(120, 0.3))
    code = main(["classify", str(query), "--support", str(support_folder), "--model", "debug", "--codec", "debug",
                 "--device", "cpu", "--quiet", "--json", "--k", "2", *flags])
    out, err = capsys.readouterr()
    assert code == 0 and err == "", err  # no third-party line (cast warnings, kernel look-ups)
    scores = [p["score"] for p in json.loads(out)["predictions"]]
    assert len(scores) == 2 and abs(sum(scores) - 1) < 1e-4


def test_quant_options_and_alias():
    from icl_audio.classifier import ICLClassifier
    from icl_audio.quant import quant_mode

    assert quant_mode(None) is None and quant_mode("INT8") == "int8" and quant_mode(None, int8=True) == "int8"
    assert quant_mode("nf4") == "nf4" and quant_mode("none") is None
    with pytest.raises(ModelError, match="unknown quantisation 'int4': use int8 or nf4"):
        quant_mode("int4")
    with pytest.raises(ModelError, match="both asked for"):
        quant_mode("nf4", int8=True)
    assert ICLClassifier("debug", "debug", int8=True).get_params()["int8"] is True
    with pytest.raises(ICLAudioError, match="unknown quantisation"):
        ICLClassifier("debug", "debug", quant="int4")


def test_nf4_and_int8_device_requirements(monkeypatch):
    """CUDA checks with torch's CUDA functions patched (no GPU here): compute capability, binaries."""
    from icl_audio import quant

    cuda = torch.device("cuda:0")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "Tesla P100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (6, 0))
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    with pytest.raises(ModelError) as exc:
        quant.check_support("int8", cuda)
    assert _one_line(exc) == ("int8 quantisation needs a GPU of compute capability 7.5 or newer; Tesla P100 "
                              "(cuda:0) has 6.0 (nf4 needs 6.0)")
    quant.check_support("nf4", cuda)  # Pascal runs NF4
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (5, 2))
    with pytest.raises(ModelError, match="nf4 quantisation needs a GPU of compute capability 6.0"):
        quant.check_support("nf4", cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (9, 0))
    quant.check_support("int8", cuda)
    monkeypatch.setattr(torch.version, "cuda", "11.2")
    with pytest.raises(ModelError) as exc:
        quant.check_support("int8", cuda)
    assert "bitsandbytes has no binary for CUDA 11.2" in _one_line(exc) and "12.6" in str(exc.value)
    with pytest.raises(ModelError, match="runs on CPU and CUDA GPUs, not on mps"):
        quant.check_support("nf4", torch.device("mps"))
    quant.check_support("int8", torch.device("cpu"))


_IMPORT = ("import sys; sys.path.insert(0, {root!r});"
           "from icl_audio.hf_compat.bitsandbytes import import_bitsandbytes as i; i()")


def test_nothing_fetched_from_the_hub_for_bitsandbytes(tmp_path):
    """A fresh interpreter imports bitsandbytes through icl-audio with the hub pointed at a recording
    stand-in and online: no request at all, nothing on stderr. The control (a plain import, in the
    same conditions) shows the stand-in would have seen bitsandbytes' look-up (kernels' checks of the
    kernels-community publisher) on a CPU that has AVX512-BF16, where bitsandbytes makes it."""
    from hub_standin import StandinHub, serve

    root = str(Path(__file__).resolve().parents[1])
    with serve(StandinHub()) as hub, serve(StandinHub()) as control_hub:
        def run(code: str, url: str) -> subprocess.Popen:
            env = {**os.environ, "HF_ENDPOINT": url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0",
                   "HF_HOME": str(tmp_path / url.rsplit(":", 1)[1]), "ICL_AUDIO_HUB_KERNELS": ""}
            return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)

        # Side by side: each interpreter talks to its own stand-in.
        ours = run(_IMPORT.format(root=root), hub.url)
        plain = run("import bitsandbytes.functional as F; print(bool(F.has_avx512bf16()))", control_hub.url)
        ours_out, ours_err = ours.communicate(timeout=120)
        plain_out, _ = plain.communicate(timeout=120)
    assert ours.returncode == 0 and ours_err == "", ours_err
    assert hub.requests == []
    assert plain.returncode == 0
    if plain_out.strip().endswith("True"):
        assert any("kernels-community" in r.path for r in control_hub.requests), \
            control_hub.requests


def test_quant_bench_measures_a_mode_at_a_tiny_shape():
    """The real-size bench's per-mode measurement (icl_audio.bench.quantization), on a tiny random model."""
    from icl_audio.bench.quantization import measure_mode

    # The debug model's widths: bitsandbytes' CPU 4-bit packing needs layers at least this wide.
    shape = dict(hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=128, head_dim=16,
                 tie_word_embeddings=True)
    from icl_audio.devices import resolve_dtype

    result = measure_mode("nf4", labels=3, k=1, reps=1, model_kwargs=shape)
    assert result["compute_dtype"] == str(resolve_dtype(None, torch.device("cpu"))).replace("torch.", "")
    assert len(result["scores"]) == 3 and all(np.isfinite(result["scores"]))
    assert result["prompt_tokens"] > 250 and result["seconds_per_query"] >= 0
    assert result["load_peak_rss_mb"] > 0 and result["rss_anon_after_load_mb"] > 0


def test_bench_speed_quant_list_compares_modes_and_refuses_unknown_ones(cli, monkeypatch):
    """`bench speed --quant A,B` is the quantisation comparison (fp32 reference, one process per mode):
    routed with the modes asked for, printed one line per mode; a bad mode is one line before any model."""
    from icl_audio.bench import quantization

    asked = {}

    def fake_run(*, labels, k, reps, modes):
        asked.update(labels=labels, k=k, reps=reps, modes=modes)
        row = {"compute_dtype": "bfloat16", "load_peak_rss_mb": 560, "scoring_peak_rss_mb": 3381,
               "seconds_per_query": 9.2, "max_abs_diff_vs_fp32": 0.085, "mean_abs_diff_vs_fp32": 0.034,
               "same_best_label_as_fp32": True}
        ref = {**row, "compute_dtype": "float32"}
        return {"weights": "random (Llasa-1B's shape)", "cpu": "test cpu", "labels": labels, "k": k,
                "modes": {"fp32": ref, **{m: row for m in modes}}}

    monkeypatch.setattr(quantization, "run_quant_bench", fake_run)
    run = cli("bench", "speed", "--quant", "bf16,INT8,int8", "--labels", "5", "--k", "1", "--reps", "1")
    assert run.returncode == 0, run.stderr
    assert asked == {"labels": 5, "k": 1, "reps": 1, "modes": ("bf16", "int8")}
    lines = run.stdout.strip().splitlines()
    assert lines[1].startswith("fp32") and "reference" in lines[1]
    assert lines[2].startswith("bf16") and "max |diff| vs fp32 0.085 nats" in lines[2] and "same best label: yes" in lines[2]

    bad = cli("bench", "speed", "--quant", "bf16,int4")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "error: --quant: unknown mode int4; compare any of fp32, bf16, int8, nf4"]
    bad_single = cli("bench", "speed", "--quant", "int4")
    assert bad_single.returncode != 0 and "unknown quantisation 'int4'" in bad_single.stderr
    assert len(bad_single.stderr.strip().splitlines()) == 1
