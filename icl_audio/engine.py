"""The log-likelihood engine: exact log p(continuation | prefix) for many continuations, sharing the prefix.

Like lm-evaluation-harness, the contract is one function, :func:`loglikelihood` (model, prefix ids,
continuations) -> (sum of log p, n scored tokens) per continuation; it knows nothing of prompts or
labels. :func:`loglikelihood_naive` (one full forward per continuation) is its reference.

It is a pure **plan** (:func:`make_plan`: which tokens go through the model in which pass, at which
positions, under which mask, and which rows score which token) and a small **executor**
(:class:`Executor`) that runs a plan on a model. Candidates "dog", "door knock", "door creaks":

    prompt        [ p0 p1 ... pP-1 ]              causal; keys/values kept; row pP-1 predicts every first token
    trie pass     [ dog door knock creaks ]        against the prompt's keys/values
    positions       P   P    P+1   P+1            ("door" is fed once: the candidates form a TRIE)
    attention       prompt + own ancestors         ("knock" sees p*, door, itself)
    LM head       only at rows that predict a scored token, in fp32

A continuation's last token is never fed (it predicts nothing). Candidates beyond ``max_batch_tokens``
trie tokens go in further trie passes against the same prompt keys/values (channel mode, where each
continuation carries the query audio, or many labels).

**Hidden tokens.** Token ids in ``hidden_ids`` (Llasa: ``<|eot_id|>``) keep their position but are
never fed, so nothing attends to them: exactly what Llasa's training did with ``attention_mask = ids
!= pad`` and ``pad = <|eot_id|>``. A scored token may not follow a hidden one. The prompt's position
ids then jump; transformers takes a forward with such positions, no mask and no cache for a packed
sequence (and cuts the context at every jump), so every prompt pass here has a cache or a 4-D mask.

**Scores in fp32.** The LM head runs in fp32 from the final hidden states (bf16 logits would carry
~0.03 nats of rounding per token, ~1 nat over a 250-token channel-mode candidate): ``hidden @
weight^T`` a slice of the vocabulary at a time, each slice upcast once per call, its logits turned
into a partial logsumexp at once; the scored values are gathered on the device and copied back once.
When the weight and the hidden states both hold 16-bit values (a bf16 model: its final hidden states
are bf16), reduced-precision *operands* lose nothing, so the GEMM may use them:

* bf16 and fp16 values have at most 8 and 11 significant bits; TF32 keeps 11 (10 stored) with fp32's
  exponent range, so rounding such an operand to TF32 leaves it unchanged, and the product of two
  (at most 22 significant bits) is exact in fp32's 24. TF32 tensor cores accumulate in fp32. So on
  CUDA, TF32 (``cuda_matmul="tf32"``) computes every product exactly and only the fp32 sums round,
  as in a true fp32 GEMM: allowed for bf16/fp16 weights and hidden states, true fp32 ("ieee")
  otherwise.
* On CPU, oneDNN's bf16 arithmetic with fp32 accumulation and fp32 output (``cpu_matmul="bf16"``)
  gives the same exact products for bf16 operands and runs on the bf16 units.

The flags are set for the head alone through :class:`icl_audio.precision.fp32_precision` (torch's
``fp32_precision`` API) and restored; a process that chose otherwise keeps its choice elsewhere.

**Four ways to run a plan** (:class:`Executor`; :func:`verified_path` picks one per model):
``plain`` (public API only: one forward over prompt + trie per pass under a full 4-D mask),
``cached`` (the prompt once, its keys/values reused by every trie pass), ``pruned`` (cached, and
the last layer computes only the rows the head reads) and ``fused`` (pruned, and the prompt and the
first trie pass in one forward, the prompt's rows under SDPA's causal kernel and the trie rows under
their mask: the weights are read once for both, which small trie passes pay dearly for on CPU;
every masked row attends with the query heads of a key/value head stacked, ``grouped_sdpa``).
The faster ones reach into transformers' internals (:mod:`icl_audio.hf_compat.llama`) and prove
themselves once per model against ``plain`` (:func:`icl_audio.hf_compat.proven_once`) before they
are used.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from icl_audio.hf_compat import llama as compat

__all__ = ["Target", "Plan", "Pass", "make_plan", "Executor", "loglikelihood", "loglikelihood_naive",
           "loglikelihood_shared", "MAX_BATCH_TOKENS"]

MAX_BATCH_TOKENS = 512  # trie tokens per pass; bounds attention/MLP activations
HEAD_ROWS = 256  # hidden rows per LM-head GEMM: a (vocabulary slice x 256) block of fp32 logits


@dataclass(frozen=True)
class Target:
    """One candidate continuation: token ids after the shared prefix; ``ids[score_from:]`` are scored."""

    ids: tuple[int, ...]
    score_from: int = 0


# --------------------------------------------------------------------------------------------
# plan (pure data, no model)


@dataclass(frozen=True)
class Pass:
    """One trie pass: ``tokens`` at ``positions``; ``ancestors[i, j]``: node i may attend to node j;
    ``read``: the nodes whose final hidden state the head needs (in row order)."""

    tokens: tuple[int, ...]
    positions: tuple[int, ...]
    ancestors: np.ndarray
    read: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """What the model computes. The prompt pass feeds ``prefix``/``prefix_positions``; its last row is
    head row 0. Each :class:`Pass` appends ``len(read)`` head rows. ``pairs``: (head row, token,
    continuation index) for every scored token."""

    prefix: tuple[int, ...]
    prefix_positions: tuple[int, ...]
    passes: tuple[Pass, ...]
    pairs: tuple[tuple[int, int, int], ...]
    n_targets: int

    @property
    def head_rows(self) -> int:
        return 1 + sum(len(p.read) for p in self.passes)

    @property
    def trie_tokens(self) -> int:
        return sum(len(p.tokens) for p in self.passes)


def _as_target(c: Any) -> Target:
    if isinstance(c, Target):
        return c
    if hasattr(c, "ids") and hasattr(c, "score_from"):
        return Target(tuple(int(x) for x in c.ids), int(c.score_from))
    return Target(tuple(int(x) for x in c), 0)


class _Trie:
    """Nodes keyed by (parent, token, position), in insertion order (parent < child)."""

    def __init__(self) -> None:
        self.child: dict[tuple[int, int, int], int] = {}
        self.tokens: list[int] = []
        self.positions: list[int] = []
        self.parent: list[int] = []

    def new_nodes(self, fed: Sequence[tuple[int, int]]) -> int:
        node = -1
        for j, (tok, pos) in enumerate(fed):
            nxt = self.child.get((node, tok, pos))
            if nxt is None:
                return len(fed) - j
            node = nxt
        return 0

    def insert(self, fed: Sequence[tuple[int, int]]) -> list[int]:
        path, node = [], -1
        for tok, pos in fed:
            nxt = self.child.get((node, tok, pos))
            if nxt is None:
                nxt = len(self.tokens)
                self.child[(node, tok, pos)] = nxt
                self.tokens.append(tok)
                self.positions.append(pos)
                self.parent.append(node)
            path.append(nxt)
            node = nxt
        return path

    def ancestors(self) -> np.ndarray:
        n = len(self.tokens)
        anc = np.zeros((n, n), dtype=bool)
        for i, p in enumerate(self.parent):
            if p >= 0:
                anc[i] = anc[p]
            anc[i, i] = True
        return anc


def make_plan(prefix_ids: Sequence[int], continuations: Iterable[Any], *, max_batch_tokens: int = MAX_BATCH_TOKENS,
              hidden_ids: Iterable[int] = ()) -> Plan:
    """The :class:`Plan` for scoring ``continuations`` after ``prefix_ids`` (pure function).

    ``continuations``: token-id sequences or :class:`Target` objects. ``hidden_ids``: token ids that
    keep their position but are never fed (see the module docstring). Raises ValueError for an empty
    prefix or a scored token that follows a hidden one.
    """
    hidden = frozenset(int(x) for x in hidden_ids)
    full_prefix = [int(x) for x in prefix_ids]
    if not full_prefix:
        raise ValueError("loglikelihood needs a non-empty prefix (at least a BOS token)")
    fed_prefix = [(t, p) for p, t in enumerate(full_prefix) if t not in hidden]
    targets = [_as_target(c) for c in continuations]
    base = len(full_prefix)

    # Per continuation: the fed (token, position) pairs, and for each scored token the index in the fed
    # list of its predecessor (-1: the prompt's last row).
    feds, scored = [], []
    for t in targets:
        fed, where = [], []
        for j, tok in enumerate(t.ids):
            if j >= t.score_from:
                before = full_prefix[-1] if j == 0 else t.ids[j - 1]
                if before in hidden:
                    raise ValueError(f"scored token {tok} follows hidden token {before}: nothing would predict it")
                where.append((len(fed) - 1 if j > 0 else -1, tok))
            if tok not in hidden:
                fed.append((tok, base + j))
        # The last fed token predicts nothing scored unless a scored token follows it: trim trailing ones.
        last_needed = max((w for w, _ in where), default=-1)
        feds.append(fed[: last_needed + 1])
        scored.append(where)
    if fed_prefix[-1][1] != base - 1 and any(w == -1 for s in scored for w, _ in s):
        raise ValueError("a scored first token follows a hidden prefix token: nothing would predict it")

    # Pack continuations into tries of at most max_batch_tokens nodes; sorted so that shared first tokens
    # land in the same trie.
    order = sorted(range(len(targets)), key=lambda i: feds[i])
    groups: list[list[int]] = []
    trie, group, count = _Trie(), [], 0
    for i in order:
        new = trie.new_nodes(feds[i])
        if group and count + new > max_batch_tokens:
            groups.append(group)
            trie, group, count = _Trie(), [], 0
            new = len(feds[i])
        trie.insert(feds[i])
        count += new
        group.append(i)
    if group:
        groups.append(group)

    passes, pairs, row = [], [], 1
    for group in groups:
        trie = _Trie()
        paths = {i: trie.insert(feds[i]) for i in group}
        read = sorted({paths[i][w] for i in group for w, _ in scored[i] if w >= 0})
        row_of = {node: row + r for r, node in enumerate(read)}
        for i in group:
            for w, tok in scored[i]:
                pairs.append((0 if w < 0 else row_of[paths[i][w]], tok, i))
        if read:
            passes.append(Pass(tuple(trie.tokens), tuple(trie.positions), trie.ancestors(), tuple(read)))
            row += len(read)
    return Plan(prefix=tuple(t for t, _ in fed_prefix), prefix_positions=tuple(p for _, p in fed_prefix),
                passes=tuple(passes), pairs=tuple(pairs), n_targets=len(targets))


# --------------------------------------------------------------------------------------------
# executor


def _hf_model(model: Any):
    # Accept a LanguageModel (has .layout) or a bare Hugging Face causal LM.
    return model.model if hasattr(model, "layout") and hasattr(model, "model") else model


def _pass_mask(p: Pass, n_prefix: int, dtype: Any, device: Any, with_prefix_rows: bool):
    """Additive 4-D mask: 0 where a row may look, -inf elsewhere. Rows: the trie nodes (and, for the
    plain path, the prompt's rows first, causal); keys: prompt + trie nodes."""
    import torch

    n = len(p.tokens)
    rows = n_prefix + n if with_prefix_rows else n
    allowed = torch.zeros((rows, n_prefix + n), dtype=torch.bool)
    off = n_prefix if with_prefix_rows else 0
    if with_prefix_rows:
        allowed[:n_prefix, :n_prefix] = torch.ones(n_prefix, n_prefix, dtype=torch.bool).tril()
    allowed[off:, :n_prefix] = True
    allowed[off:, n_prefix:] = torch.from_numpy(p.ancestors)
    mask = torch.zeros((1, 1, rows, n_prefix + n), dtype=dtype)
    return mask.masked_fill_(~allowed, float("-inf")).to(device)


def _causal_mask(n: int, dtype: Any, device: Any):
    """Additive 4-D causal mask over ``n`` fed positions (0 on and below the diagonal, -inf above)."""
    import torch

    mask = torch.full((1, 1, n, n), float("-inf"), dtype=dtype)
    return mask.triu_(1).to(device)


class Executor:
    """Runs a :class:`Plan` on a Hugging Face causal LM (Llama family): final hidden states of the head
    rows, then fp32 log-probabilities. ``path``: "plain", "cached", "pruned" or "fused" (see module docstring)."""

    def __init__(self, model: Any, path: str):
        self.hf = _hf_model(model)
        self.decoder = self.hf.get_decoder()
        emb = self.hf.get_input_embeddings().weight
        self.device, self.dtype = emb.device, emb.dtype
        self.path = path
        self.cache_kw = compat.cache_keyword(self.decoder)

    def _decode(self, rows: list[int], **inputs: Any):
        """One decoder pass; the final hidden states of ``rows`` (and the output, for its cache)."""
        import torch

        if self.path in ("pruned", "fused"):
            fused = self.path == "fused"
            # Fused: a masked pass's rows (trie nodes; all of the pass when icl_split is 0, a pass
            # against a cache) attend through the split, grouped attention of hf_compat.llama.
            split = fused and inputs.get("attention_mask") is not None
            if split:
                inputs.setdefault("icl_split", 0)
            with (compat.SplitAttention(self.hf) if split else contextlib.nullcontext()), \
                    compat.PrunedLastLayer(self.decoder, rows, grouped=fused):
                out = self.decoder(**inputs)
            return out.last_hidden_state[0], out
        out = self.decoder(**inputs)
        return out.last_hidden_state[0, torch.tensor(rows, device=self.device)], out

    def hidden_rows(self, plan: Plan):
        """(head rows, hidden) tensor: row 0 the prompt's last position, then each pass's read nodes."""
        import torch

        dev = self.device
        n_prefix = len(plan.prefix)
        prefix_t = torch.tensor([plan.prefix], device=dev)
        prefix_pos = torch.tensor([plan.prefix_positions], device=dev)
        chunks = []
        if self.path == "plain":
            # Public API only: prompt + trie in one forward under a full 4-D mask, the prompt recomputed per pass.
            for i, p in enumerate(plan.passes or [None]):
                if p is None:
                    # Without a mask and a cache, transformers takes position ids that jump (a hidden
                    # token's position kept) for a packed sequence: the 4-D causal mask says what is meant.
                    h, _ = self._decode([n_prefix - 1], input_ids=prefix_t, position_ids=prefix_pos, use_cache=False,
                                        attention_mask=_causal_mask(n_prefix, self.dtype, dev))
                    chunks.append(h)
                    break
                first = [n_prefix - 1] if i == 0 else []
                h, _ = self._decode(
                    first + [n_prefix + r for r in p.read], use_cache=False,
                    input_ids=torch.tensor([plan.prefix + p.tokens], device=dev),
                    position_ids=torch.tensor([plan.prefix_positions + p.positions], device=dev),
                    attention_mask=_pass_mask(p, n_prefix, self.dtype, dev, with_prefix_rows=True))
                chunks.append(h)
            return torch.cat(chunks, dim=0)

        # Always with a cache, even when no trie pass follows: with one, transformers builds the causal
        # mask from the cache positions and never takes position ids that jump (hidden tokens) for a
        # packed sequence, and SDPA keeps its causal kernel (an explicit mask would compute every block).
        passes = list(plan.passes)
        if self.path == "fused" and passes:
            # The prompt and the first trie pass in one forward (the weights read once for both): the
            # prompt's rows causal, the trie rows under their mask (hf_compat.llama.SplitAttention).
            first = passes.pop(0)
            h, out = self._decode(
                [n_prefix - 1] + [n_prefix + r for r in first.read],
                input_ids=torch.tensor([plan.prefix + first.tokens], device=dev),
                position_ids=torch.tensor([plan.prefix_positions + first.positions], device=dev),
                attention_mask=_pass_mask(first, n_prefix, self.dtype, dev, with_prefix_rows=False),
                use_cache=bool(passes), icl_split=n_prefix)
        else:
            h, out = self._decode([n_prefix - 1], input_ids=prefix_t, position_ids=prefix_pos, use_cache=True)
        chunks.append(h)
        if passes:
            kv = [(k[:, :, :n_prefix], v[:, :, :n_prefix]) for k, v in compat.cache_tensors(compat.output_cache(out))]
            del out
            for p in passes:
                h, _ = self._decode(
                    list(p.read),
                    input_ids=torch.tensor([p.tokens], device=dev),
                    position_ids=torch.tensor([p.positions], device=dev),
                    attention_mask=_pass_mask(p, n_prefix, self.dtype, dev, with_prefix_rows=False),
                    use_cache=True, **{self.cache_kw: compat.cache_from_tensors(kv)})
                chunks.append(h)
        return torch.cat(chunks, dim=0)

    def run(self, plan: Plan) -> list[tuple[float, int]]:
        import torch

        if not plan.n_targets:
            return []
        with torch.inference_mode():
            hidden = self.hidden_rows(plan)
            if not plan.pairs:
                return [(0.0, 0)] * plan.n_targets
            rows, tokens, target = (np.asarray(x) for x in zip(*plan.pairs))
            logps = token_logprobs(self.hf, hidden, rows, tokens)
        sums = np.zeros(plan.n_targets, dtype=np.float64)
        np.add.at(sums, target, logps)
        counts = np.bincount(target, minlength=plan.n_targets)
        return [(float(sums[i]), int(counts[i])) for i in range(plan.n_targets)]


# --------------------------------------------------------------------------------------------
# the LM head in fp32


def token_logprobs(hf: Any, hidden: Any, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log p(tokens[i] | hidden[rows[i]]) in fp32 over the whole vocabulary, as a float64 array.

    ``hidden``: (n, hidden size) final hidden states on the model's device; ``rows``/``tokens``:
    integer arrays of equal length (a row of ``hidden``, a token id). A plain ``nn.Linear`` head
    (Llama's) runs as :func:`_head_fp32`; any other head is called as a module, ``HEAD_ROWS`` rows at
    a time, and its logits upcast. The scored values are gathered on the device and copied back once.
    """
    import torch

    rows, tokens = np.asarray(rows, dtype=np.int64), np.asarray(tokens, dtype=np.int64)
    head = hf.get_output_embeddings()
    if isinstance(head, torch.nn.Linear) and head.bias is None and head.weight.dtype.is_floating_point:
        picked, lse = _head_fp32(head.weight, hidden, rows, tokens)
    else:
        picked, lse = _head_module(head, hidden, rows, tokens)
    both = torch.cat([picked, lse]).double().cpu().numpy()  # the one copy back (one sync on CUDA)
    return both[: len(rows)] - both[len(rows):]


def _vocab_chunk(device: Any) -> int:
    # Vocabulary rows per fp32 GEMM. CPU: 1,024 x 2,048 fp32 is 8 MB, upcast into one buffer reused
    # slice after slice, which stays in cache for the GEMM (measured fastest of 1,024-8,192 at the
    # Llasa-1B shape, on 1 and 2 threads). CUDA: fewer, larger GEMMs (32,768 x 2,048 fp32: 256 MB).
    return 1024 if device.type == "cpu" else 32768


def _grouped_pairs(rows: np.ndarray, tokens: np.ndarray, n_rows: int, chunk: int, device: Any):
    """The (row, token) pairs sorted by (vocabulary slice of ``chunk`` tokens, block of ``HEAD_ROWS`` rows).

    Returns ``index``, a (4, pairs) int64 tensor on ``device`` (uploaded at once): pair number, token
    within its slice, row within its block (in sorted order), and every pair's row (in input order);
    and ``bounds``: the pairs of group ``slice * n_blocks + block`` are ``bounds[g]:bounds[g + 1]``.
    """
    import torch

    n_blocks = -(-n_rows // HEAD_ROWS)
    group = (tokens // chunk) * n_blocks + rows // HEAD_ROWS
    order = np.argsort(group, kind="stable")
    n_groups = (int(tokens.max()) // chunk + 1) * n_blocks if len(tokens) else 0
    bounds = np.searchsorted(group[order], np.arange(n_groups + 1))
    index = np.stack([order, tokens[order] % chunk, rows[order] % HEAD_ROWS, rows])
    return torch.from_numpy(index).to(device), bounds


def _head_fp32(weight: Any, hidden: Any, rows: np.ndarray, tokens: np.ndarray):
    """(scored logits, log-normaliser of each pair's row): fp32 tensors on the device.

    The logits are ``hidden @ weight^T`` in fp32, a slice of the vocabulary at a time: each slice is
    upcast once per call, then multiplied with every block of ``HEAD_ROWS`` hidden rows, and its
    logits become a partial logsumexp while still in cache (the partials combine exactly).
    The math is set for the block by :func:`_head_math`: exact products, fp32 sums.
    """
    import torch

    device = hidden.device
    n, vocab = hidden.shape[0], weight.shape[0]
    chunk = _vocab_chunk(device)
    n_slices, n_blocks = -(-vocab // chunk), -(-n // HEAD_ROWS)
    index, bounds = _grouped_pairs(rows, tokens, n, chunk, device)
    states = hidden.float()  # bf16 values when the model computes in bf16
    partial = torch.empty((n_slices, n), dtype=torch.float32, device=device)
    picked = torch.empty(len(rows), dtype=torch.float32, device=device)
    upcast = weight.dtype != torch.float32
    buffer = torch.empty((min(chunk, vocab), weight.shape[1]), dtype=torch.float32, device=device) if upcast else None
    with _head_math(device, weight.dtype, hidden.dtype):
        for s in range(n_slices):
            v0, v1 = s * chunk, min(vocab, (s + 1) * chunk)
            w = buffer[: v1 - v0].copy_(weight[v0:v1]) if upcast else weight[v0:v1]
            for b in range(n_blocks):
                start = b * HEAD_ROWS
                logits = torch.mm(states[start:start + HEAD_ROWS], w.t())  # (block rows, slice) fp32
                partial[s, start:start + logits.shape[0]] = torch.logsumexp(logits, dim=1)
                g = s * n_blocks + b
                if g + 1 < len(bounds) and bounds[g + 1] > bounds[g]:
                    lo, hi = int(bounds[g]), int(bounds[g + 1])
                    picked[index[0, lo:hi]] = logits[index[2, lo:hi], index[1, lo:hi]]
    return picked, torch.logsumexp(partial, dim=0)[index[3]]


def _head_module(head: Any, hidden: Any, rows: np.ndarray, tokens: np.ndarray):
    """:func:`_head_fp32` for a head that is not a plain ``nn.Linear``: the module itself, logits upcast."""
    import torch

    device = hidden.device
    n = hidden.shape[0]
    index, bounds = _grouped_pairs(rows, tokens, n, 1 << 62, device)  # one "slice": the whole vocabulary
    lse = torch.empty(n, dtype=torch.float32, device=device)
    picked = torch.empty(len(rows), dtype=torch.float32, device=device)
    for b, start in enumerate(range(0, n, HEAD_ROWS)):
        logits = head(hidden[start:start + HEAD_ROWS]).float()  # (block rows, vocabulary)
        lse[start:start + logits.shape[0]] = torch.logsumexp(logits, dim=-1)
        if b + 1 < len(bounds) and bounds[b + 1] > bounds[b]:
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            picked[index[0, lo:hi]] = logits[index[2, lo:hi], index[1, lo:hi]]
    return picked, lse[index[3]]


def _head_math(device: Any, weight_dtype: Any, hidden_dtype: Any):
    """The precision of the head's fp32 GEMMs (see "Scores in fp32" in the module docstring): exact
    products whenever both operands hold 16-bit values, true fp32 otherwise, whatever the process set."""
    import torch

    from icl_audio.precision import fp32_precision

    half = (torch.bfloat16, torch.float16)
    if device.type == "cuda":
        return fp32_precision(cuda_matmul="tf32" if weight_dtype in half and hidden_dtype in half else "ieee")
    if device.type == "cpu":
        bf16 = weight_dtype == torch.bfloat16 and hidden_dtype == torch.bfloat16
        return fp32_precision(cpu_matmul="bf16" if bf16 else "ieee")
    return fp32_precision()


# --------------------------------------------------------------------------------------------
# the fast paths, proven once per model

_PATH_MEMO = "_icl_audio_scoring_path"  # the proof's verdict, kept on the model (dropped with it)


def _probe_plan(hf: Any) -> Plan:
    # A few tokens through every mechanism: two trie passes against the prompt's cache
    # (max_batch_tokens=3), the first with siblings (a trie node that must not see another branch),
    # shared trie prefixes, scored first tokens, positions beyond the prompt, and a hidden token in
    # the prompt (its position kept, so the prompt's positions jump).
    vocab = hf.get_input_embeddings().weight.shape[0]
    ids = [int(x) for x in np.random.default_rng(0).integers(1, min(vocab, 1000), size=14)]
    prefix = ids[:6]
    prefix[2] = 0
    conts = [Target(tuple(ids[6:9])), Target(tuple(ids[6:8]) + (ids[9],)), Target(tuple(ids[10:12]), 1),
             Target(tuple(ids[12:14]))]
    return make_plan(prefix, conts, max_batch_tokens=3, hidden_ids=[0])


def verified_path(model: Any) -> str:
    """The fastest path that reproduces the plain one on this model ("fused", "pruned", "cached" or "plain").

    Proven once per model object (:func:`icl_audio.hf_compat.proven_once`) on a probe of a few
    tokens: final hidden states at the head rows must agree with the plain path (relative error 1e-4
    in fp32, 3e-2 in bf16/fp16). A path that fails or raises is skipped with one warning line naming
    the reason (:func:`icl_audio.hf_compat.warn_fallback`). The proof also runs the fp32 head once,
    so that scoring's one-time state exists from then on.
    """
    from icl_audio.hf_compat import proven_once

    return proven_once(_hf_model(model), _PATH_MEMO, _prove_paths)


def _prove_paths(hf: Any) -> str:
    import torch

    from icl_audio.hf_compat import warn_fallback

    plan = _probe_plan(hf)
    tol = 1e-4 if hf.get_input_embeddings().weight.dtype == torch.float32 else 3e-2
    with torch.inference_mode():
        plain = Executor(hf, "plain").hidden_rows(plan)
        ref = plain.float()
        chosen = "plain"
        candidates = ["cached"]
        if compat.prunable(hf.get_decoder().layers[-1]):
            candidates[:0] = ["fused", "pruned"]
        failed: list[str] = []
        first_error: Exception | None = None
        for name in candidates:
            try:
                got = Executor(hf, name).hidden_rows(plan).float()
                err = float((got - ref).norm() / ref.norm().clamp_min(1e-30)) if got.shape == ref.shape else float("inf")
                if not err <= tol:  # also catches NaN
                    raise ValueError(f"differs from the plain path (relative error {err:.2e})")
                chosen = name
                break
            except Exception as exc:  # a moved internal: fall back, never a wrong score
                failed.append(name)
                first_error = first_error or exc
        if first_error is not None:  # ONE line, however many paths fell through
            warn_fallback(f"the {'/'.join(failed)} scoring path", first_error,
                          f"using the {chosen} path (slower, same scores)")
        # The head once, on one row: its first call sets up state that lives as long as the process
        # (oneDNN's scratchpad for the vocabulary-slice matmuls: ~46 MB with the debug model). Made
        # here, before any clip is encoded, the peak memory of a job does not depend on whether the
        # codec runs before or after the first score (see icl_audio.memory).
        token_logprobs(hf, plain[:1], np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))
    return chosen


def loglikelihood(model: Any, prefix_ids: Sequence[int], continuations: Sequence[Any], *,
                  max_batch_tokens: int = MAX_BATCH_TOKENS, hidden_ids: Iterable[int] = (),
                  path: str | None = None) -> list[tuple[float, int]]:
    """Exact log-likelihood of each continuation after a shared prefix.

    ``model``: a :class:`~icl_audio.llm.LanguageModel` or a Hugging Face causal LM (Llama family).
    ``prefix_ids``: the shared prompt, at least one token. ``continuations``: token-id sequences, or
    :class:`Target` objects whose ``ids[score_from:]`` alone are scored (the rest is context, as
    channel mode needs). ``hidden_ids``: tokens that take a position but are never attended to.
    ``path``: force "plain", "cached", "pruned" or "fused" (default: the fastest verified on this model).
    Returns, in input order, ``(sum of log p in nats, n scored tokens)``; independent of batching
    beyond float rounding.
    """
    plan = make_plan(prefix_ids, continuations, max_batch_tokens=max_batch_tokens, hidden_ids=hidden_ids)
    return Executor(model, path or verified_path(model)).run(plan)


def loglikelihood_naive(model: Any, prefix_ids: Sequence[int], continuations: Sequence[Any], *,
                        hidden_ids: Iterable[int] = ()) -> list[tuple[float, int]]:
    """Reference for :func:`loglikelihood`: one full forward over prefix + continuation per continuation,
    with hidden tokens masked by a 2-D ``attention_mask`` exactly as in training (``ids != pad``).

    Same inputs and outputs; cost grows as candidates x prompt length. Used by tests and the speed bench.
    """
    import torch

    hf = _hf_model(model)
    device = hf.get_input_embeddings().weight.device
    hidden = frozenset(int(x) for x in hidden_ids)
    prefix = [int(x) for x in prefix_ids]
    results = []
    with torch.inference_mode():
        for c in continuations:
            t = _as_target(c)
            n = len(t.ids)
            if n - t.score_from <= 0:
                results.append((0.0, 0))
                continue
            seq = prefix + list(t.ids)
            ids = torch.tensor([seq], device=device)
            mask = torch.tensor([[0 if x in hidden else 1 for x in seq]], device=device)
            kwargs = {"attention_mask": mask} if hidden else {}
            # Rows of the last n+1 positions but the last: row j predicts continuation token j.
            states = hf.get_decoder()(input_ids=ids, **kwargs).last_hidden_state[0, -(n + 1):-1]
            logits = states.float() @ hf.get_output_embeddings().weight.float().t()
            logp = torch.log_softmax(logits, dim=-1)
            idx = torch.arange(t.score_from, n, device=device)
            tok = torch.tensor(t.ids[t.score_from:], device=device)
            results.append((float(logp[idx, tok].double().sum()), n - t.score_from))
    return results


# --------------------------------------------------------------------------------------------
# several queries after one shared prefix (an episode: its demonstrations, then each query)


class _SharedPrefixExecutor(Executor):
    """An :class:`Executor` whose plans all begin with the same fed tokens, ``shared``: their keys
    and values are computed once (the first time a plan needs them) and every plan starts from them.

    A plan's own part of the prefix (the query) is one pass against the shared cache: a chain, each
    token seeing the shared tokens and the query tokens before it; its trie passes then run against
    shared + query keys and values exactly as :meth:`Executor.hidden_rows` runs them against a prompt's.
    """

    def __init__(self, model: Any, path: str, shared: Sequence[int], shared_positions: Sequence[int]):
        super().__init__(model, path)
        self.shared, self.shared_positions = tuple(shared), tuple(shared_positions)
        self._shared_kv = None
        self._shared_last = None

    def _shared_pass(self):
        import torch

        if self._shared_kv is None:
            n = len(self.shared)
            h, out = self._decode([n - 1], input_ids=torch.tensor([self.shared], device=self.device),
                                  position_ids=torch.tensor([self.shared_positions], device=self.device), use_cache=True)
            self._shared_kv = [(k[:, :, :n], v[:, :, :n]) for k, v in compat.cache_tensors(compat.output_cache(out))]
            self._shared_last = h
        return self._shared_kv, self._shared_last

    def hidden_rows(self, plan: Plan):
        import torch

        n_shared = len(self.shared)
        if plan.prefix[:n_shared] != self.shared or plan.prefix_positions[:n_shared] != self.shared_positions:
            raise ValueError("the plan does not start with the shared prefix")
        kv, h = self._shared_pass()
        q_tokens, q_positions = plan.prefix[n_shared:], plan.prefix_positions[n_shared:]
        n_prefix = len(plan.prefix)
        if q_tokens:
            chain = Pass(q_tokens, q_positions, np.tril(np.ones((len(q_tokens), len(q_tokens)), dtype=bool)),
                         (len(q_tokens) - 1,))
            h, out = self._decode(
                [len(q_tokens) - 1], input_ids=torch.tensor([q_tokens], device=self.device),
                position_ids=torch.tensor([q_positions], device=self.device),
                attention_mask=_pass_mask(chain, n_shared, self.dtype, self.device, with_prefix_rows=False),
                use_cache=True, **{self.cache_kw: compat.cache_from_tensors(kv)})
            if plan.passes:
                kv = [(k[:, :, :n_prefix], v[:, :, :n_prefix]) for k, v in compat.cache_tensors(compat.output_cache(out))]
            del out
        chunks = [h]
        for p in plan.passes:
            h, _ = self._decode(
                list(p.read),
                input_ids=torch.tensor([p.tokens], device=self.device),
                position_ids=torch.tensor([p.positions], device=self.device),
                attention_mask=_pass_mask(p, n_prefix, self.dtype, self.device, with_prefix_rows=False),
                use_cache=True, **{self.cache_kw: compat.cache_from_tensors(kv)})
            chunks.append(h)
        return torch.cat(chunks, dim=0)


_SHARED_MEMO = "_icl_audio_shared_prefix"


def _shared_prefix_proven(hf: Any, path: str) -> bool:
    """Whether :class:`_SharedPrefixExecutor` reproduces the plain path on this model (checked once per
    model on a probe of a few tokens, as :func:`verified_path` checks the prompt cache; one warning if not)."""
    from icl_audio.hf_compat import proven_once, warn_fallback

    def prove(decoder):
        import torch

        vocab = hf.get_input_embeddings().weight.shape[0]
        ids = [int(x) for x in np.random.default_rng(1).integers(0, min(vocab, 1000), size=16)]
        conts = [Target(tuple(ids[9:12])), Target(tuple(ids[9:11]) + (ids[12],)), Target(tuple(ids[13:16]), 1)]
        tol = 1e-4 if hf.get_input_embeddings().weight.dtype == torch.float32 else 3e-2
        shared = _SharedPrefixExecutor(hf, path, ids[:5], range(5))
        try:
            with torch.inference_mode():
                for query in (ids[5:9], ids[5:6], []):
                    plan = make_plan(ids[:5] + query, conts, max_batch_tokens=3)
                    ref = Executor(hf, "plain").hidden_rows(plan).float()
                    got = shared.hidden_rows(plan).float()
                    err = float((got - ref).norm() / ref.norm().clamp_min(1e-30))
                    if got.shape != ref.shape or err > tol:
                        raise ValueError(f"differs from the plain path (relative error {err:.2e})")
        except Exception as exc:  # a moved internal: one prompt per query instead, never a wrong score
            warn_fallback("the shared-prefix scoring path", exc, "one prompt per query: slower, same scores")
            return decoder
        return _SHARED_MEMO

    return proven_once(hf.get_decoder(), f"{_SHARED_MEMO}_{path}", prove) == _SHARED_MEMO


def loglikelihood_shared(model: Any, shared_prefix: Sequence[int], queries: Sequence[tuple[Sequence[int], Sequence[Any]]], *,
                         max_batch_tokens: int = MAX_BATCH_TOKENS, hidden_ids: Iterable[int] = (),
                         path: str | None = None) -> list[list[tuple[float, int]]]:
    """Log-likelihoods for several queries that share a prefix, its keys and values computed once.

    ``shared_prefix``: token ids every query starts with (an episode's instruction and demonstrations).
    ``queries``: ``(query_prefix_ids, continuations)`` pairs; query ``j`` is scored exactly as
    ``loglikelihood(model, shared_prefix + query_prefix_ids, continuations)`` (equal within float
    rounding), so ``continuations`` take the same forms (token ids or :class:`Target`).
    ``hidden_ids``, ``max_batch_tokens``, ``path``: as :func:`loglikelihood`. Returns one result list per
    query, in input order.

    The shared keys and values are reused only on a verified cached path, after a once-per-model proof
    against the plain path (:func:`_shared_prefix_proven`); otherwise each query runs as its own prompt.
    """
    shared = [int(x) for x in shared_prefix]
    plans = [make_plan(shared + [int(x) for x in q], conts, max_batch_tokens=max_batch_tokens, hidden_ids=hidden_ids)
             for q, conts in queries]
    if not plans:
        return []
    chosen = path or verified_path(model)
    hidden = frozenset(int(x) for x in hidden_ids)
    fed = [(t, p) for p, t in enumerate(shared) if t not in hidden]
    hf = _hf_model(model)
    if chosen == "plain" or not fed or not _shared_prefix_proven(hf, chosen):
        executor = Executor(model, chosen)
        return [executor.run(plan) for plan in plans]
    executor = _SharedPrefixExecutor(model, chosen, [t for t, _ in fed], [p for _, p in fed])
    return [executor.run(plan) for plan in plans]
