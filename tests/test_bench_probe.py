"""The linear-probe baseline: it learns what is linearly learnable, nothing from shuffled labels, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icl_audio.bench.metrics import accuracy, mean_average_precision
from icl_audio.bench.probe import LinearProbe, ProbeConfig, train_probe

CLASSES = ("dog", "rain", "siren")


def clusters(n_per_class: int, dim: int = 24, seed: int = 0, spread: float = 0.6):
    """Three Gaussian clusters around random unit centres, L2-normalised like retrieval embeddings."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).standard_normal((len(CLASSES), dim))
    x, y = [], []
    for c, centre in enumerate(centres):
        x.append(centre + spread * rng.standard_normal((n_per_class, dim)))
        y += [(CLASSES[c],)] * n_per_class
    x = np.concatenate(x).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def top1(probe: LinearProbe, x) -> list[str]:
    return [ranked[0][0] for ranked in probe.rank(x)]


def test_learns_a_separable_problem():
    x, y = clusters(40)
    xt, yt = clusters(50, seed=1)
    probe = train_probe(x, y, multi_label=False)
    assert probe.classes == CLASSES
    assert accuracy([t[0] for t in yt], top1(probe, xt)) >= 0.98
    p = probe.scores(xt)
    assert p.shape == (150, 3) and np.allclose(p.sum(axis=1), 1.0)


def test_shuffled_labels_stay_at_chance():
    x, y = clusters(40)
    xt, yt = clusters(200, seed=1)
    shuffled = [y[i] for i in np.random.default_rng(7).permutation(len(y))]
    probe = train_probe(x, shuffled, multi_label=False)
    held_out = accuracy([t[0] for t in yt], top1(probe, xt))
    assert held_out < 0.55, held_out  # chance is 1/3; the clean labels give ~1.0 (test above)


def test_multi_label_learns_per_label():
    # Label j is on when coordinate j is positive: separable per label, several labels per clip.
    # 640 clips: 20 batches x 200 epochs, the number of steps an ESC-50-sized training split gets.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((640, 8)).astype(np.float32)
    xt = rng.standard_normal((200, 8)).astype(np.float32)
    names = ["a", "b", "c", "d"]
    y = [tuple(n for j, n in enumerate(names) if v[j] > 0) for v in x]
    yt = [tuple(n for j, n in enumerate(names) if v[j] > 0) for v in xt]
    probe = train_probe(x, y, multi_label=True, classes=names)
    scores = probe.scores(xt)
    assert scores.shape == (200, 4) and ((scores > 0) & (scores < 1)).all()
    assert not np.allclose(scores.sum(axis=1), 1.0)  # independent sigmoids, not a softmax
    result = mean_average_precision([list(t) for t in yt], [dict(zip(names, row)) for row in scores])
    assert result["map_macro"] >= 0.95


def test_deterministic_under_a_seed_and_leaves_the_global_rng_alone():
    x, y = clusters(30)
    state = torch.random.get_rng_state()
    a = train_probe(x, y, multi_label=False, config=ProbeConfig(epochs=20, seed=3))
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(999)  # a different global state must not matter
    b = train_probe(x, y, multi_label=False, config=ProbeConfig(epochs=20, seed=3))
    c = train_probe(x, y, multi_label=False, config=ProbeConfig(epochs=20, seed=4))
    assert np.array_equal(a.weight, b.weight) and np.array_equal(a.bias, b.bias)
    assert not np.array_equal(a.weight, c.weight)


def test_schedule_is_warmup_then_linear_decay(monkeypatch):
    # Record the learning rate of every step: 0 -> peak over the first 10% of steps, then down to 0.
    seen = []
    original = torch.optim.AdamW.step

    def step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    x, y = clusters(16)  # 48 clips: 2 batches of 32 per epoch
    train_probe(x, y, multi_label=False, config=ProbeConfig(epochs=50))
    assert len(seen) == 100
    assert seen[0] == 0.0 and seen[10] == pytest.approx(1e-3) and max(seen) == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(seen[:10], seen[1:11]))
    assert all(a >= b for a, b in zip(seen[10:], seen[11:])) and seen[-1] == pytest.approx(1e-3 / 90)


def test_bad_inputs():
    x, y = clusters(5)
    with pytest.raises(ValueError):
        train_probe(x[:3], y, multi_label=False)
    with pytest.raises(ValueError, match="not among the classes"):
        train_probe(x, y, multi_label=False, classes=("dog",))
    with pytest.raises(ValueError):
        ProbeConfig(epochs=0)
