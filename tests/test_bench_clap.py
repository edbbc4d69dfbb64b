"""The clap-zero-shot baseline through the real from_pretrained path, on a tiny random CLAP built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import tone, write_wav
from fixtures_datasets import make_esc50_tree
from icl_audio.bench.arch import run_bench
from icl_audio.bench.config import BenchConfig
from icl_audio.bench.clap import CLAP_TEMPLATE, ClapZeroShot
from icl_audio.errors import ModelError

LABELS = ["dog", "rain", "car horn"]


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory) -> Path:
    """A random CLAP (HTSAT audio tower, RoBERTa text tower) with a 60-token byte-level tokenizer,
    saved as model + processor (feature extractor + tokenizer) like a hub checkpoint."""
    import torch
    from transformers import (ClapAudioConfig, ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor,
                              ClapTextConfig, RobertaTokenizerFast)

    folder = tmp_path_factory.mktemp("tiny-clap")
    words = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + list("abcdefghijklmnopqrstuvwxyzT.") + \
        ["Ġ" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    (folder / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    audio = ClapAudioConfig(patch_embeds_hidden_size=8, hidden_size=64, depths=[1, 1, 1, 1],
                            num_attention_heads=[1, 1, 1, 1], projection_dim=16)
    text = ClapTextConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=1,
                          intermediate_size=32, max_position_embeddings=64, projection_dim=16)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16))
    out = folder / "model"
    model.save_pretrained(out)
    # The unfused LAION checkpoints crop long clips at random ("rand_trunc") and repeat-pad short ones.
    ClapProcessor(feature_extractor=ClapFeatureExtractor(truncation="rand_trunc"), tokenizer=tokenizer).save_pretrained(out)
    return out


def test_ranks_labels_like_clap_itself(tiny_clap, tmp_path):
    import soundfile as sf
    import soxr
    import torch
    from transformers import ClapModel, ClapProcessor

    a = write_wav(tmp_path / "a.wav", tone(440, 1.0))
    b = tmp_path / "b.wav"
    sf.write(str(b), tone(1000, 2.0, sr=44_100, amp=0.5), 44_100)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....not audio")
    clap = ClapZeroShot(str(tiny_clap), device="cpu")
    got = clap.rank_files([a, broken, b], LABELS, max_seconds=5.0)
    assert isinstance(got[1], str) and "broken.wav" in got[1]
    for ranked in (got[0], got[2]):
        assert sorted(l for l, _ in ranked) == sorted(LABELS)
        assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
        assert sum(s for _, s in ranked) == pytest.approx(1.0)

    # Reference: CLAP's own forward (logits_per_audio, softmax over the texts) on the same 48 kHz audio.
    model, processor = ClapModel.from_pretrained(tiny_clap).eval(), ClapProcessor.from_pretrained(tiny_clap)
    audio = [soxr.resample(sf.read(str(p), dtype="float32")[0], rate, 48_000) for p, rate in ((a, 16_000), (b, 44_100))]
    texts = processor.tokenizer([f"This is a sound of {l}." for l in LABELS], return_tensors="pt", padding=True)
    feats = processor.feature_extractor(audio, sampling_rate=48_000, return_tensors="pt")
    with torch.inference_mode():
        probs = model(**texts, **feats).logits_per_audio.softmax(-1).numpy()
    for ranked, row in zip((got[0], got[2]), probs):
        assert dict(ranked) == pytest.approx(dict(zip(LABELS, row.tolist())), abs=1e-5)
    assert CLAP_TEMPLATE.format(label="dog") == "This is a sound of dog."


def test_multi_label_scores_are_similarities(tiny_clap, tmp_path):
    clap = ClapZeroShot(str(tiny_clap), device="cpu")
    scores = clap.scores([tone(300, 1.0, sr=48_000)], LABELS, multi_label=True)
    assert scores.shape == (1, 3) and (np.abs(scores) <= 1 + 1e-6).all()
    assert scores.sum() != pytest.approx(1.0)


def test_missing_model_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match=r"CLAP model laion/clap-nope is not in the Hugging Face cache .* offline .*"
                                         r"`hf download laion/clap-nope`.* --clap-model"):
        ClapZeroShot("laion/clap-nope", device="cpu")
    with pytest.raises(ModelError, match="does not exist"):
        ClapZeroShot(str(tmp_path / "nowhere") + "/", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        ClapZeroShot(str(tmp_path / "empty"), device="cpu")


def test_bench_runs_clap_beside_the_others(tiny_clap, tmp_path, cli):
    tree = make_esc50_tree(tmp_path / "esc50", folds=2)
    out = tmp_path / "out"
    outcome = run_bench(BenchConfig("esc50", tree, ks=(1,), modes=("direct",), methods=("knn", "clap-zero-shot"),
                                    model="debug", codec="debug", out=out, clap_model=str(tiny_clap)))
    runs = outcome.results["runs"]
    assert {r["method"] for r in runs} == {"knn", "clap-zero-shot", "linear-probe"}
    clap_runs = [r for r in runs if r["method"] == "clap-zero-shot"]
    assert len(clap_runs) == 2 and all(r["n_queries"] == 3 and 0 <= r["accuracy"] <= 1 for r in clap_runs)
    assert outcome.results["config"]["clap_model"] == str(tiny_clap)
    line = json.loads((out / "predictions" / "fold1.clap-zero-shot.jsonl").read_text().splitlines()[0])
    assert len(line["ranked"]) == 3 and line["demonstrations"] == []
    assert "clap-zero-shot" in (out / "results.md").read_text()
    # A missing CLAP model fails in one line, before any model is loaded.
    run = cli("bench", "esc50", "--root", str(tree), "--methods", "clap-zero-shot", "--clap-model",
              str(tmp_path / "no" / "clap") + "/", "--model", "debug", "--codec", "debug", "--quiet", "--out", str(tmp_path / "x"))
    err = run.stderr.strip()
    assert run.returncode == 2 and err.startswith("error: CLAP model folder") and len(err.splitlines()) == 1
