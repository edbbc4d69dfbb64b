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


@pytest.mark.parametrize("n", [0, 1, 319, 320, 321, 8321])
def test_code_count_and_range(debug_codec, n):
    (codes,) = debug_codec.encode([noise(n / SR, seed=n)])
    assert codes.ndim == 1 and codes.dtype == np.int64
    assert codes.shape == (n // 320 + 1,)
    assert codes.min() >= 0 and codes.max() < DEBUG_CODEBOOK_SIZE


def test_batch_independence(debug_codec):
    # Equal lengths, different lengths with the same padded length (16000 and 16100 samples both pad
    # to 16320), and other lengths, all in one call.
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
    # Similar sounds share codes (retrieval over debug codes has something to find).
    t = np.arange(9600) / SR
    lows = [0.3 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate((110, 130, 150))]
    highs = [0.3 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate((2000, 2500, 3000))]
    hists = [_histogram(c) for c in debug_codec.encode([x.astype(np.float32) for x in lows + highs])]
    for i in range(6):
        sims = [(hists[i] @ hists[j], j) for j in range(6) if j != i]
        assert max(sims)[1] // 3 == i // 3  # the nearest clip has the same pitch class


def test_matches_plain_transformers_path(debug_codec):
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor()
    threads = torch.get_num_threads()
    for clip in (noise(0.7, 5), tone(440, 1.1)):
        padded = np.pad(clip, (0, 320 - clip.size % 320))
        feats = extractor(np.pad(padded, (160, 160)), sampling_rate=SR, return_tensors="pt").input_features
        torch.set_num_threads(1)  # a tiny model: one thread is fastest, above all on a shared machine
        try:
            with torch.no_grad():
                ref = debug_codec.model.encode(torch.from_numpy(padded)[None, None], feats)
        finally:
            torch.set_num_threads(threads)
        ref = ref.audio_codes.reshape(-1).numpy()
        ours = debug_codec.encode([clip])[0]
        assert (ref == ours).mean() >= 0.99


def test_block_activation_matches_module():
    from transformers.models.xcodec2.modeling_xcodec2 import Xcodec2AntiAliasedActivation1d, Xcodec2SnakeBeta

    from icl_audio.codec import _BlockActivation

    torch.manual_seed(0)
    act = Xcodec2AntiAliasedActivation1d(Xcodec2SnakeBeta(3)).eval()
    with torch.no_grad():
        act.act.alpha.normal_(0, 0.5)
        act.act.beta.normal_(0, 0.5)
    with torch.inference_mode():
        for block in (16, 32, 64):  # 32 is the default; block edges at every multiple
            fast = _BlockActivation(act, block=block)
            for t in (1, 5, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 1281):
                x = torch.randn(2, 3, t)
                torch.testing.assert_close(fast(x), act(x), atol=1e-5, rtol=1e-5)


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
    assert name in msg and "huggingface-cli download" in msg and "--codec" in msg
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
    assert short.fingerprint != debug_codec.fingerprint  # the crop policy changes codes
    clip = np.concatenate([noise(0.5, 1), tone(880, 1.0), noise(0.5, 2)])
    with pytest.warns(UserWarning, match="longer than 1 s"):
        (codes,) = short.encode([clip])
    assert codes.shape == (51,)
    np.testing.assert_array_equal(codes, debug_codec.encode([clip[8000:24000]])[0])
    head = Codec(debug_codec.model, model_id="debug", revision=debug_codec.revision, device=debug_codec.device,
                 max_seconds=1.0, crop="head")
    with pytest.warns(UserWarning, match="first 1 s"):
        (codes,) = head.encode([clip])
    np.testing.assert_array_equal(codes, debug_codec.encode([clip[:16000]])[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        short.encode([clip[:16000]])  # exactly at the bound: no warning


def test_bad_audio(debug_codec):
    bad = noise(0.2)
    bad[5] = np.nan
    with pytest.raises(AudioError):
        debug_codec.encode([bad])
    with pytest.raises(AudioError):
        debug_codec.encode([np.zeros((2, 100), dtype=np.float32)])


def test_bf16_mode_is_opt_in():
    codec = load_codec("debug", device="cpu", precision="bf16")
    assert codec.precision == "bf16"
    (codes,) = codec.encode([tone(440, 0.5)])
    assert codes.shape == (8000 // 320 + 1,)
    default = load_codec("debug", device="cpu")
    assert default.precision == "fp32" and default.fingerprint != codec.fingerprint
