"""The scorer's contact points with transformers' Llama internals, each behind a plain alternative.

The engine (:mod:`icl_audio.engine`) needs five things transformers does not offer as stable API.
Each is listed here with what it touches and how it is guarded: :func:`icl_audio.engine.verified_path`
runs the engine's fast paths once per loaded model against the plain path (public API only: custom
4-D masks and position ids) before they are trusted, through :func:`icl_audio.hf_compat.proven_once`.

1. **The KV-cache keyword and output field.** transformers <= 5.23 passes the cache to the decoder
   as ``past_key_values=`` and returns it as ``.past_key_values``; 5.24 renamed both to ``cache``
   (the old keyword is deprecated with a warning). :func:`cache_keyword` reads the decoder's
   ``forward`` signature; :func:`output_cache` reads whichever field exists.
2. **Building a cache from tensors** (the prompt's keys and values, reused by every further pass):
   ``DynamicCache(ddp_cache_data=[(k, v), ...])`` and the per-layer tensors of a returned cache
   (``cache.layers[i].keys/.values``; older ``key_cache``/``value_cache`` lists; legacy tuples).
   Guarded: the cached path is compared with the plain path (no cache at all) once per model.
3. **The pruned last decoder layer**: the last layer's query, attention, output projection and MLP
   run only on the rows the LM head reads (keys and values still for every row, as later passes
   need them). It reuses the layer's own submodules (``input_layernorm``, ``self_attn.{q,k,v,o}_proj``,
   ``self_attn.head_dim/scaling/layer_idx``, ``post_attention_layernorm``, ``mlp``), the module's
   ``apply_rotary_pos_emb`` and ``transformers.integrations.sdpa_attention.sdpa_attention_forward``.
   Applied only to the exact classes it was verified on (:data:`PRUNABLE_LAYERS`: Llama's decoder
   layer and attention); a layer with extra parts (Qwen3's q/k norms, ...) runs in full.

4. **The split attention of a fused pass** (:class:`SplitAttention`): the prompt and the first trie
   pass go through the model in ONE forward, [prompt | trie nodes], so that the layers' weights are
   read once for both (a separate 103-token trie pass cost ~12% of the prompt's pass for 8% of its
   tokens at the Llasa-1B shape on CPU). A 4-D mask over the whole sequence would make SDPA compute
   every block of the prompt's attention; instead :func:`split_sdpa`, registered with transformers'
   ``AttentionInterface`` and switched on for that forward only (``config._attn_implementation``),
   runs the prompt's rows as causal SDPA over the prompt's keys and only the trie rows under the
   given mask (trie rows x all keys). The split point reaches it as the ``icl_split`` keyword, which
   the decoder passes down to its attention (``icl_split=0``: a pass of trie rows alone, against a
   cache). Guarded: the fused path is compared with the plain path once per model.
5. **Grouped masked attention** (:func:`grouped_sdpa`, on the fused path): rows under an explicit
   mask (trie nodes, the pruned layer's read rows) attend with the query heads that share a
   key/value head stacked as one head's rows, as transformers' own ``pack_gqa`` does for a single
   query: no ``repeat_kv`` copies, and blocks of 4 x 103 rows instead of 103, which SDPA's CPU kernel
   runs ~1.8x faster at the Llasa-1B shape (0.14 s less per 50-label query, measured in one
   process). The same products and sums: the fused pass's hidden states are bit-identical there, and
   the tests hold it to ``sdpa_attention_forward`` within 1e-6 in fp32 for every mask form. Reads the
   module's ``num_key_value_groups``; anything it does not cover goes to transformers' own function.

Versions tested: transformers 5.13.0 (the lowest declared) and 5.25.0 (the newest tested).
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Any, Sequence

log = logging.getLogger("icl_audio")

# (decoder layer class, attention class) pairs, by module and name, that the pruned layer reproduces exactly.
PRUNABLE_LAYERS = {
    ("transformers.models.llama.modeling_llama", "LlamaDecoderLayer", "LlamaAttention"),
}


def cache_keyword(decoder: Any) -> str:
    """The keyword under which ``decoder.forward`` takes a KV cache: ``cache`` (5.24+) or ``past_key_values``."""
    try:
        params = inspect.signature(decoder.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def output_cache(out: Any) -> Any:
    """The cache a decoder returned (``.cache`` in 5.24+, ``.past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def cache_tensors(cache: Any) -> list[tuple[Any, Any]]:
    """Per-layer (keys, values) of a transformers cache, whatever its generation."""
    if cache is None:
        raise AttributeError("the decoder returned no cache")
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v in cache]


