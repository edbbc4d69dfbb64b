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


def speech_token(code: int) -> str:
    """The Llasa token text for codec code ``code``."""
    return f"<|s_{code}|>"
