"""Audio -> XCodec2 codes: load the codec (hub id, local folder or tiny debug build) and encode clips in batches."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from icl_audio import paths
from icl_audio.constants import DEBUG_CODEBOOK_SIZE, DEBUG_NAME, DEFAULT_CODEC, SAMPLE_RATE
from icl_audio.errors import AudioError, ModelError
from icl_audio.features import PREPROCESSING_VERSION, n_codes, padded_length
from icl_audio.hub import looks_like_path, quiet_transformers, resolve_device

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_MAX_SECONDS = 30.0
CROP_POLICIES = ("center", "head")
PRECISIONS = ("auto", "fp32", "bf16")
# Our own encoding path (branch split, block-matrix anti-aliased activations). Bump when it changes codes.
ENCODER_VERSION = "1"
# Clips per forward pass are bounded by total samples, so long clips come in small batches.
DEFAULT_BATCH_SAMPLES = 8 * 10 * SAMPLE_RATE
MAX_WORKERS = 4  # CPU worker threads encoding clips side by side
DEBUG_FOLDER = "debug-xcodec2"
DEBUG_BUILD_VERSION = "3"
_DEBUG_MARKER = "icl-audio-debug.json"


# --------------------------------------------------------------------------------------------------
# The codec


class Codec:
    """An XCodec2 encoder: float32 16 kHz mono clips in, one 1-D array of codes (50 per second) out.

    Built by ``load_codec``; wraps a ``transformers.Xcodec2Model``. Attributes: ``model_id``,
    ``revision`` (hub commit or folder content hash), ``codebook_size``, ``device``, ``precision``
    (resolved: "fp32" or "bf16"), ``max_seconds`` and ``crop`` (the long-clip policy), and
    ``fingerprint``, a hash of everything that changes codes (cache key part).
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
        crop: str = "center",
        batch_samples: int = DEFAULT_BATCH_SAMPLES,
        identity: str | None = None,
    ) -> None:
        """Wrap a loaded ``Xcodec2Model`` (``load_codec`` is the usual way in). ``identity`` stands for
        the model in the fingerprint (default ``model_id``; "local-folder" for folders, whose
        ``revision`` is a content hash)."""
        import torch

        if precision not in PRECISIONS:
            raise ModelError(f"unknown codec precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        if crop not in CROP_POLICIES:
            raise ModelError(f"unknown crop policy {crop!r}; use one of {', '.join(CROP_POLICIES)}")
        if max_seconds is not None and max_seconds <= 0:
            raise ModelError(f"max_seconds must be positive, got {max_seconds!r}")
        self.model = model
        self.model_id = model_id
        self.revision = revision
        self.device = torch.device(device)
        # "auto" is the faithful path everywhere: with bf16 anywhere in the encoder, codes differ from
        # the fp32 reference on 6-20 % of frames (measured with random weights), too many for a default.
        self.precision = "fp32" if precision == "auto" else precision
        self.max_seconds = max_seconds
        self.crop = crop
        self.batch_samples = max(int(batch_samples), padded_length(SAMPLE_RATE))
        self.codebook_size = int(np.prod(model.config.quantization_levels))
        # Seconds per stage, summed over calls (and over worker threads: CPU-seconds, not wall time).
        self.stage_seconds: dict[str, float] = {"features": 0.0, "semantic": 0.0, "acoustic": 0.0, "quantize": 0.0}
        self._timer_lock = threading.Lock()
        self._semantic_dtype = torch.float32
        if self.precision == "bf16":
            self._semantic_dtype = torch.bfloat16
            # The codec owns its model: converting in place avoids keeping two copies of 0.6 B weights.
            model.semantic_encoder.to(torch.bfloat16)
        # On CUDA, bf16 is fast for both branches; on CPU bf16 grouped convolutions are slower than fp32.
        bf16_acoustic = self.precision == "bf16" and self.device.type == "cuda"
        self._acoustic_dtype = torch.bfloat16 if bf16_acoustic else torch.float32
        # The block-matrix activations pay off where memory traffic dominates (CPU); cuDNN's grouped
        # convolutions are already fast.
        if self.device.type == "cpu":
            self._acoustic = _FastAcousticEncoder.build(model.acoustic_encoder)
        else:
            self._acoustic = model.acoustic_encoder
        self.fingerprint = _fingerprint(
            model_id=identity or model_id,
            revision=revision,
            precision=self.precision,
            max_seconds=max_seconds,
            crop=crop,
        )

    def __repr__(self) -> str:
        return (
            f"Codec({self.model_id!r}, revision={self.revision[:12]!r}, device={str(self.device)!r}, "
            f"precision={self.precision!r}, codebook_size={self.codebook_size})"
        )

    def prepare(self, clip: np.ndarray) -> np.ndarray:
        """The samples that are actually encoded for ``clip``: float32 1-D, cropped to ``max_seconds``.

        Accepts a 1-D array (or anything reshapeable to one) of float samples at 16 kHz; raises
        AudioError for a non-finite clip. Does not warn (``encode`` does, once per call).
        """
        x = np.asarray(clip, dtype=np.float32)
        if x.ndim != 1:
            if x.ndim == 2 and 1 in x.shape:
                x = x.reshape(-1)
            else:
                raise AudioError(f"codec input must be mono 1-D samples, got an array of shape {x.shape}")
        if not np.isfinite(x).all():
            raise AudioError("codec input contains NaN or infinite samples")
        limit = self._max_samples()
        if limit is not None and x.shape[0] > limit:
            start = (x.shape[0] - limit) // 2 if self.crop == "center" else 0
            x = x[start : start + limit]
        return np.ascontiguousarray(x)

    def _max_samples(self) -> int | None:
        return None if self.max_seconds is None else int(round(self.max_seconds * SAMPLE_RATE))

    def encode(
        self, clips: Sequence[np.ndarray], *, progress: Callable[[int], None] | None = None
    ) -> list[np.ndarray]:
        """Encode clips to codes: one 1-D int64 array per clip, ``len(clip) // 320 + 1`` codes each.

        ``clips``: float32 16 kHz mono arrays of any lengths (longer than ``max_seconds`` ones are
        cropped, with a warning). Clips are grouped by padded length so no clip shares a batch with
        padding: a clip's codes do not depend on the other clips. On CPU, batches are spread over
        worker threads (see ``_parallelism``). ``progress(n)`` is called from the calling thread with
        the number of clips just finished (an increment) after each batch.
        """
        import torch

        limit = self._max_samples()
        too_long = [i for i, c in enumerate(clips) if limit is not None and np.asarray(c).size > limit]
        if too_long:
            warnings.warn(
                f"{len(too_long)} clip(s) longer than {self.max_seconds:g} s: encoding only the "
                f"{'middle' if self.crop == 'center' else 'first'} {self.max_seconds:g} s of each "
                "(codec max_seconds)",
                stacklevel=2,
            )
        prepared = [self.prepare(c) for c in clips]
        out: list[np.ndarray | None] = [None] * len(prepared)
        workers, threads = self._parallelism(len(prepared))
        cores = max(1, torch.get_num_threads())
        batches = self._batches(prepared, workers)

        def run(batch: list[int]) -> list[np.ndarray]:
            length = padded_length(prepared[batch[0]].shape[0])
            wave = np.zeros((len(batch), length), dtype=np.float32)
            for row, i in enumerate(batch):
                wave[row, : prepared[i].shape[0]] = prepared[i]
            return self._encode_padded(torch.from_numpy(wave), branch_threads=workers == 1 and threads < cores)

        def finish(batch: list[int], codes: list[np.ndarray]) -> None:
            for row, i in enumerate(batch):
                if codes[row].shape[0] != n_codes(prepared[i].shape[0]):
                    raise AssertionError("codec returned an unexpected number of codes")
                out[i] = codes[row]
            if progress is not None:
                progress(len(batch))

        with _torch_threads(threads):
            if workers == 1:
                for batch in batches:
                    finish(batch, run(batch))
                return out  # type: ignore[return-value]
            from concurrent.futures import ThreadPoolExecutor, as_completed

            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="icl-codec") as pool:
                futures = {pool.submit(run, batch): batch for batch in batches}
                for future in as_completed(futures):  # progress is reported from the caller's thread
                    finish(futures[future], future.result())
        return out  # type: ignore[return-value]

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
        """Indices grouped by padded length (longest first), each group cut to the sample budget and,
        with several workers, into at least as many batches as workers."""
        buckets: dict[int, list[int]] = {}
        for i, x in enumerate(prepared):
            buckets.setdefault(padded_length(x.shape[0]), []).append(i)
        batches = []
        for length in sorted(buckets, reverse=True):
            idx = buckets[length]
            per_batch = max(1, min(self.batch_samples // length, -(-len(idx) // workers)))
            batches += [idx[j : j + per_batch] for j in range(0, len(idx), per_batch)]
        return batches

    def _encode_padded(self, wave: "torch.Tensor", branch_threads: bool = False) -> list[np.ndarray]:
        """Codes for a (batch, samples) tensor of equal-length, alignment-padded clips.

        Mirrors ``Xcodec2Model.encode`` step by step, so each branch can run in its own precision and
        the acoustic branch through the block-matrix activations (CPU); no attention or padding masks
        are needed because a batch never mixes lengths. ``branch_threads``: run the acoustic branch
        in a second thread while this one runs the semantic branch.
        """
        import torch

        from icl_audio.features import semantic_features

        model = self.model
        timer = self.stage_seconds
        with torch.inference_mode(), _faithful_cuda_math(self.device, self.precision == "fp32"):
            t0 = time.perf_counter()
            wave = wave.to(self.device)
            feats = semantic_features(wave)
            t1 = time.perf_counter()
            pending = None
            if branch_threads:
                from concurrent.futures import ThreadPoolExecutor

                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="icl-codec-acoustic")
                pending = pool.submit(self._acoustic_branch, wave)
            try:
                semantic = model.semantic_encoder(feats.to(self._semantic_dtype)).last_hidden_state
                semantic = model.semantic_adapter(semantic.float().transpose(1, 2))
                _sync(self.device)
                t2 = time.perf_counter()
                acoustic, acoustic_seconds = pending.result() if pending else self._acoustic_branch(wave)
            finally:
                if pending is not None:
                    pool.shutdown(wait=True)
            t3 = time.perf_counter()
            hidden = model.fc_encoder(torch.cat([semantic, acoustic], dim=1).transpose(1, 2))
            _, indices = model.quantizer(hidden)
            codes = indices[..., 0].to("cpu", torch.int64).numpy()
            t4 = time.perf_counter()
        with self._timer_lock:
            timer["features"] += t1 - t0
            timer["semantic"] += t2 - t1
            timer["acoustic"] += acoustic_seconds
            timer["quantize"] += t4 - t3
        return [np.ascontiguousarray(row) for row in codes]

    def _acoustic_branch(self, wave: "torch.Tensor") -> tuple["torch.Tensor", float]:
        """The acoustic encoder's output (float32) for a (batch, samples) tensor, and the seconds it took."""
        import torch

        start = time.perf_counter()
        with torch.inference_mode():  # thread-local: entered again when run in a worker thread
            if self._acoustic_dtype == torch.float32:
                out = self._acoustic(wave[:, None, :])
            else:
                with torch.autocast(self.device.type, dtype=self._acoustic_dtype):
                    out = self._acoustic(wave[:, None, :]).float()
            _sync(self.device)
        return out, time.perf_counter() - start


def _sync(device) -> None:
    # Stage timings are only honest on CUDA once queued kernels have finished.
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


class _torch_threads:
    """Set torch's intra-op thread count for a block, then restore it."""

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


class _faithful_cuda_math:
    """On CUDA, switch TF32 off for the fp32 path (cuDNN convolutions use it by default)."""

    def __init__(self, device, strict: bool) -> None:
        self.active = strict and device.type == "cuda"

    def __enter__(self):
        if self.active:
            import torch

            self.saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        if self.active:
            import torch

            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = self.saved
        return False


def _fingerprint(*, model_id: str, revision: str, precision: str, max_seconds, crop: str) -> str:
    payload = {
        "model": model_id,
        "revision": revision,
        "preprocessing": PREPROCESSING_VERSION,
        "encoder": ENCODER_VERSION,
        "precision": precision,
        "max_seconds": max_seconds,
        "crop": crop,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------------------
# The acoustic branch with block-matrix anti-aliased activations
#
# Each of the encoder's 36 activations upsamples x2 (12-tap filter), applies SnakeBeta and downsamples
# x2 (12-tap filter). The plain modules run a zero-stuffing grouped transposed convolution, pad and
# copy the 2x signal several times: about half of the branch's CPU time (profiled), most of it memory
# traffic.
# Here the signal is cut into blocks of P output samples and both filters become small dense
# matrices, so the work is two GEMMs and four in-place passes per chunk of rows small enough to stay
# in cache:
#
#   x (C, T) --replicate pad--> windows of P+11 samples every P  (rows: one per channel and block)
#   windows @ M_up (P+11, 2P+10)  -> the 2P+10 upsampled samples block b needs: u[2bP-5 .. 2bP+2P+4]
#   snake in place; samples outside [0, 2T) take the edge value (the downsampler pads by replication)
#   @ M_down (2P+10, P)           -> out[bP .. bP+P-1]
#
# Same arithmetic as the modules with the sums reassociated (differences ~1e-7 relative).

# Block length P: the matrices hold (P+11)(2P+10) + (2P+10)P entries where the filters have 24 taps per
# sample, so smaller blocks waste fewer multiply-adds but make smaller GEMMs; 32 measured fastest at
# every stage of the encoder (20% faster than 64, the same as 16). A change of P reassociates sums
# only (~1e-7 relative, as a different CPU's kernels would): codes are those of the same encoder.
_BLOCK = 32
_CHUNK_ELEMENTS = 1 << 17  # rows per chunk * (2P+10) floats: ~0.5 MB, inside L2


class _BlockActivation:
    """One ``Xcodec2AntiAliasedActivation1d`` computed as block matrices (see above); (B, C, T) -> (B, C, T)."""

    def __init__(self, module, block: int = _BLOCK) -> None:
        import torch

        snake = module.act
        h = module.upsample.filter.detach().reshape(-1).double().cpu()
        g = module.downsample.filter.detach().reshape(-1).double().cpu()
        if (
            h.numel() != 12 or g.numel() != 12 or module.upsample.ratio != 2 or module.downsample.stride != 2
            or module.upsample.pad != 5 or module.downsample.pad_left != 5
        ):
            raise ValueError("unexpected anti-aliasing filter layout")
        p = block
        k_in, k_up = p + 11, 2 * p + 10
        # Polyphase taps of the upsampler as a correlation over the replicate-padded input; its gain of
        # 2 is folded in (a power of two: exact). Even output samples u[2q] = sum_j even[j] x[q+j-3],
        # odd ones u[2q+1] = sum_j odd[j] x[q+j-2] (indices clamped to the clip).
        j = torch.arange(6)
        even, odd = 2 * h[2 * (5 - j) + 1], 2 * h[2 * (5 - j)]
        m_up = torch.zeros(k_in, k_up, dtype=torch.float64)
        for r in range(k_up):
            i = r - 5  # position of column r in the block's upsampled signal, relative to 2bP
            if i % 2 == 0:
                m_up[i // 2 + 3 + j, r] = even
            else:
                m_up[(i - 1) // 2 + 4 + j, r] = odd
        m_down = torch.zeros(k_up, p, dtype=torch.float64)
        for m in range(p):
            m_down[2 * m + torch.arange(12), m] = g
        device = snake.alpha.device
        self.block = p
        self.m_up = m_up.float().to(device)
        self.m_down = m_down.float().to(device)
        channels = snake.alpha.shape[0]
        self.alpha = torch.exp(snake.alpha.detach()).reshape(channels, 1, 1)
        self.inv_beta = (1.0 / (torch.exp(snake.beta.detach()) + snake.no_div_by_zero)).reshape(channels, 1, 1)

    def __call__(self, x):
        import torch

        b, c, t = x.shape
        p = self.block
        k_in, k_up = self.m_up.shape
        nb = -(-t // p)
        # Replicate padding by concatenation: a plain copy, several times faster than replication_pad1d.
        right_pad = nb * p - t + 5
        padded = torch.cat([x[..., :1].expand(b, c, 6), x, x[..., -1:].expand(b, c, right_pad)], dim=-1)
        windows = padded.unfold(-1, k_in, p)  # (B, C, nb, P+11), a view; copied per chunk below
        out = torch.empty(b, c, nb * p, dtype=x.dtype, device=x.device)
        # Blocks whose upsampled span passes 2T (at most the last two) take the last sample's value.
        right = [(blk, 2 * t - 2 * blk * p + 5) for blk in range(max(0, nb - 2), nb)]
        right = [(blk, r) for blk, r in right if r < k_up]
        group = max(1, _CHUNK_ELEMENTS // (nb * k_up))
        for bi in range(b):
            for c0 in range(0, c, group):
                c1 = min(c, c0 + group)
                u = torch.mm(windows[bi, c0:c1].reshape(-1, k_in), self.m_up).view(c1 - c0, nb, k_up)
                s = torch.mul(u, self.alpha[c0:c1])
                s.sin_()
                s.mul_(s)
                u.addcmul_(s, self.inv_beta[c0:c1])
                u[:, 0, :5] = u[:, 0, 5:6]  # upsampled positions before 0 take u[0]'s value
                for blk, r in right:
                    u[:, blk, r:] = u[:, blk, r - 1 : r]
                torch.mm(u.view(-1, k_up), self.m_down, out=out[bi, c0:c1].view(-1, p))
        return out[..., :t] if nb * p != t else out


class _FastAcousticEncoder:
    """``Xcodec2Encoder.forward`` with block-matrix activations; falls back to the module if its layout differs."""

    def __init__(self, encoder, activations: dict[int, "_BlockActivation"]) -> None:
        self.encoder = encoder
        self.activations = activations  # keyed by id() of the module they replace

    @classmethod
    def build(cls, encoder):
        try:
            activations = {}
            for block in encoder.block:
                for unit in (block.res_unit1, block.res_unit2, block.res_unit3):
                    for act in (unit.snake1, unit.snake2):
                        activations[id(act)] = _BlockActivation(act)
                    _ = unit.conv1, unit.conv2
                activations[id(block.snake1)] = _BlockActivation(block.snake1)
                _ = block.conv1
            activations[id(encoder.snake1)] = _BlockActivation(encoder.snake1)
            _ = encoder.conv1, encoder.conv2
        except (AttributeError, ValueError) as exc:  # another transformers layout: stay correct, lose speed
            log.warning("codec: plain acoustic encoder in use (%s)", exc)
            return encoder
        return cls(encoder, activations)

    def _act(self, module, x):
        return self.activations[id(module)](x)

    def __call__(self, x):
        enc = self.encoder
        x = enc.conv1(x)
        for block in enc.block:
            for unit in (block.res_unit1, block.res_unit2, block.res_unit3):
                y = unit.conv1(self._act(unit.snake1, x))
                y = unit.conv2(self._act(unit.snake2, y))
                pad = (x.shape[-1] - y.shape[-1]) // 2
                if pad > 0:
                    x = x[..., pad:-pad]
                x = y.add_(x)
            x = block.conv1(self._act(block.snake1, x))
        return enc.conv2(self._act(enc.snake1, x))


# --------------------------------------------------------------------------------------------------
# Loading


def load_codec(
    name: str = DEFAULT_CODEC,
    *,
    device: str = "auto",
    revision: str | None = None,
    precision: str = "auto",
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    crop: str = "center",
) -> Codec:
    """Load an XCodec2 codec with ``transformers.Xcodec2Model``.

    ``name``: a hub id (default "HKUSTAudio/xcodec2-hf"; read from the Hugging Face cache, downloaded
    only when online), a local folder holding ``config.json`` and the weights, or "debug" (a tiny
    model with 256 codes, built deterministically into ``paths.models_dir()/debug-xcodec2`` and
    loaded back through the same ``from_pretrained`` call). ``revision``: hub branch/tag/commit
    (ignored for folders). ``device``: "auto", "cpu", "cuda", "cuda:N". ``precision``: "auto" (=
    "fp32", codes faithful to the reference), "fp32" or "bf16" (faster, less faithful: semantic
    branch in bf16 on CPU, both branches on CUDA). ``max_seconds``: longer clips are cropped
    (``crop`` "center" or "head") with a warning; None disables the bound.
    Raises ModelError (one line) when the model cannot be found or loaded.
    """
    dev = resolve_device(device)
    if name == DEBUG_NAME:
        try:
            folder = ensure_debug_codec()
        except OSError as exc:
            raise ModelError(f"could not build the debug codec in {str(paths.models_dir())!r}: {exc}") from exc
        model = _from_pretrained(str(folder), revision=None, label="debug codec")
        model_id, rev, identity = DEBUG_NAME, folder_revision(folder), DEBUG_NAME
    else:
        local = Path(name).expanduser()
        if local.exists():
            _check_folder(local)
            model = _from_pretrained(str(local), revision=None, label=f"codec folder {str(local)!r}")
            # The content hash identifies a folder's model: moving or copying it keeps cached codes valid.
            model_id, rev, identity = str(local.resolve()), folder_revision(local), "local-folder"
        elif looks_like_path(name):
            raise ModelError(
                f"codec folder {name!r} does not exist; pass --codec with a folder holding config.json "
                "and model.safetensors, or a hub id"
            )
        else:
            model = _from_hub(name, revision)
            model_id, rev, identity = name, _hub_commit(name, revision), name
    model = model.to(dev).eval()
    return Codec(model, model_id=model_id, revision=rev, device=dev, precision=precision,
                 max_seconds=max_seconds, crop=crop, identity=identity)


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


def _from_pretrained(source: str, *, revision: str | None, label: str, local_only: bool = True):
    """``Xcodec2Model.from_pretrained`` with its hub, file and format errors turned into one-line ModelErrors."""
    import torch
    from safetensors import SafetensorError
    from transformers import Xcodec2Model

    kwargs = {"dtype": torch.float32, "local_files_only": local_only}
    if revision:
        kwargs["revision"] = revision
    try:
        with warnings.catch_warnings(), quiet_transformers():
            warnings.simplefilter("ignore")
            model = Xcodec2Model.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        # OSError covers the hub's not-found/offline errors and missing files; the others are damaged
        # or mismatched weights. The cause stays chained for --debug.
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"could not load {label}: {first}") from exc
    return model


def _hub_commit(name: str, revision: str | None) -> str:
    """The commit a hub model was loaded from: the name of its snapshot folder in the HF cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(name, "config.json", revision=revision)
    except (OSError, ValueError):
        path = None
    if isinstance(path, str):
        return Path(path).parent.name
    return revision or "unknown"


def _from_hub(name: str, revision: str | None):
    """A hub model from the local cache, or downloaded when the hub is reachable."""
    from huggingface_hub import constants as hf_constants

    cache = hf_constants.HF_HUB_CACHE
    rev = f" (revision {revision})" if revision else ""
    hint = (
        f"codec {name!r}{rev} is not in the Hugging Face cache ({cache}) and cannot be downloaded here; "
        f"run `huggingface-cli download {name}` on a connected machine and copy the cache, "
        "or pass --codec /path/to/folder"
    )
    try:
        return _from_pretrained(name, revision=revision, label=f"codec {name!r}", local_only=True)
    except ModelError:
        if hf_constants.HF_HUB_OFFLINE:
            raise ModelError(hint + " (HF_HUB_OFFLINE is set)") from None
    try:
        return _from_pretrained(name, revision=revision, label=f"codec {name!r}", local_only=False)
    except ModelError as exc:
        raise ModelError(f"{hint} [{exc}]") from None


def folder_revision(folder: Path) -> str:
    """A content hash of a model folder (config and weight files), standing in for a hub commit.

    Hashing gigabytes takes seconds, so results are remembered per (name, size, mtime) in
    ``paths.models_dir()/folder-hashes.json``.
    """
    folder = Path(folder).resolve()
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and (p.suffix in {".safetensors", ".bin"} or p.name == "config.json")
    )
    stat_key = hashlib.sha256(
        json.dumps([str(folder)] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]).encode()
    ).hexdigest()
    memo_path = paths.models_dir() / "folder-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
        if isinstance(memo, dict) and isinstance(memo.get(stat_key), str):
            return memo[stat_key]
    except (OSError, ValueError):
        memo = {}
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    value = "folder-" + digest.hexdigest()[:40]
    if not isinstance(memo, dict):
        memo = {}
    memo[stat_key] = value
    try:
        _atomic_write_text(memo_path, json.dumps(memo))
    except OSError:
        pass  # only a speed-up
    return value


def _atomic_write_text(path: Path, text: str) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------
# The tiny debug codec


def debug_config():
    """The tiny Xcodec2Config of the debug codec: real layout, small sizes, FSQ levels [4, 4, 4, 4]."""
    from transformers import Wav2Vec2BertConfig, Xcodec2Config

    semantic = Wav2Vec2BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        output_hidden_size=32,
        feature_projection_input_dim=160,
        conv_depthwise_kernel_size=5,
        left_max_position_embeddings=16,
        right_max_position_embeddings=4,
    )
    return Xcodec2Config(
        hidden_size=64,  # the decoder's GroupNorm has 32 groups: a multiple of 32
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        encoder_hidden_size=4,
        downsampling_ratios=[2, 2, 4, 4, 5],  # product = HOP: 50 codes per second, like the real one
        semantic_model_config=semantic,
        quantization_dim=64 + 32,
        quantization_levels=[4, 4, 4, 4],
    )


def _calibration_clips() -> np.ndarray:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    rng = np.random.default_rng(1234)
    clips = [0.3 * np.sin(2 * np.pi * f * t + i) for i, f in enumerate(np.geomspace(80, 5000, 16))]
    clips += [0.1 * rng.standard_normal(t.shape), 0.03 * rng.standard_normal(t.shape)]
    clips.append(0.3 * np.sin(2 * np.pi * (100 + 3000 * t) * t))
    return np.stack(clips).astype(np.float32)


def build_debug_codec(folder: Path) -> Path:
    """Build the debug codec into ``folder`` (which must not exist) with ``save_pretrained``.

    Deterministic: random weights from a fixed seed, then the quantizer's input projection is replaced
    by the 4 principal directions of the encoder's output on fixed synthetic sounds (tones from 80 Hz
    to 5 kHz, noise, a chirp), scaled to spread over the FSQ levels. Random init alone gives nearly
    constant codes; with this, different sounds get different codes and similar sounds (tones of
    nearby pitch, other phase or level) largely shared ones, so retrieval over debug codes has
    something to find. Returns ``folder``.
    """
    import torch
    from transformers import Xcodec2Model

    from icl_audio.features import semantic_features

    if DEBUG_CODEBOOK_SIZE != 4**4:
        raise AssertionError("debug codebook size and FSQ levels disagree")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Xcodec2Model(debug_config()).eval()
    # One thread: a tiny model gains nothing from more, and loses much when other processes share the cores.
    with torch.inference_mode(), _torch_threads(1):
        clips = _calibration_clips()
        wave = torch.from_numpy(np.stack([np.pad(c, (0, padded_length(c.size) - c.size)) for c in clips]))
        semantic = model.semantic_encoder(semantic_features(wave)).last_hidden_state
        semantic = model.semantic_adapter(semantic.transpose(1, 2))
        acoustic = model.acoustic_encoder(wave[:, None, :])
        hidden = model.fc_encoder(torch.cat([semantic, acoustic], dim=1).transpose(1, 2))
        hidden = hidden.reshape(-1, hidden.shape[-1]).double()
        mean = hidden.mean(dim=0)
        _, sing, vh = torch.linalg.svd(hidden - mean, full_matrices=False)
        n_dims = model.quantizer.project_in.out_features
        directions = vh[:n_dims]
        # A fixed sign per direction (SVD's is arbitrary): the largest entry positive.
        signs = torch.sign(directions.gather(1, directions.abs().argmax(dim=1, keepdim=True)))
        directions = directions * signs
        # Levels per standard deviation, falling with the component: the main directions decide the
        # code, minor ones split it less often (measured: tones of similar pitch then share codes,
        # while low tones, high tones and noise stay apart).
        spread = torch.tensor([0.8, 0.5, 0.3, 0.2], dtype=torch.float64)[:n_dims]
        scale = spread / (sing[:n_dims] / (hidden.shape[0] - 1) ** 0.5).clamp_min(1e-12)
        weight = directions * scale[:, None]
        bias = -(weight @ mean)
    with torch.no_grad():
        model.quantizer.project_in.weight.copy_(weight.float())
        model.quantizer.project_in.bias.copy_(bias.float())
    folder.mkdir(parents=True)
    with quiet_transformers():
        model.save_pretrained(folder)
    (folder / _DEBUG_MARKER).write_text(json.dumps({"version": DEBUG_BUILD_VERSION}))
    return folder


def _debug_valid(folder: Path) -> bool:
    try:
        marker = json.loads((folder / _DEBUG_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("version") == DEBUG_BUILD_VERSION
        and (folder / "config.json").is_file()
        and (folder / "model.safetensors").is_file()
    )


def ensure_debug_codec(root: Path | None = None) -> Path:
    """The debug codec's folder under ``root`` (default ``paths.models_dir()``), built if missing or stale.

    Safe with concurrent callers: each builds in its own temporary folder and renames it into place;
    a loser of the race discards its build and uses the winner's.
    """
    import tempfile

    root = Path(root) if root is not None else paths.models_dir()
    final = root / DEBUG_FOLDER
    if _debug_valid(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{DEBUG_FOLDER}.build-"))
    try:
        build_debug_codec(tmp / "model")
        if final.exists() and not _debug_valid(final):
            stale = Path(tempfile.mkdtemp(dir=root, prefix=f".{DEBUG_FOLDER}.stale-"))
            try:
                os.replace(final, stale / "old")
            except OSError:
                pass  # someone else moved it first
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp / "model", final)
        except OSError:
            if not _debug_valid(final):
                raise ModelError(f"could not create the debug codec in {str(final)!r}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


__all__ = [
    "Codec",
    "DEFAULT_MAX_SECONDS",
    "build_debug_codec",
    "debug_config",
    "ensure_debug_codec",
    "folder_revision",
    "load_codec",
    "resolve_device",
]
