"""The `linear-probe` baseline: ARCH's linear probe trained on the same frozen clip embeddings retrieval uses.

ARCH (and the X-Codec paper's Table 5) evaluate a representation by training one linear layer on
it over the full training split. This module does exactly that on *our* representation -- the
mean-pooled speech-token embeddings of :func:`icl_audio.retrieval.clip_embeddings`, stored in every
support set -- so a bench shows, on the same folds and clips, what a standard trained probe gets
from what the in-context learner retrieves with. Recipe (ARCH's ``arch_eval/models``): one
``nn.Linear``; AdamW, lr 1e-3; linear warm-up over the first 10% of steps, then linear decay to 0;
batch 32; a fixed number of epochs, the last one kept; cross-entropy, or binary cross-entropy
per label for multi-label data.

One addition, said plainly: features are standardised with the training split's mean and std.
Our embeddings are L2-normalised 2048-d means (each coordinate ~0.02), on which lr 1e-3 would
barely move a linear layer in 200 epochs; an affine rescaling changes nothing a linear layer
could express, only how fast AdamW gets there.

Everything is seeded (initialisation and batch order) and runs on CPU, so a probe is a pure
function of (embeddings, labels, config): every rank of a torchrun and every resumed run trains
the same one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

Ranked = list[tuple[str, float]]

#: Bumped when training changes in a way the config does not show: stored predictions are redone.
PROBE_VERSION = 1


@dataclass(frozen=True)
class ProbeConfig:
    """Training settings (ARCH's defaults). ``epochs``: ARCH's default 200; ``warmup``: fraction of
    all steps; ``standardize``: z-score features with the training statistics (see module doc)."""

    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 32
    warmup: float = 0.1
    weight_decay: float = 0.01  # torch's AdamW default, which ARCH leaves as is
    seed: int = 0
    standardize: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not (0.0 <= self.warmup < 1.0) or not self.lr > 0:
            raise ValueError(f"invalid probe config {self}")

    def fingerprint(self) -> dict:
        """What determines a trained probe besides its data (enters the bench's run fingerprints)."""
        return {"version": PROBE_VERSION, **asdict(self)}


@dataclass(frozen=True)
class LinearProbe:
    """A trained probe: ``scores(x)`` gives class probabilities (softmax) or per-label ones (sigmoid)."""

    classes: tuple[str, ...]
    multi_label: bool
    weight: np.ndarray  # (classes, dim)
    bias: np.ndarray  # (classes,)
    mean: np.ndarray  # (dim,) subtracted before the layer
    scale: np.ndarray  # (dim,) divided by before the layer

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``(n, classes)`` logits of embeddings ``x`` ``(n, dim)`` (or one ``(dim,)`` row)."""
        x = (np.atleast_2d(np.asarray(x, dtype=np.float64)) - self.mean) / self.scale
        return x @ self.weight.T.astype(np.float64) + self.bias.astype(np.float64)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Probabilities: softmax over classes (single-label) or a sigmoid per label (multi-label)."""
        z = self.logits(x)
        if self.multi_label:
            return 1.0 / (1.0 + np.exp(-z))
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def rank(self, x: np.ndarray) -> list[Ranked]:
        """Per row of ``x``: every class with its probability, best first (ties: class order)."""
        out = []
        for row in self.scores(x):
            order = sorted(range(len(self.classes)), key=lambda i: (-row[i], i))
            out.append([(self.classes[i], float(row[i])) for i in order])
        return out


def train_probe(
    x: np.ndarray,
    labels: Sequence[Sequence[str]],
    *,
    multi_label: bool,
    classes: Sequence[str] | None = None,
    config: ProbeConfig = ProbeConfig(),
) -> LinearProbe:
    """Train a linear probe on embeddings ``x`` ``(n, dim)`` with ``labels[i]`` the label(s) of row i.

    classes: the output classes (default: every label that occurs, sorted). Single-label data uses
    ``labels[i][0]``; multi-label data every label of ``labels[i]`` (labels outside ``classes`` are
    ignored). Raises ValueError on empty or mismatched inputs.
    """
    import torch

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0 or len(x) != len(labels):
        raise ValueError(f"need (n, dim) embeddings and n labels, got {x.shape} and {len(labels)}")
    classes = tuple(classes) if classes is not None else tuple(sorted({l for ls in labels for l in ls}))
    if not classes:
        raise ValueError("no classes to train a probe on")
    pos = {c: i for i, c in enumerate(classes)}
    if multi_label:
        y = np.zeros((len(x), len(classes)), dtype=np.float32)
        for i, ls in enumerate(labels):
            for l in ls:
                if l in pos:
                    y[i, pos[l]] = 1.0
        target = torch.from_numpy(y)
        loss_fn = torch.nn.BCEWithLogitsLoss()
    else:
        missing = sorted({ls[0] for ls in labels if ls[0] not in pos})
        if missing:
            raise ValueError(f"labels not among the classes: {', '.join(missing[:5])}")
        target = torch.tensor([pos[ls[0]] for ls in labels], dtype=torch.long)
        loss_fn = torch.nn.CrossEntropyLoss()

    mean = x.mean(axis=0) if config.standardize else np.zeros(x.shape[1], np.float32)
    scale = x.std(axis=0) if config.standardize else np.ones(x.shape[1], np.float32)
    scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
    features = torch.from_numpy((x - mean) / scale)

    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # the layer's init from our seed, the caller's RNG untouched
        torch.manual_seed(config.seed)
        layer = torch.nn.Linear(x.shape[1], len(classes))
    optimizer = torch.optim.AdamW(layer.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = -(-len(x) // config.batch_size)
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup * total)

    def factor(step: int) -> float:  # transformers' get_linear_schedule_with_warmup
        if step < warmup:
            return step / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    layer.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(layer(features[batch]), target[batch])
            loss.backward()
            optimizer.step()
            schedule.step()
    return LinearProbe(
        classes=classes,
        multi_label=multi_label,
        weight=layer.weight.detach().numpy().copy(),
        bias=layer.bias.detach().numpy().copy(),
        mean=mean.astype(np.float32),
        scale=scale,
    )
