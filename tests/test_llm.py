"""Tests of the LLM stage: Llasa layout, the debug build, loading errors, labels as plain text."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icl_audio.constants import DEBUG_CODEBOOK_SIZE, LLASA_SPECIAL_TOKENS, speech_token
from icl_audio.errors import ModelError

MARKUP_STRINGS = list(LLASA_SPECIAL_TOKENS) + [
    "<|s_0|>", "<|s_5|>", "<|s_255|>", "<|s_256|>", "<|begin_of_text|>", "<|eot_id|>", "<|", "|>", "<|s_",
]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


# --------------------------------------------------------------------------------------------
# layout


def test_debug_layout(debug_lm):
    lm = debug_lm
    tok = lm.tokenizer
    layout = lm.layout
    # Llasa's real layout (the debug model carries the real tokenizer): 65,536 speech tokens from 128264.
    assert (layout.first_speech_id, layout.n_speech, len(tok)) == (128264, 65_536, 193_800)
    assert layout.n_speech >= DEBUG_CODEBOOK_SIZE  # the debug codec's codes all have a token
    for c in (0, 1, 17, DEBUG_CODEBOOK_SIZE - 1, 65_535):
        assert tok.convert_tokens_to_ids(speech_token(c)) == layout.first_speech_id + c
    assert layout.special_ids["<|begin_of_text|>"] == 128000 and layout.special_ids["<|eot_id|>"] == 128009
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (128000, 128009, 128009)
    # The eight Llasa specials, in order, right before <|s_0|>, as in the real tokenizer.
    ids = [layout.special_ids[t] for t in LLASA_SPECIAL_TOKENS]
    assert ids == list(range(layout.first_speech_id - 8, layout.first_speech_id))
    assert layout.first_speech_id + layout.n_speech == len(tok)
    assert lm.model.get_input_embeddings().num_embeddings == len(tok)
    assert lm.model.config.tie_word_embeddings
    assert type(lm.model).__name__ == "LlamaForCausalLM"
    assert lm.model.config.hidden_size == 64 and lm.model.config.num_hidden_layers == 2
    assert (lm.model.config.bos_token_id, lm.model.config.eos_token_id, lm.model.config.pad_token_id) == (
        128000, 128009, 128009)
    assert str(lm.dtype) == "torch.float32"
    assert lm.model_id == "debug" and lm.revision == "debug-v2"


def test_to_ids(debug_lm):
    layout = debug_lm.layout
    codes = np.array([0, 5, 65_535], dtype=np.int32)
    assert layout.to_ids(codes).tolist() == [128264, 128269, 193799]
    assert layout.to_ids(np.zeros(0, dtype=np.int64)).tolist() == []
    with pytest.raises(ModelError) as exc:
        layout.to_ids(np.array([65_536]))
    assert "do not match" in _one_line(exc)
    with pytest.raises(ModelError):
        layout.to_ids(np.array([-1]))
    with pytest.raises(ModelError):
        layout.to_ids(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ModelError):
        layout.to_ids(np.array([0.5]))


class _FakeTokenizer:
    def __init__(self, vocab):
        self.vocab = vocab

    def get_vocab(self):
        return dict(self.vocab)


def _fake_vocab(n_speech=4, gap_at=None, drop=None):
    vocab = {f"t{i}": i for i in range(10)}
    nxt = 10
    for t in LLASA_SPECIAL_TOKENS:
        if t != drop:
            vocab[t] = nxt
        nxt += 1
    for c in range(n_speech):
        if c == gap_at:
            nxt += 1
        vocab[speech_token(c)] = nxt
        nxt += 1
    return vocab


def test_read_layout_checks():
    from icl_audio.llm import read_layout

    layout = read_layout(_FakeTokenizer(_fake_vocab()), "fake")
    assert (layout.first_speech_id, layout.n_speech) == (18, 4)
    with pytest.raises(ModelError) as exc:
        read_layout(_FakeTokenizer(_fake_vocab(gap_at=2)), "gappy")
    assert "gappy is not a Llasa model" in _one_line(exc) and "<|s_2|>" in str(exc.value)
    with pytest.raises(ModelError) as exc:
        read_layout(_FakeTokenizer(_fake_vocab(drop="<|SPEECH_GENERATION_END|>")), "nospecial")
    assert "<|SPEECH_GENERATION_END|>" in _one_line(exc)
    with pytest.raises(ModelError) as exc:
        read_layout(_FakeTokenizer({"a": 0, "b": 1}), "plain")
    assert "plain is not a Llasa model: no <|s_0|> speech tokens" in _one_line(exc)


# --------------------------------------------------------------------------------------------
# debug build


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_debug_build_is_deterministic(new_home, session_models):
    from conftest import DEBUG_LLM_DIR, TOKENIZER_DIR
    from icl_audio.llm import ensure_debug_model

    # A build from nothing in a fresh home, against the session's own build (made independently, in
    # another home, before this test).
    new_home("fresh", seed=())
    a = ensure_debug_model()
    b = session_models / DEBUG_LLM_DIR
    assert a != b and a.name == b.name == "debug-llasa"
    assert _digest(a) == _digest(b)
    # The tokenizer was built independently in each home, to the same bytes too.
    assert _digest(a.parent / "llasa-tokenizer-v1") == _digest(session_models / TOKENIZER_DIR)
    # No temporary build folders are left behind.
    assert sorted(p.name for p in a.parent.iterdir()) == ["debug-llasa", "llasa-tokenizer-v1"]


def test_debug_build_reused_and_repaired(new_home):
    from conftest import DEBUG_LLM_DIR, TOKENIZER_DIR, seed_models
    from icl_audio.llm import ensure_debug_model

    # The session's builds: the tokenizer linked, the model copied (this test damages its files in place).
    seed_models(new_home(seed=(TOKENIZER_DIR,)), (DEBUG_LLM_DIR,), copy=True)
    folder = ensure_debug_model()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_debug_model() == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt
    (folder / "icl_audio_debug.json").unlink()  # e.g. a build interrupted by hand
    (folder / "model.safetensors").write_bytes(b"broken")
    folder = ensure_debug_model()
    assert (folder / "icl_audio_debug.json").is_file()
    assert (folder / "model.safetensors").stat().st_size > 1000


def test_debug_loads_through_folder_path(debug_lm):
    import torch

    from icl_audio.llm import ensure_debug_model, load_lm

    folder = ensure_debug_model()
    lm = load_lm(str(folder), device="cpu", dtype="float32")
    assert (lm.layout.first_speech_id, lm.layout.n_speech) == (debug_lm.layout.first_speech_id, debug_lm.layout.n_speech)
    assert dict(lm.layout.special_ids) == dict(debug_lm.layout.special_ids)
    assert lm.revision.startswith("folder-") and lm.model_id == str(folder.resolve())
    ids = torch.tensor([[1, 2, 3, debug_lm.layout.first_speech_id]])
    with torch.inference_mode():
        assert torch.equal(lm.model(input_ids=ids).logits, debug_lm.model(input_ids=ids).logits)


def test_read_tokenizer_equals_auto_tokenizer(debug_lm, auto_tokenizer):
    """load_lm reads a plain fast tokenizer from tokenizer.json directly: the same tokenizer as AutoTokenizer's
    (``auto_tokenizer``: AutoTokenizer on the debug model's folder)."""
    auto = auto_tokenizer
    ours = debug_lm.tokenizer
    assert ours.get_vocab() == auto.get_vocab()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id", "model_max_length"):
        assert getattr(ours, name) == getattr(auto, name), name
    assert {i: (t.content, t.special) for i, t in ours.added_tokens_decoder.items()} == \
        {i: (t.content, t.special) for i, t in auto.added_tokens_decoder.items()}
    for text in ("Convert the text to speech:", "dog<|s_3|><|eot_id|>", "héllo 42"):
        assert ours(text)["input_ids"] == auto(text)["input_ids"]
        assert ours.decode(ours(text)["input_ids"], skip_special_tokens=True) == \
            auto.decode(auto(text)["input_ids"], skip_special_tokens=True)


def test_read_tokenizer_other_classes_go_through_auto(tmp_path, monkeypatch):
    import json

    import transformers

    from icl_audio.llm import read_tokenizer

    calls = []
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        classmethod(lambda cls, path, **kw: calls.append(path) or "auto"))
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    assert read_tokenizer(tmp_path) == "auto"
    (tmp_path / "tokenizer_config.json").write_text("not json")
    assert read_tokenizer(tmp_path) == "auto" and calls == [str(tmp_path)] * 2


