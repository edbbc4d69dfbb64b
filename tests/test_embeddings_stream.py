"""Streamed clip embeddings (icl_audio.retrieval): equal to one gather of every token, in fixed memory;
and retrieval as the one path the classifier and the bench share."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from icl_audio.llm import SpeechLayout
from icl_audio.retrieval import Index, clip_embeddings, retrieve

FIRST_SPEECH = 10


def _lm(table: torch.Tensor):
    """The two things clip_embeddings reads: the input embedding table and the speech layout."""
    emb = torch.nn.Embedding.from_pretrained(table)
    layout = SpeechLayout(first_speech_id=FIRST_SPEECH, n_speech=table.shape[0] - FIRST_SPEECH, special_ids={})
    return SimpleNamespace(model=SimpleNamespace(get_input_embeddings=lambda: emb), layout=layout)


def _one_gather(table: torch.Tensor, codes) -> np.ndarray:
    """The formula written independently: every clip's rows gathered at once, upcast to fp32, summed per
    clip with index_add_, divided by the clip's length, L2-normalised."""
    ids = torch.from_numpy(np.concatenate([np.asarray(c, dtype=np.int64) + FIRST_SPEECH for c in codes]))
    lengths = torch.tensor([len(c) for c in codes])
    vectors = table[ids].float()
    segment = torch.repeat_interleave(torch.arange(len(codes)), lengths)
    sums = torch.zeros(len(codes), table.shape[1]).index_add_(0, segment, vectors)
    means = sums / lengths[:, None]
    return (means / means.norm(dim=1, keepdim=True)).numpy()


def _codes(seed: int = 0, n_codes: int = 200):
    rng = np.random.default_rng(seed)
    lengths = [1, 3, 50, 250, 17, 600, 2, 250]  # 600: longer than the smaller blocks below
    return [rng.integers(0, n_codes, n) for n in lengths]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("block_tokens", [1, 7, 256, 4096])
def test_streamed_embeddings_equal_one_gather(dtype, block_tokens):
    table = torch.randn(FIRST_SPEECH + 200, 48, generator=torch.Generator().manual_seed(0)).to(dtype)
    codes = _codes()
    got = clip_embeddings(_lm(table), codes, block_tokens=block_tokens)
    want = _one_gather(table, codes)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() < 1e-6
    # codes stored compactly (uint16, as support sets store them) embed the same
    compact = [c.astype(np.uint16) for c in codes]
    assert np.abs(clip_embeddings(_lm(table), compact, block_tokens=block_tokens) - want).max() < 1e-6


class _RecordingTable(torch.Tensor):
    """An embedding table that records how many rows each gather from it returns."""

    gathered: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        if func is torch.Tensor.__getitem__ and isinstance(out, torch.Tensor):
            cls.gathered.append(out.shape[0])
        return out


def test_embedding_memory_does_not_grow_with_the_set():
    """However many clips, one gather holds at most block_tokens rows (in the model's dtype and in fp32)."""
    table = torch.randn(FIRST_SPEECH + 200, 16).bfloat16().as_subclass(_RecordingTable)
    lm = _lm(table)
    lm.model.get_input_embeddings = lambda: SimpleNamespace(weight=table)
    codes = _codes() * 20  # 27,400 tokens
    _RecordingTable.gathered = []
    clip_embeddings(lm, codes, block_tokens=1000)
    assert sum(_RecordingTable.gathered) == sum(len(c) for c in codes)
    assert max(_RecordingTable.gathered) == 1000


def test_a_clip_without_codes_is_refused():
    table = torch.randn(FIRST_SPEECH + 200, 8)
    with pytest.raises(ValueError, match="no codes"):
        clip_embeddings(_lm(table), [np.array([1, 2]), np.array([], dtype=np.int64)])
    with pytest.raises(ValueError, match="block_tokens"):
        clip_embeddings(_lm(table), [np.array([1, 2])], block_tokens=0)


def test_retrieve_nearest_and_class_balanced():
    # Five clips on a circle: the two "a" clips are nearest the query, then "b", then "c".
    angles = np.array([0.0, 0.1, 0.3, 0.4, 1.2])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    support = _Support(Index(emb), (("a",), ("a",), ("b",), ("b",), ("c",)))
    query = np.array([1.0, 0.0], dtype=np.float32)
    assert [n.index for n in retrieve(support, query, 3)[0]] == [0, 1, 2]
    balanced = retrieve(support, query[None], 3, balanced_labels=["a", "b", "c"])[0]
    assert [n.index for n in balanced] == [0, 2, 4]  # one per label, most similar first
    assert balanced[0].similarity == pytest.approx(1.0)


class _Support:
    """A support-set stand-in: index, labels and len()."""

    def __init__(self, index, labels):
        self.index, self.labels = index, labels

    def __len__(self) -> int:
        return len(self.labels)
