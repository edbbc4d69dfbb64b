"""The scoring stage: exact log-likelihood of every candidate label, sharing one pass over the prompt.

Two layers, like lm-evaluation-harness:

* the engine, :func:`loglikelihood` (model, prefix ids, continuations) -> (sum log p, n tokens) per
  continuation. It knows nothing of prompts or labels; :func:`loglikelihood_naive` is its reference.
* :class:`Scorer`, which builds prompts (:mod:`icl_audio.prompt`), calls the engine and turns the
  numbers into :class:`LabelScores` (modes, normalisation, calibration, probabilities).

How the engine shares the prompt (P prompt tokens; candidates "dog", "door knock", "door creaks"):

    one forward  [ p0 p1 ... pP-1 | dog door knock creaks ]   the candidates packed as a TRIE after
    positions      0  1 ...  P-1  | P   P    P+1   P+1         the prompt ("door" appears once)
    attention      causal         | prompt + own ancestors     ("knock" sees p*, door, itself)
    LM head      only at rows that predict a scored token: pP-1 (every first token) and the trie
                 nodes; logsumexp over the vocabulary per row, then one gather per scored token.

A continuation's last token is never fed (nothing is predicted from it), so the extra cost is the
number of trie tokens (about labels x (tokens per label - 1)), not candidates x prompt length. When
the candidates exceed one trie of ``max_batch_tokens`` (many labels, or channel mode where each
continuation carries the query audio), further tries run against the prompt's K/V cache.
Each score equals a separate full forward over prompt + continuation: same keys, values, positions
and mask, only the matmul shapes differ (agreement within 1e-3 nats in fp32, tested).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from icl_audio.errors import ICLAudioError, SupportSetError
from icl_audio.prompt import MODES, Demo, PromptBuilder, Target

__all__ = [
    "Demo", "Target", "ScoringOptions", "LabelScores", "Scorer", "loglikelihood", "loglikelihood_naive",
    "decide", "select_balanced", "engine_plan",
]

NORMALIZE = ("sum", "mean")
MAX_BATCH_TOKENS = 512  # trie tokens per candidate pass; bounds attention/MLP activations
HEAD_ROWS = 256  # LM-head rows per chunk: 256 x 193,800 fp32 logits is ~200 MB
_CALIBRATION_CACHE = 128  # content-free priors kept per Scorer (one per demonstration set)


# --------------------------------------------------------------------------------------------
# engine


def _hf_model(model: Any):
    # Accept a LanguageModel (has .layout) or a bare Hugging Face causal LM.
    return model.model if hasattr(model, "layout") and hasattr(model, "model") else model


def _as_target(c: Any) -> Target:
    if isinstance(c, Target):
        return c
    if hasattr(c, "ids") and hasattr(c, "score_from"):
        return Target(tuple(int(x) for x in c.ids), int(c.score_from))
    return Target(tuple(int(x) for x in c), 0)


class _Trie:
    """Continuation inputs deduplicated by shared prefixes; nodes in insertion order (parent < child)."""

    def __init__(self) -> None:
        self.child: dict[tuple[int, int], int] = {}
        self.tokens: list[int] = []
        self.parent: list[int] = []
        self.depth: list[int] = []

    def count_new(self, ids: Sequence[int]) -> int:
        node = -1
        for j, tok in enumerate(ids):
            nxt = self.child.get((node, tok))
            if nxt is None:
                return len(ids) - j
            node = nxt
        return 0

    def insert(self, ids: Sequence[int]) -> list[int]:
        path, node = [], -1
        for j, tok in enumerate(ids):
            nxt = self.child.get((node, tok))
            if nxt is None:
                nxt = len(self.tokens)
                self.child[(node, tok)] = nxt
                self.tokens.append(tok)
                self.parent.append(node)
                self.depth.append(j)
            path.append(nxt)
            node = nxt
        return path

    def mask(self) -> np.ndarray:
        n = len(self.tokens)
        anc = np.zeros((n, n), dtype=bool)
        for i, p in enumerate(self.parent):
            if p >= 0:
                anc[i] = anc[p]
            anc[i, i] = True
        return anc


def _cache_tensors(cache: Any) -> list[tuple[Any, Any]]:
    """Per-layer (keys, values) of a transformers cache, whatever its generation."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "key_cache"):
        return list(zip(cache.key_cache, cache.value_cache))
    return [(k, v) for k, v in cache]


