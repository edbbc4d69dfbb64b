"""Random-weight models any user can name (random-llasa-1b, random-xcodec2): real shapes, loaded through
the checkpoint path, reported as random. The suite builds them at tiny shapes only."""

from __future__ import annotations

import logging

import pytest

from conftest import tone, write_wav

TINY_SHAPE = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, head_dim=16,
                  tie_word_embeddings=True)


@pytest.fixture
def tiny_random_names(monkeypatch):
    """random-tiny-llasa / random-tiny-xcodec2: the random builds' code path at debug sizes."""
    from icl_audio import codec_debug
    from icl_audio.families import llasa

    monkeypatch.setitem(llasa.RANDOM_LLMS, "random-tiny-llasa", TINY_SHAPE)
    monkeypatch.setitem(codec_debug.RANDOM_CODECS, "random-tiny-xcodec2", codec_debug.debug_config)
    return "random-tiny-llasa", "random-tiny-xcodec2"


def test_real_shape_names_are_llasa_1b_and_xcodec2():
    """Checked against Llasa-1B's published config and XCodec2's codebook, without building anything."""
    from transformers import Xcodec2Config

    from icl_audio.families.llasa import RANDOM_LLMS, llasa_config
    from icl_audio.tokenizer import load_tokenizer

    config = llasa_config(load_tokenizer(), **RANDOM_LLMS["random-llasa-1b"])
    expected = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                "head_dim": 64, "intermediate_size": 8192, "vocab_size": 193_800, "tie_word_embeddings": True,
                "max_position_embeddings": 131072}
    assert {k: getattr(config, k) for k in expected} == expected
    assert config.rope_parameters["rope_theta"] == 500000.0 and config.rope_parameters["factor"] == 32.0
    levels = Xcodec2Config().quantization_levels
    assert int(__import__("numpy").prod(levels)) == 65_536


def test_random_pair_loads_as_a_checkpoint_and_says_so(tiny_random_names, caplog):
    from icl_audio.models import load_pair

    llm, codec = tiny_random_names
    with caplog.at_level(logging.WARNING, logger="icl_audio"):
        pair = load_pair(llm, codec, device="cpu")
    assert pair.random and pair.lm.origin == "random" and pair.lm.model_id == llm
    assert pair.lm.revision.startswith("random-v1-seed0") and pair.codec.revision.startswith("random-v1-seed0")
    assert pair.lm.model.config.hidden_size == 32 and pair.codec.codebook_size == 256
    notes = [r.getMessage() for r in caplog.records if "random weights" in r.getMessage()]
    assert len(notes) == 2 and all(n.startswith("note: ") and "meaningless" in n for n in notes)
    # Saved once: the second load reads the same folder (from_pretrained), same weights.
    again = load_pair(llm, codec, device="cpu")
    a, b = pair.lm.model.model.embed_tokens.weight, again.lm.model.model.embed_tokens.weight
    assert a.data_ptr() != b.data_ptr() and bool((a == b).all())


def test_in_memory_builders():
    from icl_audio.codec_debug import build_random_codec, debug_config

    codec = build_random_codec(debug_config(), device="cpu")
    assert codec.codebook_size == 256 and codec.revision.startswith("random-")
    codes = codec.encode([tone(300, 0.2)])
    assert codes[0].shape == (10,)


def test_classify_with_random_names(tiny_random_names, support_folder, tmp_path, capsys):
    from conftest import run_main as main

    llm, codec = tiny_random_names
    query = write_wav(tmp_path / "q.wav", tone(200, 0.5))
    code = main(["classify", str(query), "--support", str(support_folder), "--model", llm, "--codec", codec,
                 "--device", "cpu", "--quiet", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and '"predictions"' in out
    assert f"note: model {llm} has random weights" in err and f"note: codec {codec} has random weights" in err
