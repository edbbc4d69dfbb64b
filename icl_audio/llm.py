"""The language model stage: load a Llasa LLM (hub id, local folder or "debug") and read its speech-token layout."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from icl_audio import paths
from icl_audio.constants import (
    DEBUG_CODEBOOK_SIZE,
    DEBUG_NAME,
    DEFAULT_LLM,
    LLASA_SPECIAL_TOKENS,
    LLM_ALIASES,
    speech_token,
)
from icl_audio.errors import ModelError
from icl_audio.hub import looks_like_path, quiet_transformers, resolve_device

# Llama-3's own special tokens (the subset the debug tokenizer carries). Looked up by name, never by id.
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)

# Llama-3's pre-tokenizer split pattern: the debug tokenizer splits text exactly as Llasa's does, so
# label tokenisation behaves alike (e.g. " dog" is one pre-token with its leading space).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Bump whenever anything below changes what the debug build writes: an older build is then rebuilt.
_DEBUG_BUILD_VERSION = 1
_DEBUG_DIRNAME = "debug-llasa"
_DEBUG_MARKER = "icl_audio_debug.json"
_DEBUG_SEED = 1234
_DEBUG_TEXT_VOCAB = 2048

# The fixed corpus the debug tokenizer's byte-level BPE is trained on: ordinary English prose and
# common words (sound-related ones among them), so that labels split into about as many tokens as
# with Llama 3's 128k vocabulary (ESC-50 names: ~1.9 each). Changing it changes every debug build.
_BPE_PROSE = """\
The morning was quiet until the wind came over the hills and shook the old trees near the house.
Children played in the garden, and a small dog ran after them, barking at every bird it could see.
In the kitchen, water was boiling on the stove while someone washed the dishes and sang a song.
A train passed in the distance; its horn sounded twice before it crossed the river and the bridge.
People talked in the street, cars drove slowly, and a bell rang from the tower of the church.
The weather changed in the afternoon. Heavy rain fell on the roof, and thunder rolled across the sky.
After the storm, the air was clean and cool, and the birds started to sing again in the forest.
She opened the door, put her keys on the table, and sat down to read a letter from her brother.
He was typing on his keyboard, clicking the mouse, and listening to music with his headphones on.
The machine in the basement started with a loud noise, then settled into a low and steady hum.
There are many kinds of sounds in the world: voices, animals, engines, music, water and weather.
Some sounds are short, like a knock on a door or a clap of hands; others last for a long time.
A good listener can tell a violin from a guitar, a cat from a cow, and a laugh from a cough.
The farmer fed the pigs, the sheep and the hens, while the cows walked slowly into the field.
At night the insects were loud, the frogs called from the pond, and an owl hooted in the dark.
In the city, sirens passed by, a helicopter flew over the buildings, and people crossed the road.
Workers used a saw and a hammer to build a new fence, and the sound echoed between the walls.
The baby was crying, so her father picked her up, walked around the room and sang softly to her.
On the weekend they went to the sea, listened to the waves, and watched the ships sail away.
The clock on the wall ticked every second, and the alarm rang at seven o'clock in the morning.
Numbers like 1, 2, 3, 10, 42, 100 and 2024 appear in text too, as do dates, times and prices.
Questions? Answers! Lists: one, two, three; quotes "like this" and (brackets) - and more.
"""
# Single words, each trained as its own line: labels are usually written without a leading space.
_BPE_WORDS = """
the of and to in is you that it he was for on are as with his they at be this have from or one had by
word but not what all were we when your can said there use an each which she do how their if will up
other about out many then them these so some her would make like him into time has look two more write
go see number no way could people my than first water been call who oil its now find long down day did
get come made may part sound sounds voice music noise animal animals bird birds dog dogs cat cats cow
cows pig pigs sheep hen hens frog frogs rooster crow insects crickets horse duck owl bee rain wind water
sea waves river storm thunder thunderstorm fire crackling drops pouring flowing snow ice door wood knock
knocking creak creaks creaking window glass breaking bell bells church clock alarm tick ticking car horn
engine train airplane plane helicopter siren truck motor bus traffic road street city machine washing
vacuum cleaner keyboard typing mouse click clicks phone ring ringing toilet flush baby crying laughing
laughter coughing sneezing breathing snoring clapping footsteps walking running talking singing speech
drinking sipping eating chewing brushing teeth hand saw chainsaw hammer drill fireworks gun shot
explosion guitar piano violin drum drums flute trumpet bass cello organ harp song songs rock pop jazz
classical folk happy sad angry calm fear surprise disgust neutral loud quiet soft low high fast slow
"""


@dataclass(frozen=True)
class SpeechLayout:
    """Where a Llasa tokenizer keeps its speech tokens and its special markup tokens.

    ``first_speech_id`` is the id of ``<|s_0|>``; codec code ``c`` is the token ``first_speech_id + c``
    for ``0 <= c < n_speech``. ``special_ids`` maps each known markup token (the eight Llasa specials and
    the Llama-3 specials the tokenizer has) to its id.
    """

    first_speech_id: int
    n_speech: int
    special_ids: Mapping[str, int]

    def to_ids(self, codes: np.ndarray) -> np.ndarray:
        """Token ids (int64) for a 1-D array of codec codes; a code outside the layout raises ModelError."""
        arr = np.asarray(codes)
        if arr.ndim != 1:
            raise ModelError(f"codec codes must be a 1-D array, got shape {arr.shape}")
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ModelError(f"codec codes must be integers, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= self.n_speech:
            bad = lo if lo < 0 else hi
            raise ModelError(
                f"codec code {bad} is outside the LLM's {self.n_speech} speech tokens: codec and LLM do not match"
            )
        return arr.astype(np.int64) + self.first_speech_id


@dataclass
class LanguageModel:
    """A loaded Llasa model: the HF causal LM, its tokenizer and its speech layout.

    ``model_id`` is the name it was loaded by (hub id, folder or "debug"); ``revision`` identifies the
    exact weights (hub commit, a hash of a local folder's files, or the debug build version).
    """

    model: Any
    tokenizer: Any
    layout: SpeechLayout
    model_id: str
    revision: str
    device: Any
    dtype: Any
    _forbidden: frozenset = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        # Ids a label must never produce: every added/special token and the whole speech range.
        forbidden = set(int(i) for i in getattr(self.tokenizer, "added_tokens_decoder", {}).keys())
        forbidden.update(self.layout.special_ids.values())
        for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
            value = getattr(self.tokenizer, name, None)
            if isinstance(value, int):
                forbidden.add(value)
        self._forbidden = frozenset(forbidden)

    @property
    def forbidden_text_ids(self) -> frozenset:
        """Ids :meth:`text_ids` never returns (added, special and speech tokens)."""
        return self._forbidden

    def is_text_id(self, token_id: int) -> bool:
        """True when ``token_id`` is an ordinary text token (not markup, not speech)."""
        f = self.layout.first_speech_id
        return token_id not in self._forbidden and not (f <= token_id < f + self.layout.n_speech)

    def markup_id(self, token: str) -> int:
        """The id of a markup token such as ``<|TEXT_UNDERSTANDING_START|>``; unknown -> ModelError."""
        try:
            return self.layout.special_ids[token]
        except KeyError:
            raise ModelError(
                f"{token} is not a special token of {self.model_id} (known: {', '.join(self.layout.special_ids)})"
            ) from None

    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` as PLAIN TEXT, never markup.

        Accepts any str. HF tokenizers match added tokens anywhere inside the text (``<|s_5|>`` would
        become speech token 5, ``<|SPEECH_GENERATION_END|>`` a special), so the text goes through the
        normaliser, pre-tokenizer and BPE model of the backend directly, which know nothing of added
        tokens. Any piece that still yields a forbidden id (a vocabulary that holds such a string as a
        merge) is re-tokenised one character at a time. No BOS is added.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        if not text:
            return []
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return self._text_ids_slow(text)
        normalized = backend.normalizer.normalize_str(text) if backend.normalizer is not None else text
        if backend.pre_tokenizer is not None:
            pieces = [p for p, _ in backend.pre_tokenizer.pre_tokenize_str(normalized)]
        else:
            pieces = [normalized]
        ids: list[int] = []
        for piece in pieces:
            piece_ids = [t.id for t in backend.model.tokenize(piece)]
            if any(not self.is_text_id(i) for i in piece_ids):
                piece_ids = [t.id for ch in piece for t in backend.model.tokenize(ch)]
            ids.extend(piece_ids)
        if any(not self.is_text_id(i) for i in ids):
            raise ModelError(f"the tokenizer of {self.model_id} cannot write {text!r} as plain text")
        return ids

    def _text_ids_slow(self, text: str) -> list[int]:
        # Tokenizers without a Rust backend: break every added-token string between its first two
        # characters so it can no longer match, tokenising the parts separately.
        added = sorted((t for t in self.tokenizer.get_vocab() if self.tokenizer.convert_tokens_to_ids(t) in self._forbidden),
                       key=len, reverse=True)
        parts = [text]
        for tok in added:
            if len(tok) < 2:
                continue
            new_parts = []
            for part in parts:
                chunks = part.split(tok)
                for i, chunk in enumerate(chunks):
                    if i:
                        new_parts.extend([tok[0], tok[1:]])
                    new_parts.append(chunk)
            parts = [p for p in new_parts if p]
        ids = [i for p in parts for i in self.tokenizer.encode(p, add_special_tokens=False)]
        if any(not self.is_text_id(i) for i in ids):
            raise ModelError(f"the tokenizer of {self.model_id} cannot write {text!r} as plain text")
        return ids


# --------------------------------------------------------------------------------------------
# layout


def read_layout(tokenizer: Any, where: str) -> SpeechLayout:
    """Derive the :class:`SpeechLayout` from a tokenizer; ModelError (naming ``where``) if it is not Llasa's.

    Checks: ``<|s_0|>`` exists, every ``<|s_N|>`` id is ``id(<|s_0|>) + N`` with no gap, and the eight
    Llasa special tokens are present.
    """
    vocab = tokenizer.get_vocab()
    first = vocab.get(speech_token(0))
    if first is None:
        raise ModelError(f"{where} is not a Llasa model: no <|s_0|> speech tokens in its tokenizer")
    pattern = re.compile(r"<\|s_(\d+)\|>")
    n = 0
    for tok in vocab:
        m = pattern.fullmatch(tok)
        if m is not None and str(int(m.group(1))) == m.group(1):
            n += 1
    # Every one is checked (a dict lookup each, fast even for 65,536): one gap would shift codes.
    for c in range(n):
        if vocab.get(speech_token(c)) != first + c:
            raise ModelError(
                f"{where} is not a Llasa model: speech token <|s_{c}|> is missing or not contiguous with <|s_0|>"
            )
    missing = [t for t in LLASA_SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise ModelError(f"{where} is not a Llasa model: its tokenizer lacks {', '.join(missing)}")
    specials = {t: int(vocab[t]) for t in LLAMA3_SPECIAL_TOKENS if t in vocab}
    specials.update({t: int(vocab[t]) for t in LLASA_SPECIAL_TOKENS})
    return SpeechLayout(first_speech_id=int(first), n_speech=n, special_ids=MappingProxyType(specials))


# --------------------------------------------------------------------------------------------
# device and dtype


def cpu_has_fast_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX), where bf16 beats fp32 ~4x."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:  # private API; absent on some builds -> play safe with fp32
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except Exception:
            return False


_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def resolve_dtype(dtype: Any, device: Any):
    """The torch dtype to run in: ``dtype`` if given (torch dtype or name like "bf16", "fp32"), else
    bf16 on CUDA and on CPUs with native bf16, fp32 otherwise."""
    import torch

    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    name = _DTYPE_NAMES.get(str(dtype).lower().replace("torch.", ""))
    if name is None:
        raise ModelError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16")
    return getattr(torch, name)


# --------------------------------------------------------------------------------------------
# tiny Llasa-layout models (debug model, speed bench)


def build_llasa_tokenizer(n_speech: int, *, vocab_size: int | None = None, text_vocab: int = _DEBUG_TEXT_VOCAB):
    """A tokenizer with Llasa's layout, built deterministically in memory.

    Byte-level BPE text tokens (Llama-3 split pattern; trained on a fixed built-in English corpus, so any
    unicode text is covered by the 256 byte tokens), then the Llama-3 specials, then (only if
    ``vocab_size`` is given) ``<|reserved_special_token_i|>`` padding so that the total is exactly
    ``vocab_size``, then the eight Llasa specials in order, then ``<|s_0|>``..``<|s_{n_speech-1}|>`` as
    ordinary (non-special) added tokens, like the real Llasa tokenizer.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(ignore_merges=True))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=text_vocab,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    # Fixed line order + a single trainer: the learned merges do not vary from run to run.
    tk.train_from_iterator(_BPE_PROSE.splitlines() + _BPE_WORDS.split(), trainer)
    n_text = tk.get_vocab_size()
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIAL_TOKENS])
    if vocab_size is not None:
        n_pad = vocab_size - n_text - len(LLAMA3_SPECIAL_TOKENS) - len(LLASA_SPECIAL_TOKENS) - n_speech
        if n_pad < 0:
            raise ValueError(f"vocab_size {vocab_size} is too small for {n_speech} speech tokens")
        tk.add_special_tokens(
            [AddedToken(f"<|reserved_special_token_{i}|>", special=True, normalized=False) for i in range(n_pad)]
        )
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLASA_SPECIAL_TOKENS])
    tk.add_tokens([AddedToken(speech_token(c), special=False, normalized=False) for c in range(n_speech)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|end_of_text|>",
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )


def llasa_config(tokenizer, *, hidden_size: int, num_layers: int, num_heads: int, num_kv_heads: int,
                 intermediate_size: int, head_dim: int | None = None, vocab_size: int | None = None,
                 tie_word_embeddings: bool = True):
    """A LlamaConfig of the given shape with Llasa's rope (theta 500000, llama3 scaling factor 32)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size if vocab_size is not None else len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        head_dim=head_dim if head_dim is not None else hidden_size // num_heads,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|eot_id|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|end_of_text|>"),
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )


def _random_model(config, *, seed: int, dtype):
    import torch
    from transformers import LlamaForCausalLM

    # A private RNG stream: the build is reproducible and the caller's torch RNG is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    model.requires_grad_(False)
    return model


def build_random_lm(*, hidden_size: int = 2048, num_layers: int = 16, num_heads: int = 32, num_kv_heads: int = 8,
                    intermediate_size: int = 8192, head_dim: int | None = 64, vocab_size: int | None = 193_800,
                    n_speech: int = 65_536, dtype: Any = "bfloat16", seed: int = 0,
                    tie_word_embeddings: bool = True) -> LanguageModel:
    """A random-weight Llama with Llasa's token layout, in memory, on CPU (defaults: the real Llasa-1B shape).

    With ``vocab_size=193_800`` and ``n_speech=65_536`` the ids match the real Llasa layout exactly
    (specials from 128256, ``<|s_0|>`` = 128264). ``vocab_size=None`` sizes the vocabulary to the
    tokenizer. Used by the speed bench and by tests; its predictions are meaningless.
    """
    import torch

    tokenizer = build_llasa_tokenizer(n_speech, vocab_size=vocab_size)
    config = llasa_config(tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                          num_kv_heads=num_kv_heads, intermediate_size=intermediate_size, head_dim=head_dim,
                          tie_word_embeddings=tie_word_embeddings)
    torch_dtype = resolve_dtype(dtype, torch.device("cpu"))
    model = _random_model(config, seed=seed, dtype=torch_dtype)
    layout = read_layout(tokenizer, "random model")
    return LanguageModel(model=model, tokenizer=tokenizer, layout=layout, model_id="random-llasa",
                         revision=f"seed-{seed}", device=torch.device("cpu"), dtype=torch_dtype)


def _debug_marker() -> dict:
    import transformers

    return {"builder": "icl_audio.llm", "version": _DEBUG_BUILD_VERSION, "seed": _DEBUG_SEED,
            "n_speech": DEBUG_CODEBOOK_SIZE, "transformers": transformers.__version__}


def _debug_valid(folder: Path) -> bool:
    try:
        marker = json.loads((folder / _DEBUG_MARKER).read_text())
    except (OSError, ValueError):
        return False
    needed = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
    return marker.get("version") == _DEBUG_BUILD_VERSION and all((folder / n).is_file() for n in needed)


def ensure_debug_model() -> Path:
    """Build the tiny debug Llasa into ``paths.models_dir()/"debug-llasa"`` unless a valid build is there.

    Hidden 64, 2 layers, 4 heads (2 key/value), tied embeddings, DEBUG_CODEBOOK_SIZE speech tokens;
    seeded, so two builds are byte-identical. Written to a temporary folder and renamed into place, so a
    crashed or concurrent build never leaves a half-written model behind.
    """
    import torch

    root = paths.models_dir()
    target = root / _DEBUG_DIRNAME
    if _debug_valid(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".debug-llasa-", dir=root))
    try:
        tokenizer = build_llasa_tokenizer(DEBUG_CODEBOOK_SIZE)
        config = llasa_config(tokenizer, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                              intermediate_size=128)
        model = _random_model(config, seed=_DEBUG_SEED, dtype=torch.float32)
        with quiet_transformers():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DEBUG_MARKER).write_text(json.dumps(_debug_marker(), sort_keys=True))
        if target.exists() and not _debug_valid(target):
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            # Another process finished first (target now exists): use its build, drop ours.
            if not _debug_valid(target):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------------------------
# loading


def _offline() -> bool:
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except Exception:
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:
        return "~/.cache/huggingface/hub"


def _folder_revision(folder: Path) -> str:
    # Hash of the config and the weight files' names and sizes: cheap, and changes when the weights do.
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.is_file() and (p.suffix in (".json", ".safetensors", ".bin", ".model")):
            h.update(p.name.encode())
            h.update(str(p.stat().st_size).encode())
            if p.name == "config.json":
                h.update(p.read_bytes())
    return "local-" + h.hexdigest()[:12]


def _fetch_snapshot(repo_id: str, revision: str | None) -> Path:
    """A local snapshot folder of ``repo_id`` from the HF cache, downloading only when online."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True, allow_patterns=patterns))
    except Exception:
        pass
    hint = (f"pass --model /path/to/folder holding a local copy, or run `huggingface-cli download {repo_id}` "
            f"on a connected machine and copy its cache")
    if _offline():
        raise ModelError(f"model {repo_id} is not in the Hugging Face cache ({_hf_cache_dir()}) and the hub is "
                         f"offline: {hint}")
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise ModelError(f"model {repo_id} could not be downloaded to {_hf_cache_dir()} "
                         f"({type(exc).__name__}): {hint}") from None


def _resolve_source(name: str) -> tuple[Path, str, str]:
    """(folder to load from, model id to report, revision)."""
    if name == DEBUG_NAME:
        folder = ensure_debug_model()
        return folder, DEBUG_NAME, f"debug-v{_DEBUG_BUILD_VERSION}"
    name = LLM_ALIASES.get(name.lower(), name) if isinstance(name, str) else str(name)
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        if not (candidate / "config.json").is_file():
            raise ModelError(f"model folder {candidate} has no config.json: not a Hugging Face model folder")
        return candidate, str(candidate), _folder_revision(candidate)
    if candidate.is_file():
        raise ModelError(f"model path {candidate} is a file: give the folder holding config.json and the weights")
    if looks_like_path(name):
        raise ModelError(f"model folder {candidate} does not exist (give a folder, a hub id such as {DEFAULT_LLM}, "
                         f"or 'debug')")
    folder = _fetch_snapshot(name, None)
    return folder, name, folder.name


def load_lm(name: str = DEFAULT_LLM, *, device: str = "auto", int8: bool = False, dtype: Any = None) -> LanguageModel:
    """Load a Llasa language model.

    ``name``: a hub id (default ``HKUSTAudio/Llasa-1B-Multilingual``; the alias ``llasa-1b`` means
    ``HKUSTAudio/Llasa-1B``), a local folder, or ``"debug"`` (a tiny random Llama with the exact Llasa
    layout, built once into the cache and loaded back through this same path).
    ``device``: "auto" (CUDA if present), "cpu", "cuda" or "cuda:N".
    ``int8``: 8-bit weights via bitsandbytes (``pip install "icl-audio[int8]"``).
    ``dtype``: None (bf16 on CUDA and on CPUs with native bf16, else fp32; fp32 for "debug"), or a
    torch dtype / "float32" / "bfloat16" / "float16".
    Raises ModelError (one line) when weights are missing, offline, or the model lacks the Llasa layout.
    Nothing is ever loaded with ``trust_remote_code``.
    """
    import torch

    torch_device = resolve_device(device)
    if int8:
        import importlib.util

        # transformers needs both for 8-bit loading; the [int8] extra installs them.
        if importlib.util.find_spec("bitsandbytes") is None or importlib.util.find_spec("accelerate") is None:
            raise ModelError('--int8 needs bitsandbytes: pip install "icl-audio[int8]"')
    folder, model_id, revision = _resolve_source(name)
    if dtype is None and name == DEBUG_NAME:
        dtype = torch.float32  # tiny: speed is irrelevant, exact scores are not
    torch_dtype = resolve_dtype(dtype, torch_device)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ModelError(f"the tokenizer of {model_id} could not be read from {folder} ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    # The layout is checked before the (large) weights are read: a wrong model fails fast.
    layout = read_layout(tokenizer, model_id)

    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True, "attn_implementation": "sdpa"}
    if int8:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": str(torch_device)}
    try:
        with quiet_transformers() if model_id == DEBUG_NAME else contextlib.nullcontext():
            model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelError(f"the weights of {model_id} could not be loaded from {folder} "
                         f"({type(exc).__name__}: {first})") from None
    if not int8:
        model.to(torch_device)
    model.eval()
    model.requires_grad_(False)
    rows = model.get_input_embeddings().num_embeddings
    if layout.first_speech_id + layout.n_speech > rows:
        raise ModelError(f"{model_id} has {rows} embedding rows but its tokenizer's speech tokens reach id "
                         f"{layout.first_speech_id + layout.n_speech - 1}: tokenizer and weights do not match")
    return LanguageModel(model=model, tokenizer=tokenizer, layout=layout, model_id=model_id, revision=revision,
                         device=torch_device, dtype=torch_dtype)
