"""The semantic encoder's memory-bounded attention (icl_audio.hf_compat.w2vbert): same outputs and
codes as the module, no allocation that grows with T^2 x head_size, one warning and the module
when it cannot be proven."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from icl_audio.codec import Codec
from icl_audio.hf_compat import w2vbert


def _w2vbert(left: int, right: int, *, hidden: int = 128, heads: int = 2, layers: int = 2):
    """A random Wav2Vec2BertModel with relative_key attention (w2v-BERT 2.0 uses left 64, right 8,
    head_size 64), in eval mode."""
    from transformers import Wav2Vec2BertConfig, Wav2Vec2BertModel

    torch.manual_seed(0)
    config = Wav2Vec2BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                                intermediate_size=2 * hidden, output_hidden_size=hidden,
                                feature_projection_input_dim=160, conv_depthwise_kernel_size=5,
                                left_max_position_embeddings=left, right_max_position_embeddings=right,
                                position_embeddings_type="relative_key")
    model = Wav2Vec2BertModel(config).eval()
    with torch.no_grad():  # random distance embeddings large enough to matter in the scores
        for layer in model.encoder.layers:
            layer.self_attn.distance_embedding.weight.normal_(0, 1.0)
    return model


def _features(frames: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, frames, 160, generator=torch.Generator().manual_seed(frames))


@pytest.mark.parametrize("left,right,frames,rows", [(64, 8, 300, 64), (64, 8, 300, 7), (16, 4, 50, 1000), (2, 1, 9, 4)])
def test_bounded_attention_matches_the_module(left, right, frames, rows):
    model = _w2vbert(left, right)
    bounded = w2vbert.build(model)
    for attention in w2vbert._attentions(bounded):
        attention.block_rows = rows
    x = _features(frames)
    with torch.inference_mode():
        want = model(x).last_hidden_state
        got = bounded(x).last_hidden_state
    assert got.shape == want.shape
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5


def test_bounded_copy_leaves_the_module_alone_and_shares_its_weights():
    from transformers.models.wav2vec2_bert.modeling_wav2vec2_bert import Wav2Vec2BertSelfAttention

    model = _w2vbert(64, 8)
    bounded = w2vbert.build(model)
    for layer, new in zip(model.encoder.layers, bounded.encoder.layers):
        assert type(layer.self_attn) is Wav2Vec2BertSelfAttention
        assert isinstance(new.self_attn, w2vbert.BoundedAttention)
        assert new.self_attn.inner.linear_q.weight.data_ptr() == layer.self_attn.linear_q.weight.data_ptr()
        assert new.conv_module is layer.conv_module
    assert bounded.feature_projection is model.feature_projection


def _largest_allocation(module, x) -> int:
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        module(x)
    return max(e.cpu_memory_usage for e in prof.events())


def test_no_allocation_grows_with_length_squared_times_head_size():
    # One 30 s clip (T = 1,500 frames) through one layer at w2v-BERT 2.0's distances and head size
    # (64): the module's (T, T, 64) distance table alone is 576 MB; the bounded path's largest
    # block is a few MB.
    model = _w2vbert(64, 8, hidden=128, heads=2, layers=1)
    attention = model.encoder.layers[0].self_attn
    x = torch.randn(1, 1500, 128, generator=torch.Generator().manual_seed(0))
    plain = _largest_allocation(attention, x)
    bounded = _largest_allocation(w2vbert.BoundedAttention(attention), x)
    assert plain >= 1500 * 1500 * 64 * 4  # the measure sees the table: this test can fail
    assert bounded <= 16 * 2**20


def _fresh_debug_model():
    # A model object of its own: the proof's verdict is remembered per loaded module.
    from transformers import Xcodec2Model

    from icl_audio.codec import ensure_debug_codec

    return Xcodec2Model.from_pretrained(str(ensure_debug_codec())).eval()


def _clips():
    rng = np.random.default_rng(7)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000 * 12, 16000 * 12, 8321, 640)]


def test_codec_runs_the_bounded_encoder_with_the_codes_of_the_module(monkeypatch):
    # Small blocks, so that the 12 s clips (600 frames) take many.
    monkeypatch.setattr(w2vbert, "_BLOCK_FLOATS", 4096)
    model = _fresh_debug_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codec = Codec(model, model_id="debug", revision="r", device=torch.device("cpu"))
    assert codec._options.semantic is not None and codec._options.semantic is not model.semantic_encoder
    plain = Codec(model, model_id="debug", revision="r", device=torch.device("cpu"), bounded_attention=False)
    assert plain._options.semantic is None and plain.fingerprint == codec.fingerprint
    for a, b in zip(codec.encode(_clips()), plain.encode(_clips())):
        np.testing.assert_array_equal(a, b)


def _assert_falls_back(model, match: str) -> None:
    with pytest.warns(RuntimeWarning, match=match) as record:
        codec = Codec(model, model_id="debug", revision="r", device=torch.device("cpu"))
    messages = [str(w.message) for w in record if "memory-bounded semantic attention" in str(w.message)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert codec._options.semantic is model.semantic_encoder  # the plain module
    plain = Codec(model, model_id="debug", revision="r", device=torch.device("cpu"), bounded_attention=False)
    for a, b in zip(codec.encode(_clips()), plain.encode(_clips())):
        np.testing.assert_array_equal(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # proven once per loaded model: no second warning
        Codec(model, model_id="debug", revision="r", device=torch.device("cpu"))


def test_a_bounded_attention_that_computes_something_else_is_not_used(monkeypatch):
    original = w2vbert.BoundedAttention.forward
    # As if the module's arithmetic changed upstream: the copy builds but disagrees.
    monkeypatch.setattr(w2vbert.BoundedAttention, "forward",
                        lambda self, *a, **k: (original(self, *a, **k)[0] * 1.5, None))
    _assert_falls_back(_fresh_debug_model(), "differs from the module")


def test_another_position_embedding_is_refused():
    model = _w2vbert(4, 2)
    for layer in model.encoder.layers:  # as if upstream switched the attention's scheme
        layer.self_attn.position_embeddings_type = "rotary"
    with pytest.raises(ValueError, match="not 'relative_key'"):
        w2vbert.build(model)


def test_a_moved_attribute_falls_back(monkeypatch):
    def moved(self, attention):
        raise AttributeError("'Wav2Vec2BertSelfAttention' object has no attribute 'distance_embedding'")

    # As if transformers renamed an attribute the bounded path reads: it cannot be built.
    monkeypatch.setattr(w2vbert.BoundedAttention, "__init__", moved)
    _assert_falls_back(_fresh_debug_model(), "AttributeError")
