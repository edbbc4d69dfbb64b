"""Fixed facts about the models and the codec, shared by every stage."""

from __future__ import annotations

SAMPLE_RATE = 16_000  # XCodec2 input rate
HOP = 320  # samples per codec frame
TOKENS_PER_SECOND = SAMPLE_RATE // HOP  # 50

# The one crop policy for clips: a clip longer than this keeps its first DEFAULT_MAX_SECONDS (its
# head, as ARCH truncates), wherever it is cut: while reading (icl_audio.audio.load_audio, which then
# decodes only the kept window) or, for arrays handed to the codec directly, in Codec.prepare.
DEFAULT_MAX_SECONDS = 30.0

DEFAULT_LLM = "HKUSTAudio/Llasa-1B-Multilingual"
LLASA_1B = "HKUSTAudio/Llasa-1B"
LLM_ALIASES = {"llasa-1b": LLASA_1B, "llasa-1b-multilingual": DEFAULT_LLM}
DEFAULT_CODEC = "HKUSTAudio/xcodec2-hf"

# `--model debug` / `--codec debug`: tiny models built locally (meaningless predictions by construction).
DEBUG_NAME = "debug"
DEBUG_CODEBOOK_SIZE = 256  # debug codec: FSQ levels [4, 4, 4, 4]

# Llasa's eight added special tokens, in id order (ids 128256..128263 in the real tokenizer).
LLASA_SPECIAL_TOKENS = (
    "<|TEXT_GENERATION_START|>",
    "<|TEXT_GENERATION_END|>",
    "<|TEXT_UNDERSTANDING_START|>",
    "<|TEXT_UNDERSTANDING_END|>",
    "<|SPEECH_GENERATION_START|>",
    "<|SPEECH_GENERATION_END|>",
    "<|SPEECH_UNDERSTANDING_START|>",
    "<|SPEECH_UNDERSTANDING_END|>",
)
LLASA_CONTEXT = 2048  # Llasa was trained on sequences of at most this many tokens

# Names the CLI lists in --help before anything heavy is imported (this module is stdlib-only).
SCORING_MODES = ("direct", "channel")  # log p(label | audio), log p(audio | label)
NORMALIZE = ("sum", "mean")  # a label's log-likelihood: summed over its tokens, or their mean
QUANT_MODES = ("int8", "nf4")  # bitsandbytes quantisation of the LLM

# Methods of `icl-audio bench`: the fold protocol's, and the episode protocol's (N-way K-shot).
BENCH_METHODS = ("icl", "knn", "linear-probe", "clap-zero-shot", "majority", "random-label", "icl-random-demos")
DEFAULT_BENCH_METHODS = tuple(m for m in BENCH_METHODS if m != "clap-zero-shot")  # CLAP: another download
EPISODE_METHODS = ("icl", "prototype", "nearest", "random-label", "clap-zero-shot")
DEFAULT_EPISODE_METHODS = tuple(m for m in EPISODE_METHODS if m != "clap-zero-shot")


def speech_token(code: int) -> str:
    """The Llasa token text for codec code ``code``."""
    return f"<|s_{code}|>"