def cache_from_tensors(kv: Sequence[tuple[Any, Any]]) -> Any:
    """A fresh cache holding ``kv``; a pass appends to it, leaving the tensors in ``kv`` untouched."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=list(kv))


def prunable(layer: Any) -> bool:
    """Whether :class:`PrunedLastLayer` may replace ``layer``'s forward: an exact verified class, not
    already wrapped per instance (accelerate's device hooks, e.g. with ``--int8``)."""
    attn = getattr(layer, "self_attn", None)
    key = (type(layer).__module__, type(layer).__name__, type(attn).__name__)
    return key in PRUNABLE_LAYERS and "forward" not in vars(layer) and hasattr(
        sys.modules.get(type(attn).__module__), "apply_rotary_pos_emb")


class PrunedLastLayer:
    """Context manager: the decoder's last layer computes (and returns) only ``rows`` of its input.

    ``rows`` index the positions of the pass; the decoder's ``last_hidden_state`` then has
    ``len(rows)`` positions, in that order. Only for :func:`prunable` layers (the caller checks).
    ``attention_mask`` is the pass's 4-D additive mask (rows = this pass's positions) or None for a
    causal pass without cache.
    """

    def __init__(self, decoder: Any, rows: Sequence[int], grouped: bool = False):
        self.layer = decoder.layers[-1]
        self.rows = list(rows)
        self.grouped = grouped  # the read rows' attention through grouped_sdpa (the fused path)

    def __enter__(self):
        self.layer.forward = self._forward  # an instance attribute: nn.Module.__call__ finds it first
        return self

    def __exit__(self, *exc):
        del self.layer.forward
        return False

    def _forward(self, hidden_states, attention_mask=None, position_embeddings=None, icl_split=None, **kwargs):
        import torch
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        layer, attn = self.layer, self.layer.self_attn
        rotary = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        rows = torch.tensor(self.rows, device=hidden_states.device)
        batch, n = hidden_states.shape[:2]
        normed = layer.input_layernorm(hidden_states)
        cos, sin = position_embeddings
        # keys and values of every position; queries of the read rows only
        q = attn.q_proj(normed[:, rows]).view(batch, len(self.rows), -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(normed).view(batch, n, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(normed).view(batch, n, -1, attn.head_dim).transpose(1, 2)
        q, _ = rotary(q, q, cos[:, rows], sin[:, rows])
        _, k = rotary(k, k, cos, sin)
        if cache is not None:  # later passes attend to these keys: store them as the full layer would
            k, v = cache.update(k, v, attn.layer_idx)
        if icl_split is not None:  # a fused pass: causal prompt rows, then trie rows under the given mask
            causal = torch.zeros((len(self.rows), k.shape[2]), dtype=q.dtype, device=q.device)
            causal.masked_fill_(torch.arange(k.shape[2], device=q.device)[None, :] > rows[:, None], float("-inf"))
            trie = attention_mask[0, 0, (rows - icl_split).clamp_min(0)]
            mask = torch.where((rows < icl_split)[:, None], causal, trie)[None, None]
        elif attention_mask is not None:
            mask = attention_mask[:, :, rows]
        else:  # a causal pass over a fresh sequence: row r sees keys 0..r
            mask = torch.full((1, 1, len(self.rows), k.shape[2]), float("-inf"), dtype=q.dtype, device=q.device)
            for i, r in enumerate(self.rows):
                mask[0, 0, i, : r + 1] = 0.0
        attend = grouped_sdpa if self.grouped else sdpa_attention_forward
        out, _ = attend(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling)
        hidden = hidden_states[:, rows] + attn.o_proj(out.reshape(batch, len(self.rows), -1))
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


SPLIT_ATTENTION = "icl_audio_split_sdpa"
_split_registered = False


def split_sdpa(module, query, key, value, attention_mask, icl_split=None, **kwargs):
    """transformers' SDPA attention; given ``icl_split`` (a fused pass: positions before it are the
    prompt), the prompt's rows attend causally to the prompt's keys alone and the later rows (trie
    nodes) attend under ``attention_mask`` (their rows x every key). Returns (batch, positions,
    heads, head_dim), as ``sdpa_attention_forward`` does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if icl_split is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    import torch

    p = int(icl_split)  # query/key/value: (batch, heads, positions, head_dim)
    tail, _ = grouped_sdpa(module, query[:, :, p:], key, value, attention_mask, **kwargs)
    if p == 0:  # trie rows alone (a pass against a cache)
        return tail, None
    head, _ = sdpa_attention_forward(module, query[:, :, :p], key[:, :, :p], value[:, :, :p], None, **kwargs)
    return torch.cat([head, tail], dim=1), None


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """``sdpa_attention_forward`` for rows under an explicit 4-D mask, the query heads that share a
    key/value head stacked as that head's rows: (batch, heads, rows, dim) -> (batch, kv heads,
    groups x rows, dim), the mask tiled to match. Every (query, key) pair meets the same key and value
    as after ``repeat_kv``, without copying them, and SDPA's CPU kernel gets 4x taller blocks (Llama-3
    shapes). Anything else (no grouping, no mask, dropout, extra options) goes to transformers' own.
    Returns (batch, rows, heads, dim), None, as ``sdpa_attention_forward`` does."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    batch, heads, rows, dim = query.shape
    plain = (groups <= 1 or attention_mask is None or attention_mask.dim() != 4 or dropout
             or key.shape[1] * groups != heads or attention_mask.shape[1] not in (1, heads)
             or any(kwargs.get(k) is not None for k in ("softcap", "position_bias", "s_aux", "sinks")))
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kv_heads = key.shape[1]
    stacked = query.reshape(batch, kv_heads, groups * rows, dim)  # head h = kv * groups + g -> row g * rows + r
    if attention_mask.shape[1] == 1:  # one mask for every head: the same rows, once per group
        mask = attention_mask.expand(batch, 1, rows, -1).repeat(1, 1, groups, 1)
    else:
        mask = attention_mask.expand(batch, heads, rows, -1).reshape(batch, kv_heads, groups * rows, -1)
    out = torch.nn.functional.scaled_dot_product_attention(stacked, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, rows, dim).transpose(1, 2).contiguous(), None


class SplitAttention:
    """Context manager: the model's attention runs through :func:`split_sdpa` (registered once with
    transformers' ``AttentionInterface``; masks as SDPA's), and is put back on exit."""

    def __init__(self, hf: Any):
        self.config = hf.config

    def __enter__(self):
        global _split_registered
        if not _split_registered:
            from transformers import AttentionInterface
            from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

            # Registered through a name lookup at call time, so the function in force is this module's.
            AttentionInterface.register(SPLIT_ATTENTION, lambda *args, **kwargs: split_sdpa(*args, **kwargs))
            AttentionMaskInterface.register(SPLIT_ATTENTION, sdpa_mask)
            _split_registered = True
        self.saved = self.config._attn_implementation
        self.config._attn_implementation = SPLIT_ATTENTION
        return self

    def __exit__(self, *exc):
        self.config._attn_implementation = self.saved
        return False
