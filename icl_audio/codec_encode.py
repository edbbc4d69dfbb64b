"""The one XCodec2 encode path: clips -> filterbanks -> semantic branch -> acoustic branch -> fc -> FSQ codes.

Every encoder of the project goes through :func:`encoder_states` / :func:`encode_clips`: the
``Codec`` (batched, threaded), the debug codec's calibration, the codec bench. It follows the
convention Llasa's training codes were made with (see :mod:`icl_audio.features`), step by step as
``Xcodec2Model.encode`` does, so that each branch can run in its own precision and the acoustic
branch through an optional replacement (the proven block-matrix CPU path of
:mod:`icl_audio.hf_compat.xcodec2`). Only public submodules of ``Xcodec2Model`` are used:
``semantic_encoder``, ``semantic_adapter``, ``acoustic_encoder``, ``fc_encoder``, ``quantizer``;
the semantic encoder may run through its memory-bounded attention (:mod:`icl_audio.hf_compat.w2vbert`).
Which submodules run in which order is transformers' knowledge, not a public contract: the ``Codec``
proves it once per model against ``Xcodec2Model.encode``
(:func:`icl_audio.hf_compat.xcodec2.proven_encode_order`) and calls ``encode`` itself if it differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from icl_audio.features import acoustic_length, code_frames, n_codes, semantic_features

if TYPE_CHECKING:
    import torch

# (stage name, seconds): called once per stage ("features", "semantic", "acoustic", "quantize").
StageRecorder = Callable[[str, float], None]


@dataclass(frozen=True)
class EncodeOptions:
    """How to run the branches. ``acoustic``: a callable replacing ``model.acoustic_encoder``
    ((B, 1, samples) -> (B, hidden, frames)), None for the module itself. ``semantic``: a callable
    replacing ``model.semantic_encoder`` (features -> output with ``last_hidden_state``), None for
    the module itself. ``branch_executor``: a ``concurrent.futures`` executor that runs the
    acoustic branch while this thread runs the semantic branch (None: both on this thread)."""

    semantic_dtype: Any = None  # torch dtype; None = float32
    acoustic_dtype: Any = None  # torch dtype; None = float32 (bf16 runs under autocast)
    acoustic: Callable | None = None
    semantic: Callable | None = None
    branch_executor: Any = None
    strict_fp32: bool = True  # on CUDA: no TF32 (cuDNN convolutions use it by default); see faithful_math
    # False: call ``Xcodec2Model.encode`` itself (plain modules, fp32), as when the step-by-step order
    # below did not reproduce it (icl_audio.hf_compat.xcodec2.proven_encode_order).
    stepwise: bool = True


def batch_inputs(clips: Sequence[np.ndarray], device="cpu") -> tuple["torch.Tensor", "torch.Tensor"]:
    """The two inputs of the encoder for clips that share ``code_frames``: filterbank features
    (B, T, 160) and the waveforms zero-padded or cut to T * 320 samples (B, T * 320), on ``device``.

    ``clips``: float32 1-D arrays of at least 320 samples. A clip's features never depend on the
    other clips.
    """
    import torch

    lengths = [int(np.asarray(c).shape[0]) for c in clips]
    frames = {code_frames(n) for n in lengths}
    if len(frames) != 1:
        raise ValueError("a batch must hold clips of one code-frame count")
    length = acoustic_length(lengths[0])
    wave = np.zeros((len(clips), length), dtype=np.float32)
    for row, clip in enumerate(clips):
        kept = min(length, lengths[row])
        wave[row, :kept] = np.asarray(clip, dtype=np.float32)[:kept]
    # One clip at a time: the filterbank's framed and complex intermediates are ~40x the clip's
    # samples (85 MB for 30 s), so a batch computed at once would multiply the codec's peak memory.
    feats = [semantic_features(torch.from_numpy(np.asarray(clip, dtype=np.float32)[None]).to(device))[0]
             for clip in clips]
    return torch.stack(feats), torch.from_numpy(wave).to(device)


def encoder_states(model, features, wave, options: EncodeOptions = EncodeOptions(),
                   record: StageRecorder | None = None) -> "torch.Tensor":
    """``fc_encoder``'s output (B, T, D) for the inputs of :func:`batch_inputs`: the semantic branch
    (``semantic_encoder``'s last hidden state, ``semantic_adapter``) and the acoustic branch on the
    waveform, concatenated and projected. ``record(stage, seconds)`` receives stage timings."""
    import torch

    semantic_dtype = options.semantic_dtype or torch.float32
    with torch.inference_mode(), faithful_math(wave.device, options.strict_fp32):
        t0 = time.perf_counter()
        pending = None
        if options.branch_executor is not None:
            pending = options.branch_executor.submit(_acoustic_branch, model, wave, options)
        try:
            semantic_encoder = options.semantic or model.semantic_encoder
            semantic = semantic_encoder(features.to(semantic_dtype)).last_hidden_state
            semantic = model.semantic_adapter(semantic.float().transpose(1, 2))
            sync(wave.device)
            t1 = time.perf_counter()
        finally:
            # Wait for the branch even when this one failed: it reads ``wave``.
            branch = pending.result() if pending is not None else None
        acoustic, acoustic_seconds = branch or _acoustic_branch(model, wave, options)
        hidden = model.fc_encoder(torch.cat([semantic, acoustic], dim=1).transpose(1, 2))
    if record is not None:
        record("semantic", t1 - t0)
        record("acoustic", acoustic_seconds)
    return hidden


def _acoustic_branch(model, wave, options: EncodeOptions) -> tuple["torch.Tensor", float]:
    import torch

    start = time.perf_counter()
    encoder = options.acoustic or model.acoustic_encoder
    with torch.inference_mode():  # thread-local: entered again when run in a worker thread
        if options.acoustic_dtype in (None, torch.float32):
            out = encoder(wave[:, None, :])
        else:
            with torch.autocast(wave.device.type, dtype=options.acoustic_dtype):
                out = encoder(wave[:, None, :]).float()
        sync(wave.device)
    return out, time.perf_counter() - start


def encode_clips(model, clips: Sequence[np.ndarray], options: EncodeOptions = EncodeOptions(), *,
                 device="cpu", record: StageRecorder | None = None) -> list[np.ndarray]:
    """Codes of clips that share ``code_frames``: one int64 array of ``len(clip) // 320`` codes each.

    ``clips``: float32 16 kHz mono 1-D arrays of at least 320 samples. The whole path in one call:
    features, both branches, ``fc_encoder``, ``quantizer``; then the first ``n // 320`` codes. The
    encoder and the quantizer run under the same math (:func:`faithful_math`): FSQ rounds its
    projected input, so TF32 there could move a value across a level boundary.
    """
    import torch

    t0 = time.perf_counter()
    features, wave = batch_inputs(clips, device)
    if record is not None:
        record("features", time.perf_counter() - t0)
    with torch.inference_mode(), faithful_math(wave.device, options.strict_fp32):
        if options.stepwise:
            hidden = encoder_states(model, features, wave, options, record)
            t1 = time.perf_counter()
            _, indices = model.quantizer(hidden)
            codes = indices[..., 0].to("cpu", torch.int64).numpy()
        else:
            t1 = time.perf_counter()
            codes = model.encode(wave[:, None, :], features).audio_codes[:, 0].to("cpu", torch.int64).numpy()
    if record is not None:
        record("quantize", time.perf_counter() - t1)
    return [np.ascontiguousarray(row[: n_codes(len(clip))]) for row, clip in zip(codes, clips)]


def sync(device) -> None:
    """Wait for queued CUDA kernels (stage timings are only honest then); nothing on CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


class torch_threads:
    """Set torch's intra-op thread count for a block, then restore it. For tools that ask for it (the
    debug codec's one-time calibration, the codec bench); the ``Codec`` sets its workers' counts in
    the workers themselves and leaves the caller's alone."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        import torch

        self.saved = torch.get_num_threads()
        if self.n != self.saved:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import torch

        if torch.get_num_threads() != self.saved:
            torch.set_num_threads(self.saved)
        return False


def faithful_math(device, strict: bool):
    """The codec's math for a block: on CUDA with ``strict``, true fp32 (no TF32) in matmuls and cuDNN
    convolutions (which use TF32 by default); nothing is changed elsewhere. See :mod:`icl_audio.precision`."""
    from icl_audio.precision import fp32_precision

    on = strict and device.type == "cuda"
    return fp32_precision(cuda_matmul="ieee" if on else None, cudnn_conv="ieee" if on else None)
