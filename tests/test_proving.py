"""One proving mechanism for every fast path: proven once per model, the verdict kept on the model,
one warning when a fast path falls back; the codec's step-by-step encode proven against
Xcodec2Model.encode."""

from __future__ import annotations

import copy
import gc
import warnings
import weakref

import numpy as np
import pytest
import torch

from icl_audio import engine
from icl_audio.hf_compat import proven_once


def test_proven_once_keeps_the_verdict_and_no_reference_cycle():
    calls = []
    module = torch.nn.Linear(2, 2)
    assert proven_once(module, "_memo", lambda m: calls.append(1) or "fast") == "fast"
    assert proven_once(module, "_memo", lambda m: calls.append(1) or "other") == "fast"
    assert calls == [1]
    plain = torch.nn.Linear(2, 2)
    assert proven_once(plain, "_memo", lambda m: m) is plain  # "use the module itself"
    assert proven_once(plain, "_memo", lambda m: pytest.fail("proved twice")) is plain
    ref = weakref.ref(plain)
    gc.disable()
    try:
        del plain
        assert ref() is None  # freed by reference counting alone: the verdict does not point back at it
    finally:
        gc.enable()


def test_the_engine_proves_its_paths_through_the_one_mechanism(debug_lm, monkeypatch):
    from icl_audio.hf_compat import llama as compat

    hf = copy.deepcopy(debug_lm.model)
    hf.__dict__.pop(engine._PATH_MEMO, None)
    real = compat.PrunedLastLayer._forward
    monkeypatch.setattr(compat.PrunedLastLayer, "_forward", lambda self, h, *a, **k: real(self, h, *a, **k) + 1.0)
    with pytest.warns(RuntimeWarning, match=r"scoring path not used .*differs from the plain path") as record:
        assert engine.verified_path(hf) == "cached"
    assert len(record) == 1 and "fused/pruned scoring path not used" in str(record[0].message)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert hf.__dict__[engine._PATH_MEMO] == "cached"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model: no second proof, no second warning
        assert engine.verified_path(hf) == "cached"


def _fresh_codec_model(debug_codec):
    """A copy of the debug codec's model without its proof verdicts."""
    from icl_audio.hf_compat.xcodec2 import _ORDER_MEMO

    model = copy.deepcopy(debug_codec.model)
    model.__dict__.pop(_ORDER_MEMO, None)
    return model


def _clip(seconds: float, seed: int) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


def test_the_step_by_step_encode_is_proven_against_xcodec2_encode(debug_codec):
    from icl_audio.hf_compat.xcodec2 import _ORDER_MEMO

    assert debug_codec.model.__dict__[_ORDER_MEMO] is True
    assert debug_codec._options.stepwise


def test_another_encode_order_falls_back_to_xcodec2_encode(debug_codec):
    from icl_audio.codec import Codec

    model = _fresh_codec_model(debug_codec)
    original = type(model).encode

    def changed(self, input_values, input_features, **kwargs):
        # As if an upstream release changed what encode computes (here: the features' frame order).
        return original(self, input_values, input_features.flip(1), **kwargs)

    model.encode = changed.__get__(model)
    with pytest.warns(RuntimeWarning, match="step-by-step XCodec2 encode not used") as record:
        codec = Codec(model, model_id="debug", revision="r", device=torch.device("cpu"), precision="bf16")
    assert len([w for w in record if "step-by-step" in str(w.message)]) == 1
    assert not codec._options.stepwise and codec.precision == "fp32"  # encode itself: plain fp32
    clips = [_clip(0.5, 1), _clip(0.8, 2)]
    from icl_audio.codec_encode import batch_inputs

    for clip, codes in zip(clips, codec.encode(clips)):
        features, wave = batch_inputs([clip])
        with torch.inference_mode():
            want = model.encode(wave[:, None, :], features).audio_codes.reshape(-1)[: len(codes)].numpy()
        np.testing.assert_array_equal(codes, want)
