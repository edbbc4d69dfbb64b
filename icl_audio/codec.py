"""Audio -> XCodec2 codes: the ``Codec`` (batched, length-bucketed, threaded encoding over the one
encode path of :mod:`icl_audio.codec_encode`) and its loading (hub id, local folder or the debug build)."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from icl_audio import features
from icl_audio.codec_debug import (  # noqa: F401 (public names)
    build_debug_codec,
    build_random_codec,
    debug_config,
    ensure_debug_codec,
    ensure_random_codec,
)
from icl_audio.constants import DEBUG_NAME, DEFAULT_CODEC, DEFAULT_MAX_SECONDS, HOP, SAMPLE_RATE
from icl_audio.codec_encode import EncodeOptions, encode_clips
from icl_audio.devices import resolve_device
from icl_audio.errors import AudioError, ModelError
from icl_audio.features import MIN_SAMPLES, acoustic_length, code_frames, n_codes
from icl_audio.hub import folder_revision, resolve_model  # noqa: F401 (folder_revision re-exported)

if TYPE_CHECKING:
    import torch

log = logging.getLogger("icl_audio")

PRECISIONS = ("auto", "fp32", "bf16")
# The encode path (encoder.py, and the fast acoustic branch it may use). Bump when it changes codes.
ENCODER_VERSION = "2"
# Clips per forward pass are bounded by total samples, so long clips come in small batches: 40 s
# holds one 30 s clip (80 s held two, and each worker's peak grew by ~100 MB for no gain in speed on
# CPU, where a batch is a loop over the same kernels).
DEFAULT_BATCH_SAMPLES = 4 * 10 * SAMPLE_RATE
MAX_WORKERS = 4  # CPU worker threads encoding clips side by side


class Codec:
    """An XCodec2 encoder: float32 16 kHz mono clips in, one 1-D array of codes (50 per second) out.

    Codes follow how Llasa's training codes were made: ``len(clip) // 320`` per clip (see
    :mod:`icl_audio.features`). Built by ``load_codec``; wraps a ``transformers.Xcodec2Model``.
    Attributes: ``model_id``, ``revision`` (hub commit or folder content hash), ``codebook_size``,
    ``device``, ``precision`` (resolved: "fp32" or "bf16"), ``max_seconds`` (longer clips keep their
    first ``max_seconds``: the one crop policy of :data:`icl_audio.constants.DEFAULT_MAX_SECONDS`),
    and ``fingerprint``, a hash of everything that changes codes (cache key part).
    """

    def __init__(
        self,
        model,
        *,
        model_id: str,
        revision: str,
        device: "torch.device",
        precision: str = "auto",
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
        batch_samples: int = DEFAULT_BATCH_SAMPLES,
        identity: str | None = None,
        fast_acoustic: bool = True,
        bounded_attention: bool = True,
    ) -> None:
        """Wrap a loaded ``Xcodec2Model`` (``load_codec`` is the usual way in). ``identity`` stands for
        the model in the fingerprint (default ``model_id``; "local-folder" for folders, whose
        ``revision`` is a content hash). ``fast_acoustic``: on CPU, run the acoustic branch through
        the block-matrix path of :mod:`icl_audio.hf_compat.xcodec2` once it has proven itself
        against the plain module (False: always the plain module). ``bounded_attention``: run the
        semantic encoder's attention a block of rows at a time (:mod:`icl_audio.hf_compat.w2vbert`),
        so that its memory does not grow with the square of the clip length, once it has proven
        itself against the plain module (False: always the plain module)."""
        import torch

        if precision not in PRECISIONS:
            raise ModelError(f"unknown codec precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        if max_seconds is not None and max_seconds * SAMPLE_RATE < MIN_SAMPLES:
            raise ModelError(f"max_seconds must be at least {MIN_SAMPLES / SAMPLE_RATE:g} (one codec frame), got {max_seconds!r}")
        self.model = model
        self.model_id = model_id
        self.revision = revision
        self.device = torch.device(device)
        # "auto" is the faithful path everywhere: with bf16 anywhere in the encoder, codes differ from
        # the fp32 reference on 6-20 % of frames (measured with random weights), too many for a default.
        self.precision = "fp32" if precision == "auto" else precision
        self.max_seconds = max_seconds
        self.batch_samples = max(int(batch_samples), acoustic_length(SAMPLE_RATE))
        self.codebook_size = int(np.prod(model.config.quantization_levels))
        # Seconds per stage, summed over calls (and over worker threads: CPU-seconds, not wall time).
        self.stage_seconds: dict[str, float] = {"features": 0.0, "semantic": 0.0, "acoustic": 0.0, "quantize": 0.0}
        self._timer_lock = threading.Lock()
        self._executors: dict[tuple[str, int, int], object] = {}  # see _executor
        # The step-by-step encode order, proven against Xcodec2Model.encode while every module is fp32.
        from icl_audio.hf_compat.xcodec2 import proven_encode_order

        stepwise = proven_encode_order(model)
        if not stepwise:  # Xcodec2Model.encode itself runs: plain modules, fp32 (the warning said so)
            self.precision, fast_acoustic, bounded_attention = "fp32", False, False
        semantic_dtype = torch.float32
        if self.precision == "bf16":
            semantic_dtype = torch.bfloat16
            # The codec owns its model: converting in place avoids keeping two copies of 0.6 B weights.
            model.semantic_encoder.to(torch.bfloat16)
        # On CUDA, bf16 is fast for both branches; on CPU bf16 grouped convolutions are slower than fp32.
        bf16_acoustic = self.precision == "bf16" and self.device.type == "cuda"
        acoustic = None
        # The block-matrix activations pay off where memory traffic dominates (CPU); cuDNN's grouped
        # convolutions are already fast.
        if fast_acoustic and self.device.type == "cpu":
            from icl_audio.hf_compat.xcodec2 import fast_acoustic_encoder

            acoustic = fast_acoustic_encoder(model.acoustic_encoder)
        semantic = None
        # On every device: the plain attention's (T, T, 64) distance table and full score tensors
        # are what sets the codec's peak memory (CPU RAM and GPU memory alike).
        if bounded_attention:
            from icl_audio.hf_compat.w2vbert import bounded_semantic_encoder

            semantic = bounded_semantic_encoder(model.semantic_encoder)
        self._options = EncodeOptions(
            semantic_dtype=semantic_dtype,
            semantic=semantic,
            acoustic_dtype=torch.bfloat16 if bf16_acoustic else torch.float32,
            acoustic=acoustic,
            strict_fp32=self.precision == "fp32",
            stepwise=stepwise,
        )
        self.fingerprint = _fingerprint(
            model_id=identity or model_id,
            revision=revision,
            precision=self.precision,
            device_type=self.device.type,
            max_seconds=max_seconds,
        )

    def __repr__(self) -> str:
        return (
            f"Codec({self.model_id!r}, revision={self.revision[:12]!r}, device={str(self.device)!r}, "
            f"precision={self.precision!r}, codebook_size={self.codebook_size})"
        )

    def prepare(self, clip: np.ndarray) -> np.ndarray:
        """The samples that are actually encoded for ``clip``: float32 1-D, its first ``max_seconds``.

        Accepts a 1-D array (or anything reshapeable to one) of float samples at 16 kHz; raises
        AudioError for a non-finite clip or one shorter than 320 samples (20 ms: no code can be
        made of it). Does not warn (``encode`` does, once per call).
        """
        x = np.asarray(clip, dtype=np.float32)
        if x.ndim != 1:
            if x.ndim == 2 and 1 in x.shape:
                x = x.reshape(-1)
            else:
                raise AudioError(f"codec input must be mono 1-D samples, got an array of shape {x.shape}")
        if x.shape[0] < MIN_SAMPLES:
            raise AudioError(
                f"clip of {x.shape[0]} samples is shorter than one codec frame ({MIN_SAMPLES} samples, "
                f"{1000 * MIN_SAMPLES // SAMPLE_RATE} ms at 16 kHz): no code can be made of it"
            )
        if not np.isfinite(x).all():
            raise AudioError("codec input contains NaN or infinite samples")
        limit = self._max_samples()
        if limit is not None and x.shape[0] > limit:
            x = x[:limit]  # the head, as load_audio's read-time crop keeps
        return np.ascontiguousarray(x)

    def _max_samples(self) -> int | None:
        return None if self.max_seconds is None else int(round(self.max_seconds * SAMPLE_RATE))

    def encode(
        self, clips: Sequence[np.ndarray], *, progress: Callable[[int], None] | None = None
    ) -> list[np.ndarray]:
        """Encode clips to codes: one 1-D int64 array per clip, ``len(clip) // 320`` codes each.

        ``clips``: float32 16 kHz mono arrays of at least 320 samples (longer than ``max_seconds``
        ones are cropped, with a warning). Clips are grouped by the number of frames the encoder
        computes for them, so no clip shares a batch with padding: a clip's codes do not depend on
        the other clips. On CPU, batches are spread over worker threads (see ``_parallelism``).
        ``progress(n)`` is called from the calling thread with the number of clips just finished (an
        increment) after each batch. Raises AudioError (before encoding anything) for a bad clip.
        """
        import torch

        limit = self._max_samples()
        too_long = [i for i, c in enumerate(clips) if limit is not None and np.asarray(c).size > limit]
        if too_long:
            warnings.warn(
                f"{len(too_long)} clip(s) longer than {self.max_seconds:g} s: encoding only the "
                f"first {self.max_seconds:g} s of each (codec max_seconds)",
                stacklevel=2,
            )
        prepared = [self.prepare(c) for c in clips]
        out: list[np.ndarray | None] = [None] * len(prepared)
        workers, threads = self._parallelism(len(prepared))
        cores = max(1, torch.get_num_threads())
        batches = self._batches(prepared, workers)

        branch_threads = workers == 1 and threads < cores

        def run(batch: list[int]) -> list[np.ndarray]:
            return self.encode_batch([prepared[i] for i in batch], branch_threads=branch_threads)

        def finish(batch: list[int], codes: list[np.ndarray]) -> None:
            for row, i in enumerate(batch):
                if codes[row].shape[0] != n_codes(prepared[i].shape[0]):
                    raise AssertionError("codec returned an unexpected number of codes")
                out[i] = codes[row]
            if progress is not None:
                progress(len(batch))

        if self.device.type != "cpu":
            for batch in batches:
                finish(batch, run(batch))
            return out  # type: ignore[return-value]
        from concurrent.futures import as_completed

        pool = self._executor("icl-codec", workers, threads)
        futures = {pool.submit(run, batch): batch for batch in batches}
        try:
            for future in as_completed(futures):  # progress is reported from the caller's thread
                finish(futures[future], future.result())
        finally:
            for future in futures:  # on an error (or Ctrl-C), do not leave batches running
                future.cancel()
        return out  # type: ignore[return-value]

    def _executor(self, name: str, workers: int, threads: int):
        """This codec's own ``workers`` threads, each running torch's operators on ``threads`` intra-op
        threads (see :func:`_worker_pool`), created once and kept for its lifetime.

        Why not a pool per call: glibc's malloc gives each thread an arena of its own and keeps
        what it frees there (see :mod:`icl_audio.memory`). Threads made afresh for every call
        inherit arenas used by other threads in other roles, so each arena creeps up to the largest
        peak of every role it ever played, and peak memory grew with the number of calls (measured:
        classify of 60 thirty-second files peaked 150-230 MB above 6 files). The same threads doing
        the same work hold the same memory after the first batch, however many follow. Idle threads
        exit when the codec is garbage-collected (``ThreadPoolExecutor`` holds them by weak reference).
        """
        key = (name, workers, threads)
        pool = self._executors.get(key)
        if pool is None:
            pool = self._executors[key] = _worker_pool(name, workers, threads)
        return pool

    def encode_batch(self, clips: Sequence[np.ndarray], *, branch_threads: bool = False) -> list[np.ndarray]:
        """Codes of prepared clips (``prepare``) that share ``features.code_frames``, in one forward
        pass on this thread (``branch_threads``: the acoustic branch in a second one)."""
        options = self._options
        if branch_threads:
            from dataclasses import replace

            options = replace(options, branch_executor=self._executor("icl-codec-acoustic", 1, self._parallelism(1)[1]))
        return encode_clips(self.model, clips, options, device=self.device, record=self._record)

    def _record(self, stage: str, seconds: float) -> None:
        with self._timer_lock:
            self.stage_seconds[stage] += seconds

    def _parallelism(self, n_clips: int) -> tuple[int, int]:
        """(worker threads, intra-op threads each) for encoding ``n_clips`` clips.

        On CPU the work is spread over threads that each run single-threaded (or few-threaded)
        operators, rather than all cores inside each operator: the encoder runs hundreds of small,
        memory-bound operators whose per-operator thread synchronisation costs more than it saves,
        and stalls badly (measured: up to 7x slower) when other processes share the cores. Several
        clips: one worker per core, each encoding its own batches. One clip: its semantic and
        acoustic branches run side by side, half the cores each. The core count is torch's
        intra-op thread count (so ``torch.set_num_threads`` / OMP_NUM_THREADS are respected); at
        most ``MAX_WORKERS`` workers bound the memory held by clips in flight.
        """
        import torch

        cores = max(1, torch.get_num_threads())
        if self.device.type != "cpu" or cores < 2:
            return 1, cores
        if n_clips < 2:
            return 1, max(1, cores // 2)
        workers = min(cores, n_clips, MAX_WORKERS)
        return workers, max(1, cores // workers)

    def _batches(self, prepared: list[np.ndarray], workers: int = 1) -> list[list[int]]:
        """Indices grouped by code-frame count (longest first), each group cut to the sample budget
        and, with several workers, into at least as many batches as workers."""
        buckets: dict[int, list[int]] = {}
        for i, x in enumerate(prepared):
            buckets.setdefault(code_frames(x.shape[0]), []).append(i)
        batches = []
        for frames in sorted(buckets, reverse=True):
            idx = buckets[frames]
            per_batch = max(1, min(self.batch_samples // (frames * HOP), -(-len(idx) // workers)))
            batches += [idx[j : j + per_batch] for j in range(0, len(idx), per_batch)]
        return batches


def _worker_pool(name: str, workers: int, threads: int):
    """A pool of ``workers`` threads, each of which runs torch's operators on ``threads`` intra-op threads.

    The count is set inside each worker when it starts (OpenMP's and MKL's thread counts are per
    thread), never in the caller: the caller's own count is left as it was. ``torch.set_num_threads``
    also records its value as the count that threads starting later take; once every worker has set
    its own, the caller's count is recorded back, so that default is unchanged too.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import torch

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name, initializer=_set_worker_threads,
                              initargs=(threads,))
    started = threading.Barrier(workers + 1, timeout=60)
    for _ in range(workers):  # each task holds its thread until all have started: one thread each
        pool.submit(started.wait)
    started.wait()
    torch.set_num_threads(torch.get_num_threads())
    return pool