def test_random_lm_real_layout_ids(shared_tokenizer):
    from icl_audio.llm import build_random_lm

    # The speed bench's random model carries the real tokenizer: real ids, real label lengths.
    lm = build_random_lm(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                         head_dim=16, dtype="float32")
    assert lm.model.get_input_embeddings().num_embeddings == len(lm.tokenizer) == 193_800
    assert (lm.layout.first_speech_id, lm.layout.n_speech) == (128264, 65_536)
    assert lm.layout.special_ids["<|TEXT_GENERATION_START|>"] == 128256
    assert lm.text_ids("crackling fire") == lm.tokenizer.encode("crackling fire", add_special_tokens=False)
    with pytest.raises(ValueError):
        build_random_lm(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
                        vocab_size=2000)


# --------------------------------------------------------------------------------------------
# loading errors


def _save_plain_llama(folder: Path) -> Path:
    """A tiny Llama with a plain byte-level tokenizer: no speech tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_tokens(list(pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=None, eos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_refuses_model_without_layout(tmp_path):
    from icl_audio.llm import load_lm

    folder = _save_plain_llama(tmp_path / "plain-llama")
    with pytest.raises(ModelError) as exc:
        load_lm(str(folder), device="cpu")
    msg = _one_line(exc)
    assert "is not a Llasa model: no <|s_0|> speech tokens" in msg and "plain-llama" in msg


def test_missing_model_offline(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    from icl_audio.llm import load_lm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(ModelError) as exc:
        load_lm("llasa-1b", device="cpu")  # alias of HKUSTAudio/Llasa-1B
    msg = _one_line(exc)
    assert "HKUSTAudio/Llasa-1B" in msg
    assert str(tmp_path / "hf-cache") in msg
    assert "--model /path/to/folder" in msg and "hf download HKUSTAudio/Llasa-1B" in msg


def test_missing_folder(tmp_path):
    from icl_audio.llm import load_lm

    with pytest.raises(ModelError) as exc:
        load_lm(str(tmp_path / "no" / "such" / "model"), device="cpu")
    assert "does not exist" in _one_line(exc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError) as exc:
        load_lm(str(tmp_path / "empty"), device="cpu")
    assert "no config.json" in _one_line(exc)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ModelError) as exc:
        load_lm(str(tmp_path / "model.safetensors"), device="cpu")
    assert "is a file" in _one_line(exc)


def test_device_and_dtype_errors():
    import torch

    from icl_audio.llm import cpu_has_fast_bf16, load_lm, resolve_dtype

    if not torch.cuda.is_available():
        with pytest.raises(ModelError) as exc:
            load_lm("debug", device="cuda")
        assert "CUDA is not available" in _one_line(exc)
    with pytest.raises(ModelError):
        load_lm("debug", device="tpu")
    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    assert resolve_dtype("fp32", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ModelError):
        resolve_dtype("int3", cpu)


def test_int8_without_bitsandbytes(monkeypatch):
    from icl_audio.llm import load_lm

    real = importlib.util.find_spec  # bitsandbytes is installed in CI: hide it from the check
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))

    with pytest.raises(ModelError) as exc:
        load_lm("debug", device="cpu", int8=True)
    assert 'pip install "icl-audio[int8]"' in _one_line(exc)


# --------------------------------------------------------------------------------------------
# labels as plain text


def _check_plain(lm, text: str) -> list[int]:
    ids = lm.text_ids(text)
    assert all(lm.is_text_id(i) for i in ids), (text, ids)
    assert not set(ids) & lm.forbidden_text_ids
    assert lm.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == text
    return ids


@pytest.mark.parametrize("text", MARKUP_STRINGS + ["dog <|s_5|> cat", "<|SPEECH_GENERATION_END|><|s_1|>", "x<|eot_id|>"])
def test_markup_in_labels_stays_text(debug_lm, text):
    ids = _check_plain(debug_lm, text)
    assert debug_lm.layout.special_ids.get(text) not in ids
    assert ids  # never swallowed


@pytest.mark.parametrize("text", ["dog", " dog", "crackling fire", "Hello, World!", "héllo 日本語 🎵", "a\nb\tc", "  "])
def test_plain_text_matches_tokenizer(debug_lm, text):
    # Without markup inside, the result is exactly what the tokenizer itself produces.
    assert _check_plain(debug_lm, text) == debug_lm.tokenizer.encode(text, add_special_tokens=False)


def test_text_ids_edge_cases(debug_lm):
    assert debug_lm.text_ids("") == []
    with pytest.raises(TypeError):
        debug_lm.text_ids(b"dog")


_texts = st.lists(st.one_of(st.text(max_size=12), st.sampled_from(MARKUP_STRINGS)), max_size=6).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_texts)
def test_text_ids_property(debug_lm, text):
    _check_plain(debug_lm, text)
