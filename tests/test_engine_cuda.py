"""CUDA points of the engine and the codec, tested on CPU with torch's functions patched: bf16 by the
chosen device's compute capability, fp32 precision through torch's new API only (set and restored),
TF32 in the fp32 LM head where it is exact, the head's weight upcast once per call and its results
copied back once."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from icl_audio import engine
from icl_audio.precision import cuda_native_bf16, fp32_precision

FLAGS = (torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.mkldnn.matmul)


@pytest.fixture
def saved_flags():
    """Whatever a test does to torch's precision flags is undone after it."""
    before = [f.fp32_precision for f in FLAGS]
    yield
    for f, value in zip(FLAGS, before):
        f.fp32_precision = value


def test_bf16_by_compute_capability_of_the_chosen_device(monkeypatch):
    from icl_audio.llm import resolve_dtype

    capability = {0: (7, 5), 1: (8, 0), 2: (9, 0)}  # T4 as the current device; an A100 and an H100 beside it
    asked = []

    def get_device_capability(device=None):
        index = torch.device(device).index if device is not None else 0
        asked.append(index if index is not None else 0)
        return capability[index if index is not None else 0]

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_device_capability)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    # Counts emulation and asks the current device: it must not decide.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: pytest.fail("is_bf16_supported asked"))
    assert not cuda_native_bf16("cuda:0") and cuda_native_bf16("cuda:1") and cuda_native_bf16(torch.device("cuda:2"))
    assert asked == [0, 1, 2]
    assert not cuda_native_bf16("cpu")
    assert resolve_dtype(None, torch.device("cuda:1")) == torch.bfloat16
    assert resolve_dtype(None, torch.device("cuda:0")) == torch.float16


@pytest.mark.usefixtures("saved_flags")
def test_precision_flags_set_for_a_block_and_restored_with_the_new_api_only():
    # As transformers' enable_tf32 does: from then on, torch raises on reading a legacy allow_tf32 flag.
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
    with fp32_precision(cuda_matmul="ieee", cudnn_conv="ieee"):
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        with fp32_precision(cuda_matmul="tf32"):  # nested blocks restore in order
            assert torch.backends.cuda.matmul.fp32_precision == "tf32"
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    with pytest.raises(RuntimeError):
        with fp32_precision(cpu_matmul="bf16"):
            assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
            raise RuntimeError("a failing block")
    assert torch.backends.mkldnn.matmul.fp32_precision != "bf16"  # restored on errors too
    with pytest.raises(ValueError):
        fp32_precision(cuda_matmul="bf16")
    with pytest.raises(ValueError):
        fp32_precision(tf32=True)


@pytest.mark.usefixtures("saved_flags")
def test_codec_math_is_strict_fp32_on_cuda_and_leaves_cpu_alone():
    from icl_audio.codec_encode import faithful_math

    torch.backends.cuda.matmul.fp32_precision = "tf32"
    with faithful_math(torch.device("cuda"), strict=True):
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    with faithful_math(torch.device("cuda"), strict=False), faithful_math(torch.device("cpu"), strict=True):
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"


@pytest.mark.usefixtures("saved_flags")
def test_the_quantizer_runs_inside_the_strict_block(debug_codec, monkeypatch):
    """FSQ rounds its input to levels: TF32 there could move a value across a boundary."""
    from icl_audio import codec_encode

    strict = {"cuda_matmul": "ieee", "cudnn_conv": "ieee"}
    monkeypatch.setattr(codec_encode, "faithful_math", lambda device, on: fp32_precision(**(strict if on else {})))
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    model = debug_codec.model
    seen = []
    forward = model.quantizer.forward
    monkeypatch.setattr(model.quantizer, "forward",
                        lambda h: seen.append(torch.backends.cuda.matmul.fp32_precision) or forward(h))
    clip = (0.1 * np.sin(np.arange(8000) * 0.05)).astype(np.float32)
    codec_encode.encode_clips(model, [clip], codec_encode.EncodeOptions(strict_fp32=True))
    assert seen == ["ieee"] and torch.backends.cuda.matmul.fp32_precision == "tf32"


