"""Llasa's tokenizer built from Llama-3's ranks: the layout, and the text ids against independent references."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icl_audio.constants import LLASA_SPECIAL_TOKENS
from icl_audio.errors import ModelError


@pytest.fixture(scope="module")
def tok():
    from icl_audio.tokenizer import load_tokenizer

    return load_tokenizer()


def _ranks_path() -> Path:
    # Located here by hand (not through icl_audio), without importing llama_models.
    (root,) = importlib.util.find_spec("llama_models").submodule_search_locations
    return Path(root) / "llama3" / "tokenizer.model"


@pytest.fixture(scope="module")
def reference():
    """Llama-3's text encoding written independently from the documented format: a tiktoken Encoding over
    the ranks file (one ``base64 rank`` line per token) with Llama-3's split pattern, no special tokens."""
    import tiktoken

    ranks = {}
    for line in _ranks_path().read_text().splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    return tiktoken.Encoding(name="llama3-reference", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


# --------------------------------------------------------------------------------------------
# layout


def test_layout(tok):
    assert len(tok) == 193_800
    ids = tok.convert_tokens_to_ids
    expected = {
        "<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|reserved_special_token_0|>": 128002,
        "<|reserved_special_token_1|>": 128003, "<|finetune_right_pad_id|>": 128004,
        "<|reserved_special_token_2|>": 128005, "<|start_header_id|>": 128006, "<|end_header_id|>": 128007,
        "<|eom_id|>": 128008, "<|eot_id|>": 128009, "<|python_tag|>": 128010,
        "<|reserved_special_token_3|>": 128011, "<|reserved_special_token_247|>": 128255,
        "<|s_0|>": 128264, "<|s_1|>": 128265, "<|s_65535|>": 193799,
    }
    expected.update({t: 128256 + i for i, t in enumerate(LLASA_SPECIAL_TOKENS)})
    assert {t: ids(t) for t in expected} == expected
    # All 256 Llama-3.2 specials are special; reserved ones run 3..247 over the unnamed ids.
    reserved = [128002, 128003, 128005] + list(range(128011, 128256))
    assert tok.convert_ids_to_tokens(reserved) == [f"<|reserved_special_token_{i}|>" for i in range(248)]
    # Speech tokens: contiguous, and every one of them present.
    vocab = tok.get_vocab()
    assert [vocab[f"<|s_{c}|>"] for c in range(65_536)] == list(range(128264, 193800))
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (128000, 128009, 128009)


def test_llama_models_agrees_on_named_ids(tok):
    """llama_models' own list (read from its source, not imported) puts every named token at our id."""
    import re

    source = (_ranks_path().parent / "tokenizer.py").read_text()
    listed = re.search(r"special_tokens = \[(.*?)\]", source, re.S).group(1)
    names = re.findall(r'"(<\|[^"]+\|>)"', listed)
    assert names[0] == "<|begin_of_text|>" and "<|eot_id|>" in names
    for offset, name in enumerate(names):
        if name in ("<|step_id|>", "<|image|>") or name.startswith("<|reserved"):
            continue  # Llama-3.2-Vision names for ids the text models keep reserved
        assert tok.convert_tokens_to_ids(name) == 128000 + offset, name


def test_specials_and_speech_tokens(tok):
    ids = tok("dog")["input_ids"]
    assert ids[0] == 128000 and ids[1:] == tok.encode("dog", add_special_tokens=False)  # BOS, as Llama-3.2
    # Speech tokens are ordinary added tokens: skip_special_tokens keeps them, drops the specials.
    mixed = [128000, 128260, 128264, 193799, 128261, 128009]
    assert tok.decode(mixed, skip_special_tokens=True) == "<|s_0|><|s_65535|>"
    assert tok.decode(mixed) == "<|begin_of_text|><|SPEECH_GENERATION_START|><|s_0|><|s_65535|><|SPEECH_GENERATION_END|><|eot_id|>"
    # Written as markup, added tokens are matched whole (the prompt builder never relies on it).
    assert tok.encode("<|SPEECH_GENERATION_START|><|s_7|>", add_special_tokens=False) == [128260, 128271]


# --------------------------------------------------------------------------------------------
# text ids against independent references

TEXTS = [
    "dog", " dog", "crackling fire", "chirping birds", "vacuum cleaner", "glass breaking", "clock tick",
    "door wood knock", "hand saw", "Dog Barking", "rooster", "sneezing", "church bells",
    "Convert the text to speech:",
    "\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n",
    "héllo wörld", "日本語のテキスト", "🎵🐶 emoji", "Ελληνικά", "naïve café",
    "0", "42", "1234567", "3.14159", "2024-07-26", "$1,000.00",
    "  leading", "trailing   ", "a\tb", "\n", "\r\n\r\n", " \n \n", "line one\nline two\n\n\nthree",
    "don't we'LL it's", "Hello, World!", "<|s_5|>", "<|eot_id|>", "x<|SPEECH_GENERATION_END|>y", "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_matches_tiktoken_reference(tok, reference, text):
    expected = reference.encode_ordinary(text)
    if "<|" not in text:  # no markup inside: the tokenizer itself agrees
        assert tok.encode(text, add_special_tokens=False) == expected
    assert _plain(tok).text_ids(text) == expected  # labels as plain text, markup or not
    assert tok.decode(expected, clean_up_tokenization_spaces=False) == text


def test_llama_models_expected_encodings(tok):
    """The encodings in llama_models' own tests (llama3/tests/api/test_tokenizer.py)."""
    assert tok("This is a test sentence.")["input_ids"] == [128000, 2028, 374, 264, 1296, 11914, 13]
    assert tok.encode("<|start_header_id|>user<|end_header_id|>\n\nThis is a test sentence.<|eot_id|>",
                      add_special_tokens=False) == [128006, 882, 128007, 271, 2028, 374, 264, 1296, 11914, 13, 128009]
    assert tok.encode("system", add_special_tokens=False) == [9125]
    assert tok.encode("assistant", add_special_tokens=False) == [78191]
    assert tok.encode("This is a response.", add_special_tokens=False) == [2028, 374, 264, 2077, 13]


_plain_lm = {}


def _plain(tok):
    """A LanguageModel without weights around the tokenizer, for its ``text_ids``."""
    from icl_audio.llm import LanguageModel, read_layout

    if id(tok) not in _plain_lm:
        _plain_lm[id(tok)] = LanguageModel(model=None, tokenizer=tok, layout=read_layout(tok, "t"), model_id="t",
                                           revision="t", device=None, dtype=None)
    return _plain_lm[id(tok)]


_markup = st.sampled_from(list(LLASA_SPECIAL_TOKENS) + ["<|s_0|>", "<|s_65535|>", "<|eot_id|>", "<|begin_of_text|>"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.one_of(st.text(max_size=16), _markup), max_size=5).map("".join))
def test_text_ids_property(tok, reference, text):
    assert _plain(tok).text_ids(text) == reference.encode_ordinary(text)


# --------------------------------------------------------------------------------------------
# building, caching, loading


def test_cached_load_equals_auto_tokenizer(tok, auto_tokenizer, session_models):
    from conftest import DEBUG_LLM_DIR
    from icl_audio.tokenizer import ensure_tokenizer

    # ``auto_tokenizer`` is AutoTokenizer on the debug model's copy of the cached tokenizer's files:
    # the same bytes as here (all but the build marker), so the same as AutoTokenizer on this folder.
    files = [p for p in ensure_tokenizer().iterdir() if p.name != "icl_audio_tokenizer.json"]
    assert "tokenizer.json" in [p.name for p in files]
    for path in files:
        assert path.read_bytes() == (session_models / DEBUG_LLM_DIR / path.name).read_bytes(), path.name
    auto = auto_tokenizer
    assert auto.get_vocab() == tok.get_vocab()
    assert (auto.bos_token_id, auto.eos_token_id, auto.pad_token_id) == (tok.bos_token_id, tok.eos_token_id,
                                                                         tok.pad_token_id)
    assert {i: (t.content, t.special) for i, t in auto.added_tokens_decoder.items()} == \
        {i: (t.content, t.special) for i, t in tok.added_tokens_decoder.items()}
    for text in ("Convert the text to speech:", "dog<|s_3|>"):
        assert auto(text)["input_ids"] == tok(text)["input_ids"]


def test_cache_reused_and_rebuilt(new_home):
    from conftest import TOKENIZER_DIR
    from icl_audio import tokenizer as T

    # The session's tokenizer, copied (this test damages its files in place); building one from
    # nothing is tested in test_llm's test_debug_build_is_deterministic.
    new_home(seed=(TOKENIZER_DIR,), copy=True)
    folder = T.ensure_tokenizer()
    stamp = (folder / "tokenizer.json").stat().st_mtime_ns
    assert T.ensure_tokenizer() == folder
    assert (folder / "tokenizer.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    marker = json.loads((folder / "icl_audio_tokenizer.json").read_text())
    marker["version"] = -1  # an older build
    (folder / "icl_audio_tokenizer.json").write_text(json.dumps(marker))
    (folder / "tokenizer.json").write_text("{}")
    assert T.ensure_tokenizer() == folder
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folders left
    assert json.loads((folder / "icl_audio_tokenizer.json").read_text())["version"] != -1  # rebuilt
    assert len(T.load_tokenizer()) == 193_800


def test_missing_llama_models(monkeypatch):
    from icl_audio import tokenizer as T

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_models" else real(name, *a))
    with pytest.raises(ModelError) as exc:
        T.llama3_ranks_file()
    msg = str(exc.value)
    assert "\n" not in msg and "pip install llama-models" in msg


@pytest.mark.parametrize("content", ["not base64 at all\n", "IQ== 0\nIg== 2\n", ""])
def test_damaged_ranks(tmp_path, content):
    from icl_audio.tokenizer import read_ranks

    path = tmp_path / "tokenizer.model"
    path.write_text(content)
    with pytest.raises(ModelError) as exc:
        read_ranks(path)
    assert "\n" not in str(exc.value) and "llama-models" in str(exc.value)
