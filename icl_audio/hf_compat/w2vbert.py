"""A memory-bounded self-attention for XCodec2's semantic encoder (``Wav2Vec2BertModel``, ``relative_key``).

Optional layer over the plain module (:mod:`icl_audio.codec_encode` runs either). The plain
attention materialises, per layer, a (T, T, head_size) table of distance embeddings and then full
(B, heads, T, T) score tensors. For a 30 s clip (T = 1,500 frames) at the real w2v-BERT 2.0 shape
(16 heads of 64) that is 576 MB for the table and 144 MB per clip for each score tensor, allocated
and freed 24 times per clip. Two codec worker threads that happen to reach those peaks at the
same moment set the process's peak memory, so it depended on timing and grew with the number of
batches (measured: 6 vs 60 thirty-second files, 1.30 vs 1.47 GB peak with the tiny debug codec).

Here the table is never built: the distance embedding has only ``left + right + 1`` distinct rows, so
``q . E[clamp(r - l)]`` is ``(q @ E^T)[l, clamp(r - l)]``, a (T, left + right + 1) product and a
gather. And the queries are processed a block of rows at a time (softmax is per row), so a layer
holds one (B, heads, rows, T) block, a few MB::

  for each block of query rows l0..l1:
      s = (q_b @ k^T) * scale + gather(q_b @ E^T, clamp(r - l) + left) * scale (+ mask rows)
      out[l0..l1] = softmax(s) @ v

Same arithmetic as the module with the sums reassociated (differences ~1e-7 relative).

**It proves itself.** :func:`bounded_semantic_encoder` builds the bounded encoder once per loaded
semantic encoder, runs a probe through it and through the module, and uses it only if they agree;
another layout, a missing attribute or a mismatch gives ONE warning and the plain module (more
memory, same codes). The module itself is never modified: the bounded encoder is a shallow copy
whose attention submodules are replaced, sharing every weight.

Contact points with transformers internals (``transformers.models.wav2vec2_bert.modeling_wav2vec2_bert``):

* ``Wav2Vec2BertModel.encoder.layers``: each layer's ``self_attn`` is called as
  ``self_attn(hidden_states=..., attention_mask=..., relative_position_embeddings=..., ...)`` and
  returns ``(hidden_states, attention_weights)``; the weights are unused by the encoder.
* ``Wav2Vec2BertSelfAttention``: ``linear_q``, ``linear_k``, ``linear_v``, ``linear_out``,
  ``num_heads``, ``head_size``, ``position_embeddings_type == "relative_key"``,
  ``left_max_position_embeddings``, ``right_max_position_embeddings``, ``distance_embedding``; scores
  ``q.k / sqrt(head_size) + q.E[clamp(r - l) + left] / sqrt(head_size)``, additive mask, softmax.

Tested with transformers 5.25.0 and 5.13.0 (the first release with ``Xcodec2Model``).
"""

from __future__ import annotations

import copy
import math

import torch

# Floats of one (B, heads, rows, T) score block: 2 M floats = 8 MB, whatever the clip length.
_BLOCK_FLOATS = 1 << 21
_PROBE_FRAMES = 200  # longer than the real model's left + right + 1 = 73 distances, so clamping is exercised
_PROBE_BLOCK_ROWS = 48  # the probe runs several blocks, with a ragged last one
# Relative to the output's largest magnitude; reassociation gives ~1e-6 in fp32, ~1e-2 in bf16.
_PROBE_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-4}
_PROBE_TOLERANCE_LOW_PRECISION = 3e-2

# The proof's verdict is kept on the semantic encoder module itself (dropped with the model).
_MEMO = "_icl_audio_bounded_semantic"


def bounded_semantic_encoder(semantic_encoder):
    """The semantic encoder to run for ``semantic_encoder`` (a ``Wav2Vec2BertModel``): a shallow copy
    with memory-bounded attention when it matches the module on a probe, else the module itself
    with one warning. Proven once per module; later calls return the same object."""
    from icl_audio.hf_compat import proven_once

    return proven_once(semantic_encoder, _MEMO, prove)


def prove(semantic_encoder, *, block_rows: int | None = _PROBE_BLOCK_ROWS):
    """Build the bounded encoder and compare it with the module on a fixed probe; return it if they
    agree, else ``semantic_encoder`` (after one warning line)."""
    try:
        bounded = build(semantic_encoder)
        probe = _probe(semantic_encoder)
        with torch.inference_mode():
            want = semantic_encoder(probe).last_hidden_state
            for attention in _attentions(bounded):
                attention.block_rows = block_rows
            try:
                got = bounded(probe).last_hidden_state
            finally:
                for attention in _attentions(bounded):
                    attention.block_rows = None
        if got.shape != want.shape:
            raise ValueError(f"output shape {tuple(got.shape)} instead of {tuple(want.shape)}")
        scale = float(want.float().abs().max()) or 1.0
        diff = float((got.float() - want.float()).abs().max()) / scale
        tolerance = _PROBE_TOLERANCE.get(probe.dtype, _PROBE_TOLERANCE_LOW_PRECISION)
        if not diff <= tolerance:  # also catches NaN
            raise ValueError(f"differs from the module by {diff:.2e} (relative)")
    except Exception as exc:  # noqa: BLE001 - any failure: stay correct, use more memory
        from icl_audio.hf_compat import warn_fallback

        warn_fallback("memory-bounded semantic attention", exc, "using the plain module (more memory, same codes)")
        return semantic_encoder
    return bounded