@pytest.mark.usefixtures("saved_flags")
@pytest.mark.parametrize("device, weight, hidden, want", [
    ("cuda", torch.bfloat16, torch.bfloat16, ("cuda", "tf32")),
    ("cuda", torch.float16, torch.float16, ("cuda", "tf32")),
    ("cuda", torch.float32, torch.float32, ("cuda", "ieee")),
    ("cuda", torch.bfloat16, torch.float32, ("cuda", "ieee")),
    ("cpu", torch.bfloat16, torch.bfloat16, ("mkldnn", "bf16")),
    ("cpu", torch.float32, torch.float32, ("mkldnn", "ieee")),
])
def test_head_math_allows_reduced_operands_only_where_exact(device, weight, hidden, want):
    flags = {"cuda": torch.backends.cuda.matmul, "mkldnn": torch.backends.mkldnn.matmul}[want[0]]
    before = flags.fp32_precision
    with engine._head_math(torch.device(device), weight, hidden):
        assert flags.fp32_precision == want[1]
    assert flags.fp32_precision == before


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """fp32 values rounded to TF32's 10 explicit mantissa bits (round to nearest even)."""
    bits = x.float().view(torch.int32).long()
    bits = (bits + 0xFFF + ((bits >> 13) & 1)) & ~0x1FFF
    return bits.to(torch.int32).view(torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_tf32_is_exact_on_16_bit_operands(dtype):
    """The argument of the engine's docstring: a bf16 (or fp16) value is a TF32 value, and the product
    of two is exact in fp32; only the fp32 sums round, as in a true fp32 GEMM."""
    g = torch.Generator().manual_seed(0)
    a = (torch.randn(4096, generator=g) * 3).to(dtype).float()
    b = (torch.randn(4096, generator=g) * 3).to(dtype).float()
    assert torch.equal(_tf32(a), a) and torch.equal(_tf32(b), b)
    assert torch.equal((a * b).double(), a.double() * b.double())
    assert not torch.equal(_tf32(torch.randn(4096, generator=g)), torch.randn(4096, generator=g))  # fp32 is not


def _bf16_model(debug_lm):
    hf = copy.deepcopy(debug_lm.model).to(torch.bfloat16)
    with torch.no_grad():
        hf.model.norm.weight.mul_(64.0)  # logits of a trained model's size
    return hf


def _pairs(n_rows: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = np.concatenate([np.arange(n_rows), rng.integers(0, n_rows, 3 * n_rows)])
    return rows, rng.integers(0, vocab, len(rows))


def test_head_upcasts_each_vocabulary_slice_once_and_copies_back_once(debug_lm, monkeypatch):
    hf = _bf16_model(debug_lm)
    weight = hf.get_output_embeddings().weight
    vocab = weight.shape[0]
    hidden = (torch.randn(20, weight.shape[1], generator=torch.Generator().manual_seed(1)) * 4).to(torch.bfloat16)
    rows, tokens = _pairs(20, vocab)
    monkeypatch.setattr(engine, "HEAD_ROWS", 8)  # three blocks of rows
    monkeypatch.setattr(engine, "_vocab_chunk", lambda device: 50_000)  # four slices of the vocabulary
    upcasts, copies_back = [], []
    real_copy, real_cpu = torch.Tensor.copy_, torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "copy_", lambda self, src, *a, **k: (
        upcasts.append(src.shape[0]) if src.dtype == torch.bfloat16 and self.dtype == torch.float32 else None)
        or real_copy(self, src, *a, **k))
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: copies_back.append(1) or real_cpu(self, *a, **k))
    with torch.inference_mode():
        got = engine.token_logprobs(hf, hidden, rows, tokens)
    monkeypatch.undo()
    assert upcasts == [50_000] * (vocab // 50_000) + [vocab % 50_000]  # each slice once, not once per block
    assert len(copies_back) == 1
    logits = hidden.double() @ weight.double().t()
    want = (logits[rows, tokens] - torch.logsumexp(logits, dim=-1)[rows]).numpy()
    assert np.abs(got - want).max() < 1e-4  # fp32 sums of exact products


def test_a_head_that_is_not_a_plain_linear_runs_as_a_module(debug_lm):
    hf = copy.deepcopy(debug_lm.model)
    linear = hf.get_output_embeddings()
    scaled = torch.nn.Sequential(linear)  # any other head form: called as a module
    hf.set_output_embeddings(scaled)
    hidden = torch.randn(300, linear.weight.shape[1], generator=torch.Generator().manual_seed(2))
    rows, tokens = _pairs(300, linear.weight.shape[0], seed=3)
    with torch.inference_mode():
        got = engine.token_logprobs(hf, hidden, rows, tokens)
        logits = hidden.double() @ linear.weight.double().t()
    want = (logits[rows, tokens] - torch.logsumexp(logits, dim=-1)[rows]).numpy()
    assert np.abs(got - want).max() < 1e-4
