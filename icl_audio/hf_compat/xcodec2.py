"""A faster CPU acoustic branch for ``Xcodec2Model``: block-matrix anti-aliased activations.

Optional layer over the plain module (:mod:`icl_audio.codec_encode` runs either). Each of the acoustic
encoder's anti-aliased activations upsamples x2 (12-tap filter), applies SnakeBeta and downsamples
x2 (12-tap filter); the plain modules run a zero-stuffing grouped transposed convolution, pad and
copy the 2x signal several times: about half of the branch's CPU time, most of it memory traffic.
Here the signal is cut into blocks of P output samples and both filters become small dense
matrices, so the work is two GEMMs and four in-place passes per chunk of rows small enough to stay
in cache::

  x (C, T) --replicate pad--> windows of P+11 samples every P  (rows: one per channel and block)
  windows @ M_up (P+11, 2P+10)  -> the 2P+10 upsampled samples block b needs: u[2bP-5 .. 2bP+2P+4]
  snake in place; samples outside [0, 2T) take the edge value (the downsampler pads by replication)
  @ M_down (2P+10, P)           -> out[bP .. bP+P-1]

Same arithmetic as the modules with the sums reassociated (differences ~1e-7 relative).

**It proves itself.** :func:`fast_acoustic_encoder` builds the fast path once per loaded encoder,
runs a few hundred samples through it and through the plain module, and uses it only if both
agree; a missing attribute, another layout or a mismatch gives ONE warning and the plain module
(slower, same codes). Never a crash, never wrong codes.

Contact points with transformers internals (``transformers.models.xcodec2.modeling_xcodec2``):

* ``Xcodec2Encoder``: ``conv1``, ``block`` (iterable of blocks), ``snake1``, ``conv2``; forward order
  conv1 -> blocks -> snake1 -> conv2.
* ``Xcodec2EncoderBlock``: ``res_unit1``, ``res_unit2``, ``res_unit3``, ``snake1``, ``conv1``; forward
  order res units -> snake1 -> conv1.
* ``Xcodec2ResidualUnit``: ``snake1``, ``conv1``, ``snake2``, ``conv2``; output = centre-cropped input
  + conv2(snake2(conv1(snake1(x)))).
* ``Xcodec2AntiAliasedActivation1d``: ``act`` (``Xcodec2SnakeBeta``: log-scale ``alpha``, ``beta``,
  ``no_div_by_zero``; x + sin(e^alpha x)^2 / (e^beta + eps)), ``upsample`` (``Xcodec2UpSample1d``:
  ``filter`` of 12 taps, ``ratio`` 2, ``pad`` 5, replicate padding, gain ``ratio``), ``downsample``
  (``Xcodec2DownSample1d``: ``filter`` of 12 taps, ``stride`` 2, ``pad_left`` 5, replicate padding).

**The encode order.** :mod:`icl_audio.codec_encode` runs ``Xcodec2Model.encode``'s steps one by one,
so that each branch can run in its own precision and through a fast path:
``semantic_encoder(features).last_hidden_state`` -> ``semantic_adapter`` (channels first), beside
``acoustic_encoder(waveform)``; both concatenated on the channel axis (semantic first),
``fc_encoder``, ``quantizer`` -> codes. :func:`proven_encode_order` proves that order once per loaded
model against ``Xcodec2Model.encode`` itself on a probe clip (plain modules, fp32: the codes must be
identical); if it differs, ONE warning, and the codec calls ``Xcodec2Model.encode`` (the plain path:
same codes as transformers, no per-branch precision or fast path).

Tested with transformers 5.25.0 and 5.13.0 (the first release with ``Xcodec2Model``).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Attribute names read from transformers' modules (see the docstring); a rename upstream makes the
# proof fail with AttributeError and the plain module is used.
_RES_UNITS = ("res_unit1", "res_unit2", "res_unit3")

# Block length P: the matrices hold (P+11)(2P+10) + (2P+10)P entries where the filters have 24 taps per
# sample, so smaller blocks waste fewer multiply-adds but make smaller GEMMs; 32 measured fastest at
# every stage of the encoder (20% faster than 64, the same as 16). A change of P reassociates sums
# only (~1e-7 relative, as a different CPU's kernels would): codes are those of the same encoder.
_BLOCK = 32
_CHUNK_ELEMENTS = 1 << 17  # rows per chunk * (2P+10) floats: ~0.5 MB, inside L2
_PROBE_SAMPLES = 640  # two codec hops through both paths: enough to exercise every block edge
_PROBE_TOLERANCE = 1e-4  # relative to the output's largest magnitude; reassociation gives ~1e-6

# The proofs' verdicts are kept on the modules themselves (dropped with the model).
_MEMO = "_icl_audio_fast_acoustic"
_ORDER_MEMO = "_icl_audio_encode_order"
_ORDER_PROBE_SAMPLES = 3200  # 0.2 s: ten codec frames through both paths


def fast_acoustic_encoder(encoder):
    """The acoustic branch to run on CPU for ``encoder`` (an ``Xcodec2Encoder``): the block-matrix
    path when it matches the module on a probe clip, else ``encoder`` itself with one warning.

    Built and proven once per encoder module; later calls return the same object (or the module,
    without warning again). The weights are read at build time: a model whose acoustic weights
    change afterwards must not reuse it.
    """
    from icl_audio.hf_compat import proven_once

    return proven_once(encoder, _MEMO, prove)


def prove(encoder):
    """Build the fast path for ``encoder`` and compare it with the module on a fixed probe; return
    the fast path if they agree, else ``encoder`` (after one warning line)."""
    import torch

    try:
        fast = FastAcousticEncoder.build(encoder)
        device = next(encoder.parameters()).device
        probe = _probe(device)
        with torch.inference_mode():
            want = encoder(probe)
            got = fast(probe)
        if got.shape != want.shape:
            raise ValueError(f"output shape {tuple(got.shape)} instead of {tuple(want.shape)}")
        scale = float(want.abs().max()) or 1.0
        diff = float((got - want).abs().max()) / scale
        if not diff <= _PROBE_TOLERANCE:  # also catches NaN
            raise ValueError(f"differs from the module by {diff:.2e} (relative)")
    except Exception as exc:  # noqa: BLE001 - any failure: stay correct, lose speed
        from icl_audio.hf_compat import warn_fallback

        warn_fallback("fast CPU acoustic encoder", exc, "using the plain module (slower, same codes)")
        return encoder
    return fast


def proven_encode_order(model) -> bool:
    """Whether icl-audio's step-by-step encode (:func:`icl_audio.codec_encode.encode_clips`) gives the
    codes of ``model.encode`` (an ``Xcodec2Model``) on a probe clip: True, or False after one warning
    (the codec then calls ``model.encode`` itself). Proven once per model, before any precision change."""
    from icl_audio.hf_compat import proven_once

    return proven_once(model, _ORDER_MEMO, prove_encode_order)


def prove_encode_order(model) -> bool:
    """Encode a probe clip both ways with the plain modules in fp32 and compare the codes."""
    import numpy as np
    import torch

    from icl_audio.codec_encode import EncodeOptions, batch_inputs, encode_clips

    try:
        device = next(model.parameters()).device
        t = np.arange(_ORDER_PROBE_SAMPLES) / 16000
        clip = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * np.sin(2 * np.pi * 3100 * t ** 1.5)).astype(np.float32)
        (ours,) = encode_clips(model, [clip], EncodeOptions(), device=device)
        features, wave = batch_inputs([clip], device)
        with torch.inference_mode():
            theirs = model.encode(wave[:, None, :], features).audio_codes.reshape(-1)[: len(ours)].cpu().numpy()
        if theirs.shape != ours.shape or not np.array_equal(theirs, ours):
            raise ValueError(f"{int((theirs != ours).sum()) if theirs.shape == ours.shape else 'all'} of "
                             f"{len(ours)} probe codes differ from Xcodec2Model.encode")
    except Exception as exc:  # noqa: BLE001 - any failure: stay correct with transformers' own encode
        from icl_audio.hf_compat import warn_fallback

        warn_fallback("the step-by-step XCodec2 encode", exc, "using Xcodec2Model.encode (plain fp32, slower)")
        return False
    return True


def _probe(device):
    import torch

    # A deterministic chirp plus a step: low and high frequencies, and edges for the replicate padding.
    t = torch.arange(_PROBE_SAMPLES, dtype=torch.float64) / 16000
    x = 0.4 * torch.sin(2 * torch.pi * (200 + 6000 * t) * t) + 0.2 * (t > t[_PROBE_SAMPLES // 3])
    return torch.stack([x, -0.5 * x.flip(0)]).float()[:, None, :].to(device)


class BlockActivation:
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


class FastAcousticEncoder:
    """``Xcodec2Encoder.forward`` with block-matrix activations. Use :func:`fast_acoustic_encoder`,
    which proves it against the module first; ``build`` raises AttributeError/ValueError on another layout."""

    def __init__(self, encoder, activations: dict[int, BlockActivation]) -> None:
        self.encoder = encoder
        self.activations = activations  # keyed by id() of the module they replace

    @classmethod
    def build(cls, encoder) -> "FastAcousticEncoder":
        activations = {}
        for block in encoder.block:
            for unit in (getattr(block, name) for name in _RES_UNITS):
                for act in (unit.snake1, unit.snake2):
                    activations[id(act)] = BlockActivation(act)
                _ = unit.conv1, unit.conv2
            activations[id(block.snake1)] = BlockActivation(block.snake1)
            _ = block.conv1
        activations[id(encoder.snake1)] = BlockActivation(encoder.snake1)
        _ = encoder.conv1, encoder.conv2
        return cls(encoder, activations)

    def _act(self, module, x):
        return self.activations[id(module)](x)

    def __call__(self, x):
        enc = self.encoder
        x = enc.conv1(x)
        for block in enc.block:
            for unit in (getattr(block, name) for name in _RES_UNITS):
                y = unit.conv1(self._act(unit.snake1, x))
                y = unit.conv2(self._act(unit.snake2, y))
                pad = (x.shape[-1] - y.shape[-1]) // 2
                if pad > 0:
                    x = x[..., pad:-pad]
                x = y.add_(x)
            x = block.conv1(self._act(block.snake1, x))
        return enc.conv2(self._act(enc.snake1, x))


__all__ = ["BlockActivation", "FastAcousticEncoder", "fast_acoustic_encoder", "prove", "proven_encode_order",
           "prove_encode_order"]
