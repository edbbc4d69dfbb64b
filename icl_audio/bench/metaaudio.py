"""MetaAudio's ESC-50 few-shot protocol (Heggan et al., ICANN 2022): its fixed class split and published rows.

MetaAudio splits ESC-50's 50 classes once (``ESC_paper_splits.npy`` of its repository): 35 training
classes (for meta-training), 5 validation classes, 10 test classes. Its tasks are 5-way, K = 1 and
5, one query per class, 10,000 test tasks, whole 5 s clips; accuracy is the mean over tasks with a
95% interval of 1.96 x std / sqrt(tasks). A training-free in-context learner has nothing to train on
the 35 training classes: it is evaluated on the 10 test classes only, and SimpleShot's centring
(the ``prototype`` baseline) takes the 35 training classes' mean embedding, as SimpleShot's base
classes.

The published rows are other protocols' inputs: log-mel spectrograms through backbones trained on
the training classes (or frozen AST features, ImageNet + AudioSet pre-training). They are printed
beside ours as the bar to compare against, not as the same experiment.
"""

from __future__ import annotations

# ESC-50 category codes (the ``category`` column of meta/esc50.csv).
TEST_CLASSES = ("vacuum_cleaner", "sneezing", "thunderstorm", "crow", "glass_breaking", "church_bells", "cow", "dog",
                "airplane", "engine")
VALIDATION_CLASSES = ("crackling_fire", "clock_alarm", "coughing", "hen", "breathing")
WAY, QUERIES = 5, 1
METAAUDIO_SHOTS = (1, 5)
METAAUDIO_EPISODES = 10_000
CLIP_SECONDS = 5.0

SOURCE = ("MetaAudio benchmark (Heggan et al., 2022), Table 2a (5-way 1-shot, % +- 95% CI) and its repository's "
          "result tables (5-way 5-shot, CRNN backbone; frozen AST features)")
INPUTS_NOTE = ("other protocols' inputs: log-mel spectrograms and trained backbones (meta-trained on MetaAudio's 35 "
               "training classes; the AST rows: frozen ImageNet + AudioSet features)")

#: (method, {K: (accuracy %, 95% CI % or None)}) in the order of the paper's table.
PUBLISHED: tuple[tuple[str, dict[int, tuple[float, float | None]]], ...] = (
    ("FO-MAML", {1: (74.66, 0.42), 5: (96.34, None)}),
    ("FO-Meta-Curvature", {1: (76.17, 0.41), 5: (97.43, None)}),
    ("ProtoNets", {1: (68.83, 0.38), 5: (94.08, None)}),
    ("SimpleShot CL2N", {1: (68.82, 0.39), 5: (95.20, None)}),
    ("Meta-Baseline", {1: (71.72, 0.38), 5: (95.67, None)}),
    ("frozen AST + SVM", {1: (61.61, None)}),
    ("frozen AST + SimpleShot CL2N", {1: (64.48, None)}),
)


def base_classes(all_codes: set[str]) -> set[str]:
    """MetaAudio's training classes among ``all_codes``: every ESC-50 class that is neither test nor validation."""
    return set(all_codes) - set(TEST_CLASSES) - set(VALIDATION_CLASSES)