def _set_worker_threads(threads: int) -> None:
    import torch

    # torch sets a thread's count from the process default at the thread's first operator (once):
    # let that happen first, so that it does not overwrite the count set here.
    torch.get_num_threads()
    torch.set_num_threads(threads)


def _fingerprint(*, model_id: str, revision: str, precision: str, device_type: str, max_seconds) -> str:
    payload = {
        "model": model_id,
        "revision": revision,
        "preprocessing": features.PREPROCESSING_VERSION,  # read at call time (tests patch it)
        "encoder": ENCODER_VERSION,
        "precision": precision,
        # "bf16" is the semantic branch only on CPU, both branches on CUDA: other codes.
        "device": device_type,
        "max_seconds": max_seconds,
        "crop": "head",  # the one crop policy (a clip cropped at its centre gave other codes)
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------------------
# Loading


def load_codec(
    name: str = DEFAULT_CODEC,
    *,
    device: str = "auto",
    revision: str | None = None,
    precision: str = "auto",
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    check_weights: bool = True,
) -> Codec:
    """Load an XCodec2 codec with ``transformers.Xcodec2Model``.

    ``name``: a hub id (default "HKUSTAudio/xcodec2-hf"; read from the Hugging Face cache, downloaded
    only when online), a local folder holding ``config.json`` and the weights, "debug" (a tiny
    model with 256 codes, built deterministically into ``paths.models_dir()/debug-xcodec2``), or
    "random-xcodec2" (random weights at XCodec2's real shape, saved once into the cache: meaningless
    codes, real memory and time); local builds load back through the same ``from_pretrained`` call.
    ``revision``: hub branch/tag/commit (ignored for folders). ``device``: "auto", "cpu", "cuda",
    "cuda:N". ``precision``: "auto" (= "fp32", codes faithful to the reference), "fp32" or "bf16"
    (faster, less faithful: semantic branch in bf16 on CPU, both branches on CUDA). ``max_seconds``:
    longer clips keep their first ``max_seconds``, with a warning; None disables the bound.
    ``check_weights``: refuse weights whose tensor names or shapes do not fit the architecture
    (:mod:`icl_audio.weights`); False loads them anyway with a warning.
    Raises ModelError (one line) when the model cannot be found or loaded.
    """
    import torch
    from transformers import Xcodec2Model

    from icl_audio.codec_debug import local_codecs
    from icl_audio.weights import load_pretrained

    dev = resolve_device(device)
    src = resolve_model(name, kind="codec", flag="--codec", local_builds=local_codecs(), revision=revision)
    if src.origin not in ("debug", "random"):
        _check_folder(src.folder)
    label = {"debug": "the debug codec", "random": f"codec {name}"}.get(src.origin, f"codec {src.model_id}")
    model = load_pretrained(Xcodec2Model, src.folder, label=label, check_weights=check_weights, dtype=torch.float32)
    if src.origin == "random":
        log.warning("note: codec %s has random weights: its codes, and any prediction made with them, are "
                    "meaningless (for measuring memory and speed)", name)
    # A folder's content hash identifies its model: moving or copying it keeps cached codes valid.
    identity = {"debug": DEBUG_NAME, "folder": "local-folder"}.get(src.origin, src.model_id)
    model = model.to(dev).eval()
    return Codec(model, model_id=src.model_id, revision=src.revision, device=dev, precision=precision,
                 max_seconds=max_seconds, identity=identity)


def _check_folder(folder: Path) -> None:
    """A folder must hold an XCodec2 ``config.json``: say so in one line rather than fail inside transformers."""
    config = folder / "config.json"
    if not config.is_file():
        raise ModelError(f"codec folder {str(folder)!r} has no config.json (expected a saved Xcodec2Model)")
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        raise ModelError(f"codec folder {str(folder)!r}: config.json is not readable JSON") from None
    if model_type != "xcodec2":
        raise ModelError(f"codec folder {str(folder)!r} holds a {model_type!r} model, not an XCodec2 codec")