def _prefix_cache(kv: list[tuple[Any, Any]]):
    # A fresh cache holding the prefix for each further candidate pass: the pass appends to it, and
    # the prefix tensors themselves are never modified, so any number of passes can reuse them.
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


# Attention for the single packed pass [prefix | trie]. A 4-D mask over the whole sequence would make
# SDPA compute every block of the prefix's attention (about twice the causal cost: +10% of a forward
# at 1,300 tokens); instead the prefix rows run causal SDPA on the prefix alone and only the trie rows
# use the explicit mask. Registered under its own name and switched on only inside loglikelihood();
# without the `icl_split` argument it is exactly transformers' SDPA.
_ATTN_NAME = "icl_audio_tree_sdpa"
_registered = False


def _tree_attention(module, query, key, value, attention_mask, icl_split=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if icl_split is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    import torch

    p = icl_split  # query/key/value: (batch, heads, positions, head_dim); positions < p are the prefix
    head, _ = sdpa_attention_forward(module, query[:, :, :p], key[:, :, :p], value[:, :, :p], None, **kwargs)
    tail, _ = sdpa_attention_forward(module, query[:, :, p:], key, value, attention_mask, **kwargs)
    return torch.cat([head, tail], dim=1), None  # outputs are (batch, positions, heads, head_dim)


class _TreeAttention:
    """Context manager: route a model's attention through :func:`_tree_attention` (then restore it)."""

    def __init__(self, hf: Any):
        self.config = hf.config

    def __enter__(self):
        global _registered
        if not _registered:
            from transformers import AttentionInterface
            from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

            AttentionInterface.register(_ATTN_NAME, _tree_attention)
            AttentionMaskInterface.register(_ATTN_NAME, sdpa_mask)  # other callers keep SDPA's masks
            _registered = True
        self.saved = self.config._attn_implementation
        self.config._attn_implementation = _ATTN_NAME
        return self

    def __exit__(self, *exc):
        self.config._attn_implementation = self.saved
        return False


# The last decoder layer, run only on the rows the LM head reads. A layer's output at a position
# feeds later layers only through its keys and values, and after the last layer there are none: so
# there, every position still needs its keys and values (the rows read attend to them), but the
# query projection, attention, output projection and MLP (~96% of a layer) run on the read rows only
# (93 of 1,390 at ESC-50 scale: ~6% of the pass saved). Same submodules, same arithmetic per row.
_LLAMA_PARTS = ("input_layernorm", "post_attention_layernorm", "mlp", "self_attn")


def _prunable(layer: Any) -> bool:
    import sys

    attn = getattr(layer, "self_attn", None)
    if "forward" in vars(layer):  # already wrapped per instance (accelerate's device hooks): leave it be
        return False
    return (all(hasattr(layer, part) for part in _LLAMA_PARTS)
            and all(hasattr(attn, proj) for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling", "layer_idx"))
            and hasattr(sys.modules.get(type(attn).__module__), "apply_rotary_pos_emb"))


class _ReadRowsOnly:
    """Context manager: the decoder's last layer computes (and returns) only ``rows`` of its input.

    ``rows`` index the positions of the pass. The decoder's ``last_hidden_state`` then has
    ``len(rows)`` positions, in that order. Models without Llama's layer layout run in full and the
    rows are selected afterwards (:attr:`pruned` says which happened).
    """

    def __init__(self, decoder: Any, rows: list[int]):
        self.layer = decoder.layers[-1]
        self.rows = rows
        self.pruned = _prunable(self.layer)

    def __enter__(self):
        if self.pruned:
            self.layer.forward = self._forward  # an instance attribute: nn.Module.__call__ finds it first
        return self

    def __exit__(self, *exc):
        if self.pruned:
            del self.layer.forward
        return False

    def _forward(self, hidden_states, attention_mask=None, position_embeddings=None, past_key_values=None,
                 icl_split=None, **kwargs):
        import sys

        import torch
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

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
        if past_key_values is not None:  # later passes attend to these keys: store them as the full layer would
            k, v = past_key_values.update(k, v, attn.layer_idx)
        mask = self._mask(attention_mask, icl_split, k.shape[2], q.dtype, q.device)
        out, _ = sdpa_attention_forward(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling)
        hidden = hidden_states[:, rows] + attn.o_proj(out.reshape(batch, len(self.rows), -1))
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    def _mask(self, attention_mask: Any, split: int | None, n_keys: int, dtype: Any, device: Any):
        import torch

        if split is None:
            if attention_mask is not None:  # a pass against the prompt's cache: the mask covers every position
                return attention_mask[:, :, self.rows]
            split = n_keys  # a plain causal pass (no trie): every position is the prompt's
        # the packed pass: positions < split are the prompt (causal, prompt keys only); later ones
        # are trie nodes, whose mask rows (given from the split on) say which keys they see
        mask = torch.full((1, 1, len(self.rows), n_keys), float("-inf"), dtype=dtype, device=device)
        for r, pos in enumerate(self.rows):
            if pos < split:
                mask[0, 0, r, :pos + 1] = 0.0
            else:
                mask[0, 0, r] = attention_mask[0, 0, pos - split]
        return mask


_VOCAB_CHUNK = 16384  # vocabulary rows per head GEMM on CPU: 16,384 x 256 fp32 logits is 16 MB


def _token_logprobs(head: Any, hidden: Any, rows: list[int], tokens: list[int], chunk: int) -> np.ndarray:
    """log p(tokens[i] | hidden[rows[i]]): LM head and logsumexp only over the rows needed, ``chunk``
    rows at a time."""
    import torch

    vocab_major = hidden.device.type == "cpu" and isinstance(head, torch.nn.Linear) and head.bias is None
    out = np.empty(len(rows), dtype=np.float64)
    rows_np = np.asarray(rows)
    toks_np = np.asarray(tokens)
    for start in range(0, hidden.shape[0], chunk):
        stop = min(start + chunk, hidden.shape[0])
        sel = np.nonzero((rows_np >= start) & (rows_np < stop))[0]
        if not len(sel):
            continue
        block, r, t = hidden[start:stop], rows_np[sel] - start, toks_np[sel]
        out[sel] = _logprobs_vocab_major(head.weight, block, r, t) if vocab_major else _logprobs(head, block, r, t)
    return out


def _logprobs(head: Any, block: Any, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """log p(t[i] | block[r[i]]) with the model's own head over the whole vocabulary."""
    import torch

    logits = head(block).float()  # (rows, vocab), one pass over the weights
    lse = torch.logsumexp(logits, dim=-1)
    r_t = torch.as_tensor(r, device=logits.device)
    return (logits[r_t, torch.as_tensor(t, device=logits.device)] - lse[r_t]).double().cpu().numpy()


def _logprobs_vocab_major(weight: Any, block: Any, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The CPU form of :func:`_logprobs`: logits computed as weight @ block^T, a slice of the
    vocabulary at a time.

    With a few dozen rows and a 193,800-token vocabulary, ``weight @ hidden.T`` (the vocabulary as
    the GEMM's long side) runs ~1.8x faster on CPU than ``hidden @ weight.T`` (measured, bf16), and
    each slice's logits are turned into a partial logsumexp while still in cache; the partial sums
    combine exactly (logsumexp of logsumexps). Logits are the model dtype's, as the model's own head gives.
    """
    import torch

    h_t = block.t().contiguous()  # (hidden, rows)
    partial, picked = [], np.empty(len(r), dtype=np.float64)
    for v0 in range(0, weight.shape[0], _VOCAB_CHUNK):
        logits = torch.mm(weight[v0:v0 + _VOCAB_CHUNK], h_t).float()  # (slice, rows)
        partial.append(torch.logsumexp(logits, dim=0))
        here = np.nonzero((t >= v0) & (t < v0 + logits.shape[0]))[0]
        if len(here):
            picked[here] = logits[torch.as_tensor(t[here] - v0), torch.as_tensor(r[here])].double().numpy()
    lse = torch.logsumexp(torch.stack(partial), dim=0).double().numpy()
    return picked - lse[r]


def _trie_mask(trie: _Trie, n_prefix: int, dtype: Any, device: Any):
    """Additive attention mask (1, 1, nodes, prefix + nodes): 0 where a node may look, -inf elsewhere.

    Additive in the model's dtype rather than boolean: SDPA would otherwise convert a boolean mask
    to this form again in every layer.
    """
    import torch

    n = len(trie.tokens)
    allowed = torch.ones((n, n_prefix + n), dtype=torch.bool)
    allowed[:, n_prefix:] = torch.from_numpy(trie.mask())
    mask = torch.zeros((1, 1, n, n_prefix + n), dtype=dtype)
    return mask.masked_fill_(~allowed, float("-inf")).to(device)


def _plan_chunks(targets: list[Target], max_tokens: int) -> list[list[int]]:
    # Sorted so that continuations sharing first tokens land in the same trie.
    order = sorted(range(len(targets)), key=lambda i: targets[i].ids)
    chunks: list[list[int]] = []
    trie, cur, count = _Trie(), [], 0
    for i in order:
        inputs = targets[i].ids[:-1]  # a continuation's last token predicts nothing: never fed
        new = trie.count_new(inputs)
        if cur and count + new > max_tokens:
            chunks.append(cur)
            trie, cur, count = _Trie(), [], 0
            new = len(inputs)
        trie.insert(inputs)
        count += new
        cur.append(i)
    if cur:
        chunks.append(cur)
    return chunks


def engine_plan(continuations: Sequence[Any], *, max_batch_tokens: int = MAX_BATCH_TOKENS) -> dict:
    """What :func:`loglikelihood` will compute for these continuations, without a model.

    Returns ``passes`` (forwards: the first carries the prompt), ``trie_tokens`` (continuation tokens
    fed, shared prefixes counted once) and ``head_rows`` (positions whose full-vocabulary logits are
    computed). For cost estimates and the speed bench.
    """
    targets = [_as_target(c) for c in continuations]
    chunks = _plan_chunks(targets, max_batch_tokens)
    tokens = rows = 0
    for chunk in chunks:
        trie = _Trie()
        paths = {i: trie.insert(targets[i].ids[:-1]) for i in chunk}
        tokens += len(trie.tokens)
        rows += len({paths[i][j - 1] for i in chunk
                     for j in range(max(1, targets[i].score_from), len(targets[i].ids))})
    return {"passes": max(1, len(chunks)), "trie_tokens": tokens, "head_rows": rows + 1}  # + the prompt's last


def loglikelihood(model: Any, prefix_ids: Sequence[int], continuations: Sequence[Any], *,
                  max_batch_tokens: int = MAX_BATCH_TOKENS, head_rows: int = HEAD_ROWS) -> list[tuple[float, int]]:
    """Exact log-likelihood of each continuation after a shared prefix.

    ``model``: a :class:`~icl_audio.llm.LanguageModel` or a Hugging Face causal LM (Llama family).
    ``prefix_ids``: the shared prompt, at least one token. ``continuations``: token-id sequences, or
    :class:`~icl_audio.prompt.Target` objects whose ``ids[score_from:]`` alone are scored (the rest is
    context, as channel mode needs). Returns, in input order, ``(sum of log p in nats, n scored tokens)``.

    The continuations are packed as tries of at most ``max_batch_tokens`` tokens (a longer single
    continuation gets a trie of its own). The first trie rides along with the prompt in ONE forward;
    further tries reuse the prompt's K/V cache. The result does not depend on how continuations are
    batched beyond float rounding.
    """
    import torch

    hf = _hf_model(model)
    targets = [_as_target(c) for c in continuations]
    prefix = [int(x) for x in prefix_ids]
    if not prefix:
        raise ValueError("loglikelihood needs a non-empty prefix (at least a BOS token)")
    device = hf.get_input_embeddings().weight.device
    dtype = hf.get_input_embeddings().weight.dtype
    decoder = hf.get_decoder()
    head = hf.get_output_embeddings()
    if not targets:
        return []
    n_prefix = len(prefix)
    chunks = _plan_chunks(targets, max_batch_tokens)

    hidden_rows: list[Any] = []  # row 0: the prompt's last position, predicts every first token
    n_rows = 0
    pair_rows: list[int] = []
    pair_tokens: list[int] = []
    pair_target: list[int] = []

    def needed_nodes(chunk: list[int], paths: dict[int, list[int]]) -> list[int]:
        # The trie nodes whose next-token distribution scores some token (a scored token's predecessor).
        return sorted({paths[i][j - 1] for i in chunk
                       for j in range(max(1, targets[i].score_from), len(targets[i].ids))})

    def collect(chunk: list[int], paths: dict[int, list[int]], needed: list[int], needed_hidden: Any) -> None:
        # Keep the hidden states of the needed nodes (given in ``needed`` order); record (row, token) pairs.
        nonlocal n_rows
        node_row: dict[int, int] = {}
        if needed:
            hidden_rows.append(needed_hidden)
            node_row = {node: n_rows + r for r, node in enumerate(needed)}
            n_rows += len(needed)
        for i in chunk:
            t = targets[i]
            for j in range(t.score_from, len(t.ids)):
                pair_rows.append(0 if j == 0 else node_row[paths[i][j - 1]])
                pair_tokens.append(t.ids[j])
                pair_target.append(i)

    def run(rows: list[int], **inputs: Any) -> tuple[Any, Any]:
        # One decoder pass whose last layer computes only ``rows``: (their final hidden states, cache).
        with _ReadRowsOnly(decoder, rows) as last:
            out = decoder(**inputs)
        hidden = out.last_hidden_state[0]
        if not last.pruned:
            hidden = hidden[torch.tensor(rows, device=hidden.device)]
        return hidden, out.past_key_values

    with torch.inference_mode(), _TreeAttention(hf):
        #   input     [ p0 ... pP-1 | trie nodes of chunk 0 ]
        #   position    0 ... P-1    | P + depth
        #   attention   causal       | prefix + own ancestors (4-D mask rows below)
        first = chunks[0] if chunks else []
        trie = _Trie()
        paths = {i: trie.insert(targets[i].ids[:-1]) for i in first}
        n = len(trie.tokens)
        more = len(chunks) > 1
        kwargs: dict[str, Any] = {}
        if n:
            kwargs = {"attention_mask": _trie_mask(trie, n_prefix, dtype, device), "icl_split": n_prefix}
        positions = torch.tensor([list(range(n_prefix)) + [n_prefix + d for d in trie.depth]], device=device)
        needed = needed_nodes(first, paths)
        hidden, cache = run([n_prefix - 1] + [n_prefix + node for node in needed],
                            input_ids=torch.tensor([prefix + trie.tokens], device=device), position_ids=positions,
                            use_cache=more, **kwargs)
        hidden_rows.append(hidden[:1])
        n_rows = 1
        collect(first, paths, needed, hidden[1:])
        kv = [(k[:, :, :n_prefix], v[:, :, :n_prefix]) for k, v in _cache_tensors(cache)] if more else []
        del hidden, cache

        for chunk in chunks[1:]:
            trie = _Trie()
            paths = {i: trie.insert(targets[i].ids[:-1]) for i in chunk}
            n = len(trie.tokens)
            needed = needed_nodes(chunk, paths)
            if not n or not needed:  # continuations of one token: all predicted from the prompt's last position
                collect(chunk, paths, [], None)
                continue
            node_hidden, _ = run(
                needed,
                input_ids=torch.tensor([trie.tokens], device=device),
                position_ids=(torch.tensor([trie.depth], dtype=torch.long) + n_prefix).to(device),
                attention_mask=_trie_mask(trie, n_prefix, dtype, device),
                past_key_values=_prefix_cache(kv),
                use_cache=True,
            )
            collect(chunk, paths, needed, node_hidden)
            del node_hidden

        results = [(0.0, 0)] * len(targets)
        if pair_rows:
            logps = _token_logprobs(head, torch.cat(hidden_rows, dim=0), pair_rows, pair_tokens, head_rows)
            sums = np.zeros(len(targets), dtype=np.float64)
            np.add.at(sums, np.asarray(pair_target), logps)
            counts = np.bincount(np.asarray(pair_target), minlength=len(targets))
            results = [(float(sums[i]), int(counts[i])) for i in range(len(targets))]
    return results


def loglikelihood_naive(model: Any, prefix_ids: Sequence[int], continuations: Sequence[Any]) -> list[tuple[float, int]]:
    """Reference for :func:`loglikelihood`: one full forward over prefix + continuation per continuation.

    Same inputs and outputs; cost grows as candidates x prompt length. Used by tests and the speed bench.
    """
    import torch

    hf = _hf_model(model)
    device = hf.get_input_embeddings().weight.device
    prefix = [int(x) for x in prefix_ids]
    results = []
    with torch.inference_mode():
        for c in continuations:
            t = _as_target(c)
            n = len(t.ids)
            if n - t.score_from <= 0:
                results.append((0.0, 0))
                continue
            ids = torch.tensor([prefix + list(t.ids)], device=device)
            # Hidden states of the last n+1 positions but the last: row j predicts continuation token j.
            # The head gets a 2-D input: HF's own forward hands it 3-D, which on CPU in bf16 copies the
            # whole (vocab x hidden) weight per call and would make this reference look slower than it is.
            hidden = hf.get_decoder()(input_ids=ids).last_hidden_state[0, -(n + 1):-1]
            logits = hf.get_output_embeddings()(hidden).float()
            logp = torch.log_softmax(logits, dim=-1)
            idx = torch.arange(t.score_from, n, device=device)
            tok = torch.tensor(t.ids[t.score_from:], device=device)
            results.append((float(logp[idx, tok].double().sum()), n - t.score_from))
    return results


# --------------------------------------------------------------------------------------------
# scorer


@dataclass(frozen=True)
class ScoringOptions:
    """How to score.

    ``mode``: "direct" = log p(label | demos, query audio); "channel" = log p(query audio | demos in
    label->audio form, label). ``normalize``: "sum" of token log-probs or "mean" per scored token.
    ``calibrate``: subtract each label's score under a content-free query (the query without audio),
    cached per demonstration set. ``max_context``: token budget (Llasa was trained on 2048).
    ``template``: built-in name or path to a TOML template. ``multi_label``: per-label probabilities
    (see :class:`LabelScores`) instead of a softmax over candidates.
    """

    mode: str = "direct"
    normalize: str = "sum"
    calibrate: bool = False
    max_context: int = 2048
    template: str = "default"
    multi_label: bool = False


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity (fields are arrays)
class LabelScores:
    """Scores of one query, one entry per candidate label (in the order given).

    ``logprobs``: the ranking score: log-likelihood (summed or per-token mean), minus the content-free
    prior when calibrated. ``probs``: single-label: softmax of ``logprobs`` over the candidates (sums
    to 1). Multi-label: ``sigmoid(z)`` per label, where ``z = logprobs`` when calibrated (log-ratio
    against the content-free query: above 0.5 means the audio made the label more likely) and
    ``z = logprobs - mean(logprobs)`` otherwise; :func:`decide` turns them into labels.
    ``prompt_tokens``: tokens in the shared prompt; ``demos_used``: demonstrations that fitted;
    ``cropped``: some audio was shortened to fit. ``raw_logprobs``/``n_tokens``: the summed
    log-likelihood before normalisation/calibration and the scored token count per label.
    """

    labels: tuple[str, ...]
    logprobs: np.ndarray
    probs: np.ndarray
    prompt_tokens: int
    demos_used: int
    cropped: bool
    raw_logprobs: np.ndarray | None = None
    n_tokens: np.ndarray | None = None
    multi_label: bool = False

    def ranked(self) -> list[tuple[str, float]]:
        """(label, prob) pairs, best first."""
        order = np.argsort(-self.probs, kind="stable")
        return [(self.labels[i], float(self.probs[i])) for i in order]


def decide(scores: LabelScores, threshold: float = 0.5) -> tuple[str, ...]:
    """Predicted labels: single-label -> the best one; multi-label -> every label with
    ``prob >= threshold`` (best first), or the best one if none reaches it (every clip has a label)."""
    ranked = scores.ranked()
    if not scores.multi_label:
        return (ranked[0][0],)
    chosen = tuple(lab for lab, p in ranked if p >= threshold)
    return chosen or (ranked[0][0],)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - np.max(x))
    return z / z.sum()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def _check_labels(labels: Sequence[str]) -> tuple[str, ...]:
    if isinstance(labels, str):
        raise SupportSetError("labels must be a sequence of strings, not one string")
    labels = tuple(labels)
    if not labels:
        raise SupportSetError("no candidate labels to score")
    for lab in labels:
        if not isinstance(lab, str) or not lab.strip():
            raise SupportSetError(f"candidate label {lab!r} is not a non-empty string")
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise SupportSetError(f"candidate labels repeat: {', '.join(dup)}")
    return labels


class Scorer:
    """Scores candidate labels for a query by in-context learning with a Llasa model.

    ``lm``: a :class:`~icl_audio.llm.LanguageModel`; ``options``: :class:`ScoringOptions`.
    """

    def __init__(self, lm: Any, options: ScoringOptions = ScoringOptions()):
        if options.mode not in MODES:
            raise ICLAudioError(f"unknown scoring mode {options.mode!r}: use direct or channel")
        if options.normalize not in NORMALIZE:
            raise ICLAudioError(f"unknown normalisation {options.normalize!r}: use sum or mean")
        if not isinstance(options.max_context, int) or options.max_context < 16:
            raise ICLAudioError(f"max_context must be an integer >= 16, got {options.max_context!r}")
        self.lm = lm
        self.options = options
        self.builder = PromptBuilder(lm, options.template)
        self._priors: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def _normalised(self, raw: list[tuple[float, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sums = np.array([s for s, _ in raw], dtype=np.float64)
        counts = np.array([n for _, n in raw], dtype=np.int64)
        if self.options.normalize == "mean":
            return sums, counts, sums / np.maximum(counts, 1)
        return sums, counts, sums

    def _prior(self, demos: Sequence[Demo], query_codes: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
        # Contextual calibration (Zhao et al. 2021): the same demonstrations and crops, a query with no
        # audio. It depends only on the demonstrations and labels, so it is cached by its token ids.
        cf = self.builder.build(demos, query_codes, labels, mode=self.options.mode,
                                max_context=self.options.max_context, content_free=True)
        h = hashlib.sha256(self.options.normalize.encode())
        h.update(np.asarray(cf.prefix, dtype=np.int64).tobytes())
        for t in cf.targets:
            h.update(np.asarray((len(t.ids), t.score_from) + t.ids, dtype=np.int64).tobytes())
        key = h.digest()
        prior = self._priors.get(key)
        if prior is None:
            prior = self._normalised(loglikelihood(self.lm, cf.prefix, cf.targets))[2]
            self._priors[key] = prior
            while len(self._priors) > _CALIBRATION_CACHE:
                self._priors.popitem(last=False)
        else:
            self._priors.move_to_end(key)
        return prior

    def score(self, demos: Sequence[Demo], query_codes: np.ndarray, labels: Sequence[str]) -> LabelScores:
        """Score every label in ``labels`` for the query ``query_codes`` given ``demos``.

        ``demos``: :class:`Demo` objects, most similar first (they are placed in reverse, the most
        similar right before the query; when the context is short the least similar are dropped and
        ``demos_used`` says how many remained). ``query_codes``: 1-D codec codes. ``labels``: distinct
        non-empty strings, scored as plain text.
        """
        labels = _check_labels(labels)
        query_codes = np.asarray(query_codes)
        opts = self.options
        prompt = self.builder.build(demos, query_codes, labels, mode=opts.mode, max_context=opts.max_context)
        raw, counts, scores = self._normalised(loglikelihood(self.lm, prompt.prefix, prompt.targets))
        if opts.calibrate:
            scores = scores - self._prior(demos, query_codes, labels)
        if opts.multi_label:
            z = scores if opts.calibrate else scores - scores.mean()
            probs = _sigmoid(z)
        else:
            probs = _softmax(scores)
        return LabelScores(labels=labels, logprobs=scores, probs=probs, prompt_tokens=len(prompt.prefix),
                           demos_used=prompt.demos_used, cropped=prompt.cropped, raw_logprobs=raw,
                           n_tokens=counts, multi_label=opts.multi_label)


# --------------------------------------------------------------------------------------------
# demonstration selection


def select_balanced(neighbour_labels: Sequence[str | Sequence[str]], labels: Sequence[str], k: int) -> list[int]:
    """Class-balanced choice of ``k`` demonstrations among retrieved neighbours (pure function).

    ``neighbour_labels``: the label (or labels, for multi-label sets) of each neighbour, most similar
    first. ``labels``: the candidate labels; neighbours with none of them are ignored.
    Round-robin over labels, ordered by their nearest neighbour: each label in turn gets its next
    nearest clip not yet taken, until ``k`` clips are chosen or none remain. With ``k`` smaller than the
    number of labels, the labels whose nearest clip is most similar win. Returns neighbour indices,
    most similar first (the order :meth:`Scorer.score` expects).
    """
    wanted = set(labels)
    queues: dict[str, list[int]] = {}
    for idx, labs in enumerate(neighbour_labels):
        for lab in ([labs] if isinstance(labs, str) else labs):
            if lab in wanted:
                queues.setdefault(lab, []).append(idx)  # dict order = order of nearest neighbour
    chosen: list[int] = []
    taken: set[int] = set()
    pos = {lab: 0 for lab in queues}
    while len(chosen) < k:
        progress = False
        for lab, queue in queues.items():
            while pos[lab] < len(queue) and queue[pos[lab]] in taken:
                pos[lab] += 1
            if pos[lab] < len(queue):
                idx = queue[pos[lab]]
                chosen.append(idx)
                taken.add(idx)
                pos[lab] += 1
                progress = True
                if len(chosen) == k:
                    break
        if not progress:
            break
    return sorted(chosen)
