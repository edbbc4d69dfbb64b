"""Loading refuses weights that do not fit the architecture (renamed, missing, reshaped tensors) for
the LLM and the codec, in one line; intact and tied checkpoints load; the opt-out loads with a warning."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from icl_audio.errors import ModelError


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def _edit_weights(folder: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def _rename(old: str, new: str):
    return lambda t: t.__setitem__(new, t.pop(old))


@pytest.fixture(scope="module")
def llm_copy(tmp_path_factory):
    from icl_audio.families.llasa import ensure_debug_model

    return lambda name: Path(shutil.copytree(ensure_debug_model(), tmp_path_factory.mktemp("llm") / name))


@pytest.fixture(scope="module")
def codec_copy(tmp_path_factory):
    from icl_audio.codec import ensure_debug_codec

    return lambda name: Path(shutil.copytree(ensure_debug_codec(), tmp_path_factory.mktemp("codec") / name))


def test_llm_with_a_renamed_tensor_is_refused(llm_copy, caplog):
    from icl_audio.models import load_lm

    folder = llm_copy("renamed")
    _edit_weights(folder, _rename("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.query.weight"))
    with pytest.raises(ModelError) as exc:
        load_lm(str(folder), device="cpu")
    msg = _one_line(exc)
    assert f"the weights in {folder.resolve()} do not fit LLM {folder.resolve()}" in msg
    assert "1 missing (model.layers.0.self_attn.q_proj.weight)" in msg
    assert "1 unexpected (model.layers.0.self_attn.query.weight)" in msg and "--no-weight-check" in msg
    # The opt-out loads it, and still names the keys.
    with caplog.at_level(logging.WARNING, logger="icl_audio"):
        lm = load_lm(str(folder), device="cpu", check_weights=False)
    assert lm.model is not None
    assert any("model.layers.0.self_attn.query.weight" in r.getMessage() and "loaded anyway" in r.getMessage()
               for r in caplog.records)


def test_codec_with_a_renamed_tensor_is_refused(codec_copy):
    from icl_audio.models import load_codec

    folder = codec_copy("renamed")

    def edit(t):
        name = next(k for k in t if k.startswith("acoustic_encoder.") and k.endswith(".weight"))
        t[name.replace("acoustic_encoder.", "acoustic_encoder_v0.")] = t.pop(name)

    _edit_weights(folder, edit)
    with pytest.raises(ModelError) as exc:
        load_codec(str(folder), device="cpu")
    msg = _one_line(exc)
    assert "do not fit codec" in msg and "1 missing (acoustic_encoder." in msg and "1 unexpected (acoustic_encoder_v0." in msg


def test_reshaped_and_missing_tensors_counted(llm_copy):
    import torch

    from icl_audio.models import load_lm

    folder = llm_copy("reshaped")

    def edit(t):
        t["model.norm.weight"] = torch.ones(63)
        for i in range(2):
            for name in ("k_proj", "v_proj"):
                t.pop(f"model.layers.{i}.self_attn.{name}.weight")

    _edit_weights(folder, edit)
    with pytest.raises(ModelError) as exc:
        load_lm(str(folder), device="cpu")
    msg = _one_line(exc)
    assert "4 missing (model.layers.0.self_attn.k_proj.weight, model.layers.0.self_attn.v_proj.weight, " \
           "model.layers.1.self_attn.k_proj.weight, ...)" in msg
    assert "1 of another shape (model.norm.weight (63,) vs (64,))" in msg


def test_intact_and_tied_checkpoints_load(llm_copy, codec_copy, debug_lm):
    """The debug LLM is tied: its checkpoint has no lm_head, and loads. The same folder declared untied
    fails on exactly that key, so the tied exemption is what lets it pass."""
    from safetensors import safe_open

    from icl_audio.models import load_codec, load_lm

    folder = llm_copy("tied")
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in set(f.keys())
    # debug_lm was loaded from this very checkpoint through the same path, weight check on.
    model = debug_lm.model
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert load_codec(str(codec_copy("intact")), device="cpu").codebook_size == 256
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    with pytest.raises(ModelError) as exc:
        load_lm(str(folder), device="cpu")
    assert "1 missing (lm_head.weight)" in _one_line(exc)


def test_cli_refuses_a_renamed_codec_in_one_line(codec_copy, support_folder, tmp_path, capsys):
    from conftest import tone, write_wav
    from conftest import run_main as main

    folder = codec_copy("cli-renamed")
    _edit_weights(folder, _rename("quantizer.project_in.weight", "quantizer.proj_in.weight"))
    query = write_wav(tmp_path / "q.wav", tone(200, 0.5))
    code = main(["classify", str(query), "--support", str(support_folder), "--model", "debug", "--codec", str(folder),
                 "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: the weights in") and "quantizer.proj_in.weight" in err[0]
