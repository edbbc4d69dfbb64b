"""Retrieval: clip embeddings from the LLM's speech-token embeddings, a FAISS index, and demonstration selection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from icl_audio.llm import LanguageModel
    from icl_audio.support import SupportSet


@dataclass(frozen=True)
class Neighbor:
    """One retrieved support clip: its position in the support set and its cosine similarity."""

    index: int
    similarity: float


# Token ids gathered at once. The gathered rows are upcast to fp32 a block at a time, so embedding
# holds at most this many rows in the model's dtype and in fp32 whatever the number of clips:
# 4,096 x 2,048 at Llasa's width is 16 MB in bf16 and 32 MB in fp32 (a whole ESC-50 set at once
# would be ~2 GB and ~4 GB).
EMBED_BLOCK_TOKENS = 4096


def clip_embeddings(lm: "LanguageModel", codes: Sequence[np.ndarray], block_tokens: int = EMBED_BLOCK_TOKENS) -> np.ndarray:
    """Embed clips as the L2-normalised mean of the LLM's input embeddings of their speech tokens.

    ``codes``: one non-empty 1-D integer array of codec codes per clip. Returns float32
    ``(len(codes), dim)``. The embedding table is the one the LLM reads the demonstrations with, so
    "similar" here means similar to the model; it costs a gather and a mean, no forward pass.

    Streamed: the clips' token ids are cut into blocks of at most ``block_tokens`` (a long clip
    spans several), each block's rows are gathered on the model's device, upcast to fp32 and summed
    per clip into fp32 sums on the host. Memory beyond the result is fixed, whatever the number of
    clips; the result equals one gather of everything within fp32 rounding of the sums (~1e-7).
    """
    import torch

    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    table = lm.model.get_input_embeddings().weight
    sums = torch.zeros((len(codes), table.shape[1]), dtype=torch.float32)
    lengths = torch.zeros(len(codes), dtype=torch.float64)
    with torch.inference_mode():
        for clip_of_row, ids in _token_blocks(lm, codes, block_tokens):
            first = int(clip_of_row[0])
            rows = torch.from_numpy(clip_of_row - first)
            # Per clip of this block, on the device: the gathered fp32 rows never leave it.
            block_sums = torch.zeros((int(rows[-1]) + 1, table.shape[1]), dtype=torch.float32, device=table.device)
            block_sums.index_add_(0, rows.to(table.device), table[torch.from_numpy(ids).to(table.device)].float())
            sums[first:first + block_sums.shape[0]] += block_sums.cpu()
            lengths[first:first + block_sums.shape[0]] += torch.bincount(rows, minlength=block_sums.shape[0]).double()
        means = sums / lengths.float()[:, None]
        return torch.nn.functional.normalize(means, dim=1).numpy()


def _token_blocks(lm: "LanguageModel", codes: Sequence[np.ndarray], block_tokens: int):
    """``(clip index of each token, token ids)`` over all clips in order, at most ``block_tokens`` per block."""
    clip_of_row: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    filled = 0
    for i, clip in enumerate(codes):
        clip_ids = lm.layout.to_ids(np.asarray(clip))
        if clip_ids.size == 0:
            raise ValueError("cannot embed a clip with no codes")
        start = 0
        while start < clip_ids.size:
            take = min(block_tokens - filled, clip_ids.size - start)
            ids.append(clip_ids[start:start + take])
            clip_of_row.append(np.full(take, i, dtype=np.int64))
            filled += take
            start += take
            if filled == block_tokens:
                yield np.concatenate(clip_of_row), np.concatenate(ids)
                clip_of_row, ids, filled = [], [], 0
    if filled:
        yield np.concatenate(clip_of_row), np.concatenate(ids)


class Index:
    """Exact cosine-similarity search over L2-normalised embeddings (FAISS ``IndexFlatIP``).

    Exact search is the right default: support sets hold thousands to tens of thousands of
    clips, for which a flat scan takes milliseconds and never misses a neighbour.
    """

    def __init__(self, embeddings: np.ndarray, faiss_index=None):
        import faiss

        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if faiss_index is None:
            faiss_index = faiss.IndexFlatIP(self.embeddings.shape[1])
            faiss_index.add(self.embeddings)
        self.faiss_index = faiss_index

    def __len__(self) -> int:
        return self.faiss_index.ntotal

    def search(self, queries: np.ndarray, k: int) -> list[list[Neighbor]]:
        """The ``k`` nearest support clips of each query, most similar first.

        ``queries``: ``(n, dim)`` or ``(dim,)`` float32 normalised embeddings. ``k`` larger than
        the index returns every clip.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        if k <= 0:
            return [[] for _ in range(len(queries))]
        sims, ids = self.faiss_index.search(queries, k)
        return [
            [Neighbor(int(i), float(s)) for i, s in zip(row_ids, row_sims) if i >= 0]
            for row_ids, row_sims in zip(ids, sims)
        ]

    def write(self, path) -> None:
        """Save the FAISS index (its own binary format, no pickle)."""
        import faiss

        faiss.write_index(self.faiss_index, str(path))

    @classmethod
    def read(cls, path, embeddings: np.ndarray) -> "Index":
        """Load an index written by :meth:`write`; ``embeddings`` must be the ones it indexes."""
        import faiss

        index = faiss.read_index(str(path))
        if index.ntotal != len(embeddings) or index.d != embeddings.shape[1]:
            raise ValueError(f"index holds {index.ntotal}x{index.d}, embeddings are {embeddings.shape}")
        return cls(embeddings, index)


# --------------------------------------------------------------------------------------------
# demonstration selection


def retrieve(support: "SupportSet", query_embeddings: np.ndarray, k: int, *,
             balanced_labels: Sequence[str] | None = None) -> list[list[Neighbor]]:
    """The ``k`` nearest clips of ``support`` to each query, most similar first: the one retrieval
    path of the classifier and the bench.

    ``support``: a :class:`~icl_audio.support.SupportSet` (its ``index`` and ``labels``).
    ``query_embeddings``: ``(n, dim)`` or ``(dim,)`` from :func:`clip_embeddings`. With
    ``balanced_labels``, the nearest clips of each of those labels are taken in turn
    (:func:`select_balanced`), so every candidate appears among the demonstrations when k allows.
    """
    if not balanced_labels:
        return support.index.search(query_embeddings, k)
    rows = support.index.search(query_embeddings, len(support))
    return [[row[i] for i in select_balanced([support.labels[n.index] for n in row], balanced_labels, k)]
            for row in rows]



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
