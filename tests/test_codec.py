"""The codec: debug build, loading errors, code counts, batch independence, fidelity, long-clip crop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from icl_audio.codec import Codec, build_debug_codec, folder_revision, load_codec
from icl_audio.constants import DEBUG_CODEBOOK_SIZE
from icl_audio.errors import AudioError, ModelError

SR = 16_000


def tone(freq: float, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, seed: int = 0, amp: float = 0.1) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(round(seconds * SR)))).astype(np.float32)


def test_debug_codec_attributes(debug_codec):
    assert debug_codec.codebook_size == DEBUG_CODEBOOK_SIZE
    assert debug_codec.model_id == "debug"
    assert debug_codec.revision.startswith("folder-")
    assert debug_codec.device.type == "cpu"
    assert len(debug_codec.fingerprint) == 32


@pytest.mark.parametrize("n", [320, 321, 399, 400, 639, 640, 719, 8321, 16000, 16100])
def test_code_count_and_range(debug_codec, n):
    # Llasa's training data kept the first n // 320 codes (no extra hop).
    (codes,) = debug_codec.encode([noise(n / SR, seed=n)])
    assert codes.ndim == 1 and codes.dtype == np.int64
    assert codes.shape == (n // 320,)
    assert codes.min() >= 0 and codes.max() < DEBUG_CODEBOOK_SIZE


@pytest.mark.parametrize("n", [0, 1, 160, 319])
def test_shorter_than_one_hop_is_one_line_error(debug_codec, n):
    with pytest.raises(AudioError) as info:
        debug_codec.encode([noise(1.0)[:n]])
    assert "320" in _one_line(info.value)


def test_batch_independence(debug_codec, two_threads):
    # Equal lengths, different lengths with the same padded length (16000 and 16100 samples both pad
    # to 16320), and other lengths, all in one call. With two threads (the suite runs with one), the
    # mixed calls run on two workers and each lone clip's two branches side by side.
    clips = [noise(1.0, 1), tone(300, 1.0), noise(16100 / SR, 2), tone(2500, 0.5), noise(1.0, 3), tone(700, 0.37)]
    alone = [debug_codec.encode([c])[0] for c in clips]
    mixed = debug_codec.encode(clips)
    for a, b in zip(alone, mixed):
        np.testing.assert_array_equal(a, b)
    reordered = debug_codec.encode(clips[::-1])[::-1]
    for a, b in zip(alone, reordered):
        np.testing.assert_array_equal(a, b)


def test_progress_counts_every_clip(debug_codec):
    seen = []
    debug_codec.encode([tone(200, 0.2), tone(400, 0.3), tone(800, 0.2)], progress=seen.append)
    assert sum(seen) == 3 and all(n > 0 for n in seen)


def _histogram(codes: np.ndarray) -> np.ndarray:
    h = np.bincount(codes, minlength=DEBUG_CODEBOOK_SIZE).astype(float)
    return h / np.linalg.norm(h)


def test_different_sounds_get_different_codes(debug_codec):
    low, high, hiss = debug_codec.encode([tone(150, 1.0), tone(2500, 1.0), noise(1.0)])
    for a, b in ((low, high), (low, hiss), (high, hiss)):
        assert (a != b).mean() > 0.5
    for codes in (low, high, hiss):
        assert len(np.unique(codes)) > 1
    # Similar sounds share codes (retrieval over debug codes has something to find). The sounds are
    # tone bursts with 0.1 s of silence around them, as recorded events are: the filterbanks are
    # normalised per bin over the clip, so a tone with no silence at all keeps almost nothing of its
    # spectrum in the semantic features (the training-data convention adds no trailing silent hop).
    t = np.arange(9600) / SR
    gate = (t >= 0.1) & (t < 0.5)
    lows = [0.3 * np.sin(2 * np.pi * f * t + i) * gate for i, f in enumerate((110, 130, 150))]
    highs = [0.3 * np.sin(2 * np.pi * f * t + i) * gate for i, f in enumerate((2000, 2500, 3000))]
    hists = [_histogram(c) for c in debug_codec.encode([x.astype(np.float32) for x in lows + highs])]
    for i in range(6):
        sims = [(hists[i] @ hists[j], j) for j in range(6) if j != i]
        assert max(sims)[1] // 3 == i // 3  # the nearest clip has the same pitch class


# -- faithfulness: a reference pipeline written here from the documented recipe -------------------------


def _reference(model, clip: np.ndarray):
    """Codes as Llasa's training codes were made (X-Codec-2.0's inference_save_code.py), from the model's
    modules and transformers' numpy SeamlessM4TFeatureExtractor configured as facebook/w2v-bert-2.0
    (padding_value 1). Returns (fc_encoder output (T, D), the first n // 320 codes)."""
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=SR, stride=2,
                                            padding_value=1.0)
    wav = torch.from_numpy(clip)[None]  # (channels, n), as torchaudio.load gives
    feat = extractor(torch.nn.functional.pad(wav, (160, 160)), sampling_rate=SR, return_tensors="pt")
    feat = feat["input_features"]  # (1, T, 160)
    length = feat.shape[1] * 320
    audio = torch.nn.functional.pad(wav, (0, length - wav.shape[1])) if length > wav.shape[1] else wav[:, :length]
    with torch.no_grad():
        semantic = model.semantic_encoder(feat).last_hidden_state.transpose(1, 2)
        semantic = model.semantic_adapter(semantic)
        acoustic = model.acoustic_encoder(audio[:, None, :])
        hidden = model.fc_encoder(torch.cat([semantic, acoustic], dim=1).transpose(1, 2))
        _, indices = model.quantizer(hidden)
    return hidden[0], indices[0, :, 0].numpy()[: clip.size // 320]


# n % 320 < 80: the acoustic input is cut; 80 <= n % 320 < 240: odd filterbank frame count (a frame of
# ones is stacked); >= 240: even count, one frame more than kept codes; multiples of 320.
REFERENCE_LENGTHS = [320, 640, 719, 1000, 1200, 4800, 8321, 16000, 16100, 16250]


def test_matches_reference_pipeline(debug_codec):
    from icl_audio.codec_encode import EncodeOptions, batch_inputs, encoder_states

    plain = Codec(debug_codec.model, model_id="debug", revision=debug_codec.revision, device=debug_codec.device,
                  fast_acoustic=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is fastest, above all on a shared machine
    try:
        for i, n in enumerate(REFERENCE_LENGTHS):
            clip = (noise(n / SR, seed=i) + tone(300 + 200 * i, n / SR)).astype(np.float32)
            ref_hidden, ref_codes = _reference(debug_codec.model, clip)
            features, wave = batch_inputs([clip])
            hidden = encoder_states(debug_codec.model, features, wave, EncodeOptions())[0]
            assert hidden.shape == ref_hidden.shape
            torch.testing.assert_close(hidden, ref_hidden, atol=2e-3 * float(ref_hidden.abs().max()), rtol=0)
            for codec in (plain, debug_codec):  # the plain module and the proven fast acoustic path
                (codes,) = codec.encode([clip])
                assert codes.shape == ref_codes.shape == (n // 320,)
                assert (codes == ref_codes).mean() >= 0.95, (n, (codes == ref_codes).mean())
    finally:
        torch.set_num_threads(threads)


def test_block_activation_matches_module():
    from transformers.models.xcodec2.modeling_xcodec2 import Xcodec2AntiAliasedActivation1d, Xcodec2SnakeBeta

    from icl_audio.hf_compat.xcodec2 import BlockActivation

    torch.manual_seed(0)
    act = Xcodec2AntiAliasedActivation1d(Xcodec2SnakeBeta(3)).eval()
    with torch.no_grad():
        act.act.alpha.normal_(0, 0.5)
        act.act.beta.normal_(0, 0.5)
    with torch.inference_mode():
        for block in (16, 32, 64):  # 32 is the default; block edges at every multiple
            fast = BlockActivation(act, block=block)
            for t in (1, 5, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 1281):
                x = torch.randn(2, 3, t)
                torch.testing.assert_close(fast(x), act(x), atol=1e-5, rtol=1e-5)


# -- the optional fast acoustic path proves itself and falls back --------------------------------------


def _clips_for_fallback() -> list[np.ndarray]:
    return [tone(220, 0.5), noise(0.73, 4), tone(1800, 1.0) + noise(1.0, 5)]


def _fresh_debug_model():
    # A model object of its own: the fast path's verdict is remembered per loaded model.
    from transformers import Xcodec2Model

    from icl_audio.codec import ensure_debug_codec

    return Xcodec2Model.from_pretrained(str(ensure_debug_codec())).eval()


def test_fast_path_is_proven_and_used(debug_codec):
    from icl_audio.hf_compat.xcodec2 import FastAcousticEncoder

    assert isinstance(debug_codec._options.acoustic, FastAcousticEncoder)
    plain = Codec(debug_codec.model, model_id="debug", revision=debug_codec.revision, device=debug_codec.device,
                  fast_acoustic=False)
    assert plain._options.acoustic is None and plain.fingerprint == debug_codec.fingerprint
    clips = _clips_for_fallback()
    agree = np.concatenate([a == b for a, b in zip(debug_codec.encode(clips), plain.encode(clips))])
    assert agree.mean() >= 0.99


def _assert_falls_back(model, match: str) -> None:
    with pytest.warns(RuntimeWarning, match=match) as record:
        codec = Codec(model, model_id="debug", revision="r", device=torch.device("cpu"))
    assert len([w for w in record if "fast CPU acoustic" in str(w.message)]) == 1
    assert "\n" not in str(record[0].message)
    assert codec._options.acoustic is model.acoustic_encoder  # the plain module
    plain = Codec(model, model_id="debug", revision="r", device=torch.device("cpu"), fast_acoustic=False)
    for a, b in zip(codec.encode(_clips_for_fallback()), plain.encode(_clips_for_fallback())):
        np.testing.assert_array_equal(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # proven once per loaded model: no second warning
        Codec(model, model_id="debug", revision="r", device=torch.device("cpu"))


def test_fast_path_missing_attribute_falls_back(monkeypatch):
    from icl_audio.hf_compat import xcodec2

    # As if transformers renamed a residual unit: the fast path cannot be built.
    monkeypatch.setattr(xcodec2, "_RES_UNITS", ("res_unit1", "res_unit2", "res_unit_three"))
    _assert_falls_back(_fresh_debug_model(), "AttributeError")


def test_fast_path_mismatch_falls_back(monkeypatch):
    from icl_audio.hf_compat import xcodec2

    original = xcodec2.BlockActivation.__call__
    # As if the module's arithmetic changed upstream: the fast path builds but computes something else.
    monkeypatch.setattr(xcodec2.BlockActivation, "__call__", lambda self, x: original(self, x) * 1.01)
    _assert_falls_back(_fresh_debug_model(), "differs from the module")


def test_fingerprint_includes_device_type(debug_codec):
    from icl_audio.codec import _fingerprint

    base = dict(model_id="debug", revision="r", precision="bf16", max_seconds=30.0)
    assert _fingerprint(device_type="cpu", **base) != _fingerprint(device_type="cuda", **base)
    on_cuda = Codec(debug_codec.model, model_id="debug", revision=debug_codec.revision, device=torch.device("cuda"))
    assert on_cuda.fingerprint != debug_codec.fingerprint  # no tensor touched: the device is only named


def test_debug_build_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    a = build_debug_codec(tmp_path / "a")
    b = build_debug_codec(tmp_path / "b")
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert folder_revision(a) == folder_revision(b)


def test_debug_codec_is_reused(debug_codec):
    from icl_audio import paths

    folder = paths.models_dir() / "debug-xcodec2"
    before = (folder / "model.safetensors").stat().st_mtime_ns
    again = load_codec("debug", device="cpu")
    assert (folder / "model.safetensors").stat().st_mtime_ns == before
    assert again.fingerprint == debug_codec.fingerprint
    clip = noise(0.5, 9)
    np.testing.assert_array_equal(again.encode([clip])[0], debug_codec.encode([clip])[0])


def test_local_folder_loads_through_same_path(debug_codec, tmp_path):
    from icl_audio import paths

    codec = load_codec(str(paths.models_dir() / "debug-xcodec2"), device="cpu")
    assert codec.revision == debug_codec.revision
    clip = tone(523, 0.4)
    np.testing.assert_array_equal(codec.encode([clip])[0], debug_codec.encode([clip])[0])


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize("name", ["/nonexistent/xcodec2-folder", "./no/such/model"])
def test_missing_local_folder(name):
    with pytest.raises(ModelError) as info:
        load_codec(name, device="cpu")
    msg = _one_line(info.value)
    assert name in msg and "--codec" in msg


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError) as info:
        load_codec(str(tmp_path), device="cpu")
    assert "config.json" in _one_line(info.value)


def test_hub_id_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    name = "icl-audio-tests/no-such-xcodec2"
    with pytest.raises(ModelError) as info:
        load_codec(name, device="cpu")
    msg = _one_line(info.value)
    assert name in msg and f"hf download {name}" in msg and "--codec" in msg
    assert constants.HF_HUB_CACHE in msg


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_without_gpu():
    with pytest.raises(ModelError) as info:
        load_codec("debug", device="cuda")
    assert "cuda" in _one_line(info.value).lower()


def test_bad_options():
    with pytest.raises(ModelError):
        load_codec("debug", device="tpu")
    with pytest.raises(ModelError):
        load_codec("debug", device="cpu", precision="int3")


def test_long_clip_is_cropped_with_warning(debug_codec):
    short = Codec(debug_codec.model, model_id="debug", revision=debug_codec.revision, device=debug_codec.device,
                  max_seconds=1.0)
    assert short.fingerprint != debug_codec.fingerprint  # the bound changes codes
    clip = np.concatenate([noise(0.5, 1), tone(880, 1.0), noise(0.5, 2)])
    with pytest.warns(UserWarning, match="longer than 1 s: encoding only the first 1 s"):
        (codes,) = short.encode([clip])
    assert codes.shape == (50,)
    np.testing.assert_array_equal(codes, debug_codec.encode([clip[:16000]])[0])  # the head, as load_audio keeps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short.encode([clip[:16000]])  # exactly at the bound: no warning


def test_bad_audio(debug_codec):
    bad = noise(0.2)
    bad[5] = np.nan
    with pytest.raises(AudioError):
        debug_codec.encode([bad])
    with pytest.raises(AudioError):
        debug_codec.encode([np.zeros((2, 1000), dtype=np.float32)])


def test_bf16_mode_is_opt_in():
    codec = load_codec("debug", device="cpu", precision="bf16")
    assert codec.precision == "bf16"
    (codes,) = codec.encode([tone(440, 0.5)])
    assert codes.shape == (8000 // 320,)
    default = load_codec("debug", device="cpu")
    assert default.precision == "fp32" and default.fingerprint != codec.fingerprint
