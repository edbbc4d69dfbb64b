"""The `clap-zero-shot` baseline: what users would otherwise pick -- CLAP scoring each label as a text prompt.

transformers' ``ClapModel`` embeds the query audio (48 kHz) and one sentence per candidate label
("This is a sound of dog."); the labels are ranked by the audio-text similarity, the way the
zero-shot-audio-classification pipeline does it. No support clip is used. LAION-CLAP reports about
91% on ESC-50 this way, which is the bar an in-context learner with a handful of demonstrations
is compared against in practice.

The model is any CLAP checkpoint: a hub id (default ``laion/clap-htsat-unfused``) or a local folder,
loaded with ``from_pretrained`` (no ``trust_remote_code``). A model that is not there is one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from icl_audio.errors import AudioError, ModelError

DEFAULT_CLAP = "laion/clap-htsat-unfused"
CLAP_TEMPLATE = "This is a sound of {label}."
CLAP_RATE = 48_000
Ranked = list[tuple[str, float]]


# What a CLAP snapshot needs: config, safetensors weights, the processor's and tokenizer's files.
CLAP_PATTERNS = ("*.json", "*.safetensors", "*.txt", "tokenizer*", "vocab*", "merges*")


def resolve_clap(name: str) -> Path:
    """The local folder of CLAP model ``name`` (a folder, or a hub id found in the HF cache / downloaded),
    through the one model resolver (:func:`icl_audio.hub.resolve_model`: the same offline rules,
    partial-cache check, gated and not-found messages as the LLM and the codec).

    Raises ModelError (one line) for a missing folder, a file, or a hub id that is not cached
    while the hub is offline or unreachable, saying how to point at a local copy.
    """
    from icl_audio.hub import resolve_model

    return resolve_model(name, kind="CLAP model", flag="--clap-model", patterns=CLAP_PATTERNS).folder


def read_48k(path: str | os.PathLike, max_seconds: float | None) -> np.ndarray:
    """A file as float32 mono at 48 kHz, its first ``max_seconds`` only (read from its own rate:
    CLAP hears up to 24 kHz, so it is not taken from the 16 kHz signal the codec reads)."""
    import soundfile as sf
    import soxr

    try:
        with sf.SoundFile(str(path)) as f:
            frames = f.frames if max_seconds is None else min(f.frames, int(max_seconds * f.samplerate))
            data = f.read(frames, dtype="float32", always_2d=True)
            rate = f.samplerate
    except Exception as exc:  # soundfile raises several types for unreadable files
        raise AudioError(f"{path}: cannot read audio ({exc})") from None
    mono = data.mean(axis=1)
    if mono.size == 0 or not np.isfinite(mono).all():
        raise AudioError(f"{path}: empty audio or NaN/inf samples")
    if rate != CLAP_RATE:
        mono = soxr.resample(mono, rate, CLAP_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


class ClapZeroShot:
    """CLAP zero-shot ranking of candidate labels for audio clips.

    model: hub id or local folder (see :func:`resolve_clap`); device: "auto", "cpu", "cuda[:N]";
    template: the text of a label, ``{label}`` replaced; batch_size: clips per forward pass.
    """

    def __init__(self, model: str = DEFAULT_CLAP, *, device: str = "auto", template: str = CLAP_TEMPLATE,
                 batch_size: int = 8):
        import torch
        from transformers import ClapModel, ClapProcessor

        from icl_audio.devices import resolve_device
        from icl_audio.hub import quiet_transformers
        from icl_audio.weights import load_pretrained

        folder = resolve_clap(model)
        self.model_id, self.template, self.batch_size = model, template, batch_size
        self.device = resolve_device(device)
        # A baseline from a third party's checkpoint: keys that do not fit are named as a warning, not refused.
        self.model = load_pretrained(ClapModel, folder, label=f"CLAP model {model}", check_weights=False,
                                     dtype=torch.float32)
        self.model = self.model.to(self.device).eval()
        try:
            with quiet_transformers():
                self.processor = ClapProcessor.from_pretrained(folder)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{model}: not a loadable CLAP model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        fe = self.processor.feature_extractor
        # Clips longer than the extractor's window would be cropped at a *random* place
        # ("rand_trunc"); keeping the head ourselves keeps every ranking deterministic.
        self.max_samples = int(getattr(fe, "nb_max_samples", 10 * CLAP_RATE))
        self._texts: dict[tuple[str, ...], Any] = {}

    def _features(self, out) -> Any:
        import torch

        x = out.pooler_output if hasattr(out, "pooler_output") else out
        return torch.nn.functional.normalize(x.float(), dim=-1)

    def text_embeddings(self, labels: Sequence[str]):
        """Normalised text embeddings of the labels' prompts (cached per label tuple)."""
        import torch

        key = tuple(labels)
        if key not in self._texts:
            inputs = self.processor.tokenizer([self.template.format(label=l) for l in key], return_tensors="pt", padding=True)
            with torch.inference_mode():
                self._texts = {key: self._features(self.model.get_text_features(**inputs.to(self.device)))}
        return self._texts[key]

    def scores(self, clips: Sequence[np.ndarray], labels: Sequence[str], *, multi_label: bool = False) -> np.ndarray:
        """``(clips, labels)`` scores of 48 kHz clips: a softmax over the labels of CLAP's scaled
        similarities, or for multi-label data the cosine similarity itself (a per-label score
        comparable across clips, which is what mAP ranks)."""
        import torch

        text = self.text_embeddings(labels)
        out = []
        for start in range(0, len(clips), self.batch_size):
            batch = [np.asarray(c, dtype=np.float32)[: self.max_samples] for c in clips[start : start + self.batch_size]]
            inputs = self.processor.feature_extractor(batch, sampling_rate=CLAP_RATE, return_tensors="pt")
            with torch.inference_mode():
                audio = self._features(self.model.get_audio_features(**inputs.to(self.device)))
                sims = audio @ text.T
                if not multi_label:
                    sims = torch.softmax(sims * self.model.logit_scale_a.exp(), dim=-1)
            out.append(sims.cpu().double().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(labels)))

    def rank_files(self, paths: Sequence[str | os.PathLike], labels: Sequence[str], *, max_seconds: float | None = None,
                   multi_label: bool = False, progress: Callable[[int], None] | None = None) -> list[Ranked | str]:
        """Per path: every label with its score, best first -- or the one-line read error (a str)."""
        results: list[Ranked | str] = []
        for start in range(0, len(paths), self.batch_size):
            chunk = paths[start : start + self.batch_size]
            clips, where = [], []
            slots: list[Ranked | str] = []
            for path in chunk:
                try:
                    clips.append(read_48k(path, max_seconds))
                    where.append(len(slots))
                    slots.append("")
                except AudioError as exc:
                    slots.append(str(exc))
            for i, row in zip(where, self.scores(clips, labels, multi_label=multi_label)):
                order = sorted(range(len(labels)), key=lambda j: (-row[j], j))
                slots[i] = [(labels[j], float(row[j])) for j in order]
            results.extend(slots)
            if progress is not None:
                progress(len(chunk))
        return results