def build(semantic_encoder):
    """A shallow copy of ``semantic_encoder`` whose layers' ``self_attn`` are :class:`BoundedAttention`
    (sharing the weights); the module and its submodules are left untouched."""
    layers = semantic_encoder.encoder.layers
    if len(layers) == 0:
        raise ValueError("the semantic encoder has no layers")
    new_layers = _shallow(layers)
    for name, layer in layers._modules.items():
        new_layer = _shallow(layer)
        new_layer._modules["self_attn"] = BoundedAttention(layer.self_attn)
        new_layers._modules[name] = new_layer
    encoder = _shallow(semantic_encoder.encoder)
    encoder._modules["layers"] = new_layers
    model = _shallow(semantic_encoder)
    model._modules["encoder"] = encoder
    return model


def _shallow(module):
    # copy.copy shares parameters and buffers; a module dict of its own lets children be replaced
    # without touching the original.
    clone = copy.copy(module)
    clone._modules = dict(module._modules)
    return clone


def _attentions(model) -> list["BoundedAttention"]:
    return [layer.self_attn for layer in model.encoder.layers]


def _probe(semantic_encoder):
    parameter = next(semantic_encoder.parameters())
    dim = semantic_encoder.config.feature_projection_input_dim
    generator = torch.Generator().manual_seed(1234)
    features = torch.randn(2, _PROBE_FRAMES, dim, generator=generator)
    return features.to(device=parameter.device, dtype=parameter.dtype)


class BoundedAttention(torch.nn.Module):
    """``Wav2Vec2BertSelfAttention`` (``relative_key``) computed a block of query rows at a time,
    without the (T, T, head_size) distance table. Shares the wrapped module's weights."""

    def __init__(self, attention) -> None:
        super().__init__()
        if getattr(attention, "position_embeddings_type", None) != "relative_key":
            raise ValueError(
                f"attention with position embeddings {getattr(attention, 'position_embeddings_type', None)!r}, "
                "not 'relative_key'"
            )
        self.inner = attention
        self.heads = int(attention.num_heads)
        self.head_size = int(attention.head_size)
        self.left = int(attention.left_max_position_embeddings)
        self.right = int(attention.right_max_position_embeddings)
        if attention.distance_embedding.weight.shape[0] != self.left + self.right + 1:
            raise ValueError("distance_embedding does not hold left + right + 1 distances")
        self.block_rows: int | None = None  # None: from _BLOCK_FLOATS (the probe sets it small)

    def forward(self, hidden_states, attention_mask=None, relative_position_embeddings=None, **kwargs):
        inner = self.inner
        batch, length, _ = hidden_states.shape
        shape = (batch, length, self.heads, self.head_size)
        query = inner.linear_q(hidden_states).view(shape).transpose(1, 2)
        key_t = inner.linear_k(hidden_states).view(shape).permute(0, 2, 3, 1)  # (B, H, d, T)
        value = inner.linear_v(hidden_states).view(shape).transpose(1, 2)
        table_t = inner.distance_embedding.weight.to(query.dtype).t()  # (d, left + right + 1)
        scale = 1.0 / math.sqrt(self.head_size)
        rows = self.block_rows or max(1, _BLOCK_FLOATS // max(1, batch * self.heads * length))
        columns = torch.arange(length, device=hidden_states.device)
        out = torch.empty_like(query)
        for start in range(0, length, rows):
            stop = min(length, start + rows)
            q = query[:, :, start:stop]
            scores = torch.matmul(q, key_t)
            distance = columns[None, :] - torch.arange(start, stop, device=columns.device)[:, None]
            index = (distance.clamp(-self.left, self.right) + self.left).expand(batch, self.heads, -1, -1)
            scores += torch.gather(torch.matmul(q, table_t), -1, index)
            scores *= scale
            if attention_mask is not None:
                scores += attention_mask[..., start:stop, :] if attention_mask.shape[-2] == length else attention_mask
            out[:, :, start:stop] = torch.matmul(torch.softmax(scores, dim=-1), value)
        hidden = out.transpose(1, 2).reshape(batch, length, self.heads * self.head_size)
        return inner.linear_out(hidden), None
