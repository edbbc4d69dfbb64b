"""Retrieval: clip embeddings from the LLM's speech-token embeddings, a FAISS index, and demonstration selection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from icl_audio.llm import LanguageModel


@dataclass(frozen=True)
class Neighbor:
    """One retrieved support clip: its position in the support set and its cosine similarity."""

    index: int
    similarity: float


def clip_embeddings(lm: "LanguageModel", codes: Sequence[np.ndarray], batch_tokens: int = 1 << 20) -> np.ndarray:
    """Embed clips as the L2-normalised mean of the LLM's input embeddings of their speech tokens.

    ``codes``: one 1-D integer array of codec codes per clip. Returns float32 ``(len(codes), dim)``.
    The embedding table is the one the LLM reads the demonstrations with, so "similar" here
    means similar to the model; it costs a gather and a mean, no forward pass.
    """
    import torch

    table = lm.model.get_input_embeddings().weight
    dim = table.shape[1]
    out = np.zeros((len(codes), dim), dtype=np.float32)
    with torch.inference_mode():
        start = 0
        while start < len(codes):
            # Group clips so one gather stays within `batch_tokens` ids.
            stop, total = start, 0
            while stop < len(codes) and (stop == start or total + len(codes[stop]) <= batch_tokens):
                total += len(codes[stop])
                stop += 1
            chunk = codes[start:stop]
            lengths = torch.tensor([len(c) for c in chunk], dtype=torch.long)
            if int(lengths.min()) == 0:
                raise ValueError("cannot embed a clip with no codes")
            ids = torch.from_numpy(np.concatenate([lm.layout.to_ids(np.asarray(c)) for c in chunk]).astype(np.int64))
            vectors = table[ids.to(table.device)].float().cpu()
            segment = torch.repeat_interleave(torch.arange(len(chunk)), lengths)
            sums = torch.zeros(len(chunk), dim).index_add_(0, segment, vectors)
            means = sums / lengths[:, None]
            out[start:stop] = torch.nn.functional.normalize(means, dim=1).numpy()
            start = stop
    return out


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
