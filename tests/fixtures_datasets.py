"""Builders of tiny synthetic dataset trees in each ARCH dataset's official layout, for tests.

Each ``make_<dataset>_tree(root, ...)`` writes a handful of short clips (0.3 s, 16 kHz, a
label-dependent tone plus a little noise, so clips of one class resemble each other) with the
real file naming and metadata format, and returns the folder to pass to the recipe's
``prepare``. ``missing=n`` adds n metadata rows whose audio is not written (recipes must skip them).
Importable from any test: ``from fixtures_datasets import make_esc50_tree``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import uuid
from pathlib import Path

import numpy as np

SR = 16_000
SECONDS = 0.3


def _freq(label: str) -> float:
    # Stable per label (not Python's salted hash), spread over 200-3200 Hz.
    return 200.0 + int(hashlib.sha256(label.encode()).hexdigest()[:6], 16) % 3000


def clip(label: str, seed: int = 0, seconds: float = SECONDS, sr: int = SR) -> np.ndarray:
    """A float32 clip for ``label``: its tone plus seeded noise (same label -> similar clips)."""
    t = np.arange(int(round(seconds * sr))) / sr
    tone = 0.3 * np.sin(2 * np.pi * _freq(label) * t + seed)
    noise = 0.02 * np.random.default_rng(seed).standard_normal(t.size)
    return (tone + noise).astype(np.float32)


def write_clip(path: Path, label: str, seed: int = 0, seconds: float = SECONDS) -> Path:
    """Write ``clip(label, seed)`` to ``path``; the format follows the suffix (wav, flac, mp3...).

    MP3 needs libsndfile >= 1.1; where it is missing the file gets WAV content under the .mp3 name,
    which soundfile still reads (it detects formats by content).
    """
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").upper()
    if fmt == "MP3" and "MP3" not in sf.available_formats():
        fmt = "WAV"
    sf.write(str(path), clip(label, seed, seconds), SR, format=fmt)
    return path


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


# ----------------------------------------------------------------------------------- ESC-50

ESC50_CATEGORIES = (("dog", 0), ("chirping_birds", 14), ("car_horn", 43))
_ESC10 = {"dog", "rooster", "rain", "sea_waves", "crackling_fire", "crying_baby", "sneezing",
          "clock_tick", "helicopter", "chainsaw"}


def make_esc50_tree(root: Path, *, folds: int = 5, categories=ESC50_CATEGORIES, per_fold: int = 1,
                    missing: int = 0) -> Path:
    """ESC-50: ``meta/esc50.csv`` + ``audio/{fold}-{src}-{take}-{target}.wav``.

    Writes folds x categories x per_fold clips (default 15); returns ``root``.
    """
    rows, n = [], 0
    for fold in range(1, folds + 1):
        for category, target in categories:
            for take in "ABCDEFGH"[:per_fold]:
                n += 1
                src = 100000 + n
                name = f"{fold}-{src}-{take}-{target}.wav"
                write_clip(root / "audio" / name, category, seed=n)
                rows.append([name, fold, target, category, category in _ESC10, src, take])
    for i in range(missing):
        category, target = categories[0]
        rows.append([f"1-{900000 + i}-A-{target}.wav", 1, target, category, category in _ESC10, 900000 + i, "A"])
    _csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)
    return root


# ----------------------------------------------------------------------------------- US8K

US8K_CLASSES = ((0, "air_conditioner"), (1, "car_horn"), (3, "dog_bark"))


def make_us8k_tree(root: Path, *, folds: int = 10, classes=US8K_CLASSES, missing: int = 0) -> Path:
    """UrbanSound8K: ``metadata/UrbanSound8K.csv`` + ``audio/fold{n}/{fsID}-{classID}-{occ}-{slice}.wav``.

    One clip per fold and class (default 30); returns ``root``.
    """
    rows, n = [], 0
    for fold in range(1, folds + 1):
        for class_id, name in classes:
            n += 1
            fs_id = 100000 + n
            fname = f"{fs_id}-{class_id}-0-0.wav"
            write_clip(root / "audio" / f"fold{fold}" / fname, name, seed=n)
            rows.append([fname, fs_id, 0.0, 0.3, 1, fold, class_id, name])
    for i in range(missing):
        class_id, name = classes[0]
        rows.append([f"{900000 + i}-{class_id}-0-0.wav", 900000 + i, 0.0, 4.0, 1, 1, class_id, name])
    (root / "audio").mkdir(parents=True, exist_ok=True)
    _csv(root / "metadata" / "UrbanSound8K.csv",
         ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)
    return root


# ----------------------------------------------------------------------------------- FSD50K

_DOG = "Bark,Dog,Domestic_animals_and_pets,Animal"
_GUITAR = "Electric_guitar,Guitar,Plucked_string_instrument,Musical_instrument,Music"
_SPEECH = "Male_speech_and_man_speaking,Speech,Human_voice"
FSD50K_DEV = ((64760, _GUITAR, "train"), (16399, _DOG, "train"), (16401, _DOG, "train"),
              (37199, _SPEECH, "train"), (175151, _GUITAR, "val"), (253463, _DOG, "val"))
FSD50K_EVAL = ((37, _SPEECH), (38, _DOG), (39, _GUITAR))


def make_fsd50k_tree(root: Path, *, missing: int = 0) -> Path:
    """FSD50K: ``FSD50K.ground_truth/{dev,eval}.csv`` + ``FSD50K.{dev,eval}_audio/{fname}.wav``.

    Six dev clips (4 train, 2 val) and three eval clips, multi-label; returns ``root``.
    """
    def mids(labels: str) -> str:
        return ",".join(f"/m/{hashlib.md5(x.encode()).hexdigest()[:5]}" for x in labels.split(","))

    dev = []
    for fname, labels, split in FSD50K_DEV:
        write_clip(root / "FSD50K.dev_audio" / f"{fname}.wav", labels, seed=fname)
        dev.append([fname, labels, mids(labels), split])
    for i in range(missing):
        dev.append([990000 + i, _DOG, mids(_DOG), "train"])
    ev = []
    for fname, labels in FSD50K_EVAL:
        write_clip(root / "FSD50K.eval_audio" / f"{fname}.wav", labels, seed=fname)
        ev.append([fname, labels, mids(labels)])
    _csv(root / "FSD50K.ground_truth" / "dev.csv", ["fname", "labels", "mids", "split"], dev)
    _csv(root / "FSD50K.ground_truth" / "eval.csv", ["fname", "labels", "mids"], ev)
    return root


# ----------------------------------------------------------------------------------- VIVAE

def make_vivae_tree(root: Path, *, speakers=(1, 2, 3), emotions=("achievement", "anger", "fear"),
                    intensities=("low",), reps: int = 1) -> Path:
    """VIVAE: ``full_set/S{speaker:02d}_{emotion}_{intensity}_{n:02d}.wav`` (default 9 clips); returns ``root``."""
    n = 0
    for s in speakers:
        for emo in emotions:
            for inten in intensities:
                for r in range(1, reps + 1):
                    n += 1
                    write_clip(root / "full_set" / f"S{s:02d}_{emo}_{inten}_{r:02d}.wav", emo, seed=n)
    return root


# ----------------------------------------------------------------------------------- FMA-small

FMA_GENRES = ("Hip-Hop", "Rock", "Folk", "Electronic")


def fma_track_ids(n: int) -> list[int]:
    """The track ids make_fma_small_tree uses: spread over several thousand-folders."""
    return [2 + 997 * i for i in range(n)]


def make_fma_small_tree(root: Path, *, layout: str = "nested", genres=FMA_GENRES, per_genre: int = 3,
                        missing: int = 0) -> Path:
    """FMA-small: ``fma_metadata/tracks.csv`` + mp3s in ``fma_small/``.

    layout: "nested" (official: ``fma_small/{id//1000:03d}/{id:06d}.mp3``) or "flat"
    (``fma_small/{id:06d}.mp3``). tracks.csv has the real two-row header (plus the "track_id"
    row), a quoted title with a comma and a newline, one track without genre_top and one of the
    "medium" subset (both with audio, both to be ignored). Returns ``root``.
    """
    if layout not in ("nested", "flat"):
        raise ValueError("layout must be 'nested' or 'flat'")
    audio = root / "fma_small"

    def mp3(tid: int) -> Path:
        return audio / f"{tid // 1000:03d}" / f"{tid:06d}.mp3" if layout == "nested" else audio / f"{tid:06d}.mp3"

    ids = fma_track_ids(len(genres) * per_genre + 2 + missing)
    rows = []
    for i, genre in enumerate(g for g in genres for _ in range(per_genre)):
        tid = ids[i]
        write_clip(mp3(tid), genre, seed=tid)
        rows.append([tid, f'Album {i}, "vol. 1"\nreissue', f"Artist {i}", "training", "small", genre, f"Song {i}"])
    k = len(genres) * per_genre
    write_clip(mp3(ids[k]), "none", seed=1)
    rows.append([ids[k], "", "Nobody", "training", "small", "", "No genre"])
    write_clip(mp3(ids[k + 1]), genres[0], seed=2)
    rows.append([ids[k + 1], "", "Bigger", "training", "medium", genres[0], "Medium only"])
    for j in range(missing):
        rows.append([ids[k + 2 + j], "", "Gone", "test", "small", genres[0], "Not downloaded"])
    meta = root / "fma_metadata" / "tracks.csv"
    meta.parent.mkdir(parents=True, exist_ok=True)
    audio.mkdir(parents=True, exist_ok=True)
    with meta.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["", "album", "artist", "set", "set", "track", "track"])
        w.writerow(["", "title", "name", "split", "subset", "genre_top", "title"])
        w.writerow(["track_id", "", "", "", "", "", ""])
        w.writerows(rows)
    return root


# ----------------------------------------------------------------------------------- Medley-solos-DB

MEDLEY_INSTRUMENTS = ((0, "clarinet"), (1, "distorted electric guitar"), (4, "piano"))


def make_medley_solos_db_tree(root: Path, *, instruments=MEDLEY_INSTRUMENTS, per_subset: int = 1,
                              missing: int = 0, audio_subdir: str = "audio") -> Path:
    """Medley-solos-DB: ``Medley-solos-DB_metadata.csv`` + ``{audio_subdir}/Medley-solos-DB_{subset}-{id}_{uuid4}.wav``.

    per_subset clips per instrument in each of training / validation / test (default 9); returns ``root``.
    """
    rows, n = [], 0
    audio = root / audio_subdir if audio_subdir else root
    for subset in ("training", "validation", "test"):
        for inst_id, inst in instruments:
            for _ in range(per_subset):
                n += 1
                u = str(uuid.uuid5(uuid.NAMESPACE_URL, f"medley-{n}"))
                write_clip(audio / f"Medley-solos-DB_{subset}-{inst_id}_{u}.wav", inst, seed=n)
                rows.append([subset, inst, inst_id, 100 + n, u])
    for i in range(missing):
        inst_id, inst = instruments[0]
        rows.append(["training", inst, inst_id, 999, str(uuid.uuid5(uuid.NAMESPACE_URL, f"gone-{i}"))])
    _csv(root / "Medley-solos-DB_metadata.csv", ["subset", "instrument", "instrument_id", "song_id", "uuid4"], rows)
    return root


# ----------------------------------------------------------------------------------- RAVDESS

def make_ravdess_tree(root: Path, *, actors=(1, 2, 7, 13, 19, 24), emotions=("01", "03", "05", "08"),
                      statements=(1,)) -> Path:
    """RAVDESS: ``Actor_{AA}/03-01-{EE}-01-{SS}-01-{AA}.wav`` (audio-only speech, default 24 clips); returns root."""
    n = 0
    for a in actors:
        for e in emotions:
            for s in statements:
                n += 1
                write_clip(root / f"Actor_{a:02d}" / f"03-01-{e}-01-{s:02d}-01-{a:02d}.wav", e, seed=n)
    return root


# ----------------------------------------------------------------------------------- AudioMNIST

def make_audiomnist_tree(root: Path, *, speakers=(12, 26, 28, 36, 43), digits=(0, 1, 2), reps=(0,)) -> Path:
    """AudioMNIST: ``data/{speaker:02d}/{digit}_{speaker:02d}_{rep}.wav`` + ``data/audioMNIST_meta.txt``.

    Default speakers are one per ARCH fold (15 clips); returns ``root``.
    """
    n = 0
    meta = {}
    for s in speakers:
        meta[f"{s:02d}"] = {"accent": "german", "age": "30", "gender": "male", "native speaker": "no",
                            "origin": "Europe, Germany, Berlin", "recordingdate": "17-06-22-11-04-28",
                            "recordingroom": "Kino"}
        for d in digits:
            for r in reps:
                n += 1
                write_clip(root / "data" / f"{s:02d}" / f"{d}_{s:02d}_{r}.wav", str(d), seed=n)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / "audioMNIST_meta.txt").write_text(json.dumps(meta, indent=4), encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------- SLURP

SLURP_INTENTS = (("alarm_set", "wake me up at five am"), ("weather_query", "is it raining"),
                 ("play_music", "play some jazz"))


def make_slurp_tree(root: Path, *, layout: str = "flat", recordings: int = 2, missing: int = 0) -> Path:
    """SLURP: ``{train,devel,test}.jsonl`` + ``slurp_real/*.flac``.

    layout: "flat" (jsonl files beside ``slurp_real/``) or "repo" (``dataset/slurp/*.jsonl`` and
    ``audio/slurp_real/``, plus a train_synthetic.jsonl / slurp_synth that must be ignored).
    One line per intent and split, each with ``recordings`` real recordings (default 18 items);
    ``missing`` extra recordings per split are listed without audio. Returns ``root``.
    """
    if layout not in ("flat", "repo"):
        raise ValueError("layout must be 'flat' or 'repo'")
    jdir = root if layout == "flat" else root / "dataset" / "slurp"
    adir = root / "slurp_real" if layout == "flat" else root / "audio" / "slurp_real"
    jdir.mkdir(parents=True, exist_ok=True)
    adir.mkdir(parents=True, exist_ok=True)
    n = 0
    for split in ("train", "devel", "test"):
        lines = []
        for i, (intent, sentence) in enumerate(SLURP_INTENTS):
            n += 1
            recs = []
            for r in range(recordings):
                name = f"audio-{1490000000 + 10 * n + r}{'-headset' if r % 2 else ''}.flac"
                write_clip(adir / name, intent, seed=10 * n + r)
                recs.append({"file": name, "wer": 0.0, "ent_wer": 0.0, "status": "correct"})
            if i == 0:
                recs += [{"file": f"audio-gone-{split}-{j}.flac", "wer": 0.0, "ent_wer": 0.0, "status": "correct"}
                         for j in range(missing)]
            scenario, action = intent.split("_", 1)
            lines.append(json.dumps({"slurp_id": n, "sentence": sentence, "sentence_annotation": sentence,
                                     "intent": intent, "action": action, "tokens": [], "scenario": scenario,
                                     "recordings": recs, "entities": []}))
        (jdir / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if layout == "repo":
        synth = root / "audio" / "slurp_synth" / "audio-synth-1.flac"
        write_clip(synth, "synthetic", seed=99)
        (jdir / "train_synthetic.jsonl").write_text(json.dumps(
            {"slurp_id": 999, "sentence": "x", "intent": "alarm_query",
             "recordings": [{"file": synth.name}]}) + "\n", encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------- EMOVO

EMOVO_SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")


def make_emovo_tree(root: Path, *, speakers=EMOVO_SPEAKERS, emotions=("dis", "gio", "pau"),
                    sentences=("b1",)) -> Path:
    """EMOVO: ``EMOVO/{speaker}/{emo}-{speaker}-{sentence}.wav`` (default 18 clips); returns ``root``."""
    n = 0
    for s in speakers:
        for e in emotions:
            for sent in sentences:
                n += 1
                write_clip(root / "EMOVO" / s / f"{e}-{s}-{sent}.wav", e, seed=n)
    return root


# ----------------------------------------------------------------------------------- MagnaTagATune

# (clip_id, split file or None, tags, mp3 folder): ARCH keeps top-50 tags only, so "jazz" and "tabla"
# (not among them) vanish, clip 40 (only non-top-50 tags) is dropped, clip 50 is in no split file.
MTT_CLIPS = (
    (2, "train", ("guitar", "rock", "loud"), "f"), (6, "train", ("guitar", "rock", "jazz"), "c"),
    (10, "train", ("piano", "classical", "quiet"), "0"), (11, "train", ("piano", "classical", "no vocals"), "4"),
    (14, "train", ("techno", "electronic", "beat"), "a"), (17, "train", ("techno", "electronic", "beats"), "9"),
    (21, "val", ("guitar", "rock"), "d"), (24, "val", ("piano", "classical"), "1"),
    (29, "test", ("guitar", "rock", "loud"), "e"), (31, "test", ("piano", "quiet", "tabla"), "2"),
    (33, "test", ("techno", "electronic"), "b"),
    (40, "train", ("jazz", "tabla"), "3"), (50, None, ("guitar",), "5"),
)
#: Tag columns of the fixture's annotations_final.csv: ARCH's top 50 (its order shuffled by
#: the real file's order, which is not ARCH's) plus two others.
MTT_EXTRA_TAGS = ("jazz", "tabla")


def make_mtt_tree(root: Path, *, missing: int = 0) -> Path:
    """MagnaTagATune: tab-separated, fully quoted ``annotations_final.csv`` (clip_id, tag columns,
    mp3_path), ``{0..f}/<artist>-<album>-NN-<track>-30-59.mp3``, and the MusiCNN split files
    ``{train,val,test}_gt_mtt.tsv`` (no header; clip_id, then the tag vector). ``missing`` train
    rows have no mp3. Returns ``root``."""
    from icl_audio.recipes.mtt import TOP50_TAGS

    tags = sorted(TOP50_TAGS + MTT_EXTRA_TAGS)  # the real file's column order is not ARCH's list
    root.mkdir(parents=True, exist_ok=True)
    rows, splits = [], {"train": [], "val": [], "test": []}
    clips = list(MTT_CLIPS) + [(900 + i, "train", ("guitar",), "7") for i in range(missing)]
    for clip_id, split, clip_tags, folder in clips:
        rel = f"{folder}/artist_{clip_id}-album-{clip_id % 100:02d}-track_{clip_id}-30-59.mp3"
        if clip_id < 900:
            write_clip(root / rel, clip_tags[0], seed=clip_id)
        rows.append([str(clip_id), *("1" if t in clip_tags else "0" for t in tags), rel])
        if split:
            splits[split].append([str(clip_id), str([int(t in clip_tags) for t in TOP50_TAGS])])
    with (root / "annotations_final.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL)
        w.writerow(["clip_id", *tags, "mp3_path"])
        w.writerows(rows)
    for split, lines in splits.items():
        with (root / f"{split}_gt_mtt.tsv").open("w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter="\t").writerows(lines)
    return root


# ----------------------------------------------------------------------------------- IRMAS

IRMAS_TRAIN = {"cel": 5, "gac": 5, "voi": 5}  # code -> training clips
# (part, file stem, instrument codes as the .txt lists them): multi-label test excerpts.
IRMAS_TEST = (
    (1, "01 - Song one-1", ("cel",)), (1, "01 - Song one-2", ("gac", "voi")),
    (2, "02 - Song two-1", ("voi",)), (2, "02 - Song two-2", ("cel", "gac")),
    (3, "03 - Song three-1", ("gac",)),
)


def make_irmas_tree(root: Path, *, parts=(1, 2, 3), unlabelled: int = 0) -> Path:
    """IRMAS: ``IRMAS-TrainingData/{code}/[{code}][{genre}]NNNN__N.wav`` and
    ``IRMAS-TestingData-Part{n}/Part{n}/{stem}.wav`` + ``{stem}.txt`` (one code per line, with the
    release's trailing tab). ``parts``: the testing parts written; ``unlabelled`` extra test wavs
    without a .txt. Returns ``root``."""
    n = 0
    for code, count in IRMAS_TRAIN.items():
        for i in range(count):
            n += 1
            write_clip(root / "IRMAS-TrainingData" / code / f"[{code}][pop_roc]{i + 1:04d}__{n}.wav", code, seed=n)
    for part, stem, codes in IRMAS_TEST:
        if part not in parts:
            continue
        folder = root / f"IRMAS-TestingData-Part{part}" / f"Part{part}"
        write_clip(folder / f"{stem}.wav", codes[0], seed=len(stem) + part, seconds=0.5)
        (folder / f"{stem}.txt").write_text("".join(f"{c}\t\n" for c in codes), encoding="utf-8")
    for i in range(unlabelled):
        write_clip(root / "IRMAS-TestingData-Part1" / "Part1" / f"no label {i}.wav", "cel", seed=500 + i)
    return root


# ----------------------------------------------------------------------------------- CREMA-D

CREMA_EMOTIONS = ("ANG", "HAP", "SAD")


def crema_d_actors() -> list[int]:
    """One actor of each of the recipe's five folds (the lowest-numbered one)."""
    from icl_audio.recipes.crema_d import ACTOR_FOLD

    return sorted(min(a for a, f in ACTOR_FOLD.items() if f == fold) for fold in sorted(set(ACTOR_FOLD.values())))


def make_crema_d_tree(root: Path, *, emotions=CREMA_EMOTIONS, sentences=("DFA",), lfs_pointers: bool = False) -> Path:
    """CREMA-D: ``AudioWAV/{actor}_{sentence}_{emotion}_{level}.wav`` (one actor per fold, default 15 clips),
    plus the repository's ``VideoDemographics.csv``. ``lfs_pointers``: write Git LFS pointer files instead of
    audio (a clone without ``git lfs pull``). Returns ``root``."""
    n = 0
    for actor in crema_d_actors():
        for e in emotions:
            for sent in sentences:
                n += 1
                path = root / "AudioWAV" / f"{actor}_{sent}_{e}_XX.wav"
                if lfs_pointers:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
                else:
                    write_clip(path, e, seed=n)
    _csv(root / "VideoDemographics.csv", ["ActorID", "Age", "Sex", "Race", "Ethnicity"],
         [[a, 30, "Female", "Caucasian", "Not Hispanic"] for a in crema_d_actors()])
    return root


# ----------------------------------------------------------------------------------- GTZAN

GTZAN_GENRES = ("blues", "disco", "hiphop")


def gtzan_excerpts(genre: str) -> dict[str, int]:
    """For ``genre``: one excerpt number of each fault-filtered split, and one the split leaves out ("none")."""
    from icl_audio.recipes.gtzan import FILTERED_SPLIT

    out: dict[str, int] = {}
    for n in range(100):
        out.setdefault(FILTERED_SPLIT.get(f"{genre}.{n:05d}", "none"), n)
    return out


def make_gtzan_tree(root: Path, *, layout: str = "au", genres=GTZAN_GENRES) -> Path:
    """GTZAN: ``genres/{genre}/{genre}.000NN.au`` (the original archive, with its .mf lists) or, with
    layout="wav", ``genres_original/{genre}/{genre}.000NN.wav``: per genre one excerpt of each filtered
    split plus one outside it (blues has all its numbers in the split). Returns ``root``."""
    folder, ext = ("genres", "au") if layout == "au" else ("genres_original", "wav")
    n = 0
    for genre in genres:
        for _, number in sorted(gtzan_excerpts(genre).items()):
            n += 1
            write_clip(root / folder / genre / f"{genre}.{number:05d}.{ext}", genre, seed=n)
    if layout == "au":
        (root / folder / "bextract_single.mf").write_text("blues/blues.00000.au\tblues\n", encoding="utf-8")
    return root


# ----------------------------------------------------------------------------------- TIMIT

TIMIT_SPEAKERS = (("TRAIN", "DR1", "FCJF0"), ("TRAIN", "DR2", "MARC0"), ("TRAIN", "DR7", "FBLV0"),
                  ("TEST", "DR1", "MDAB0"), ("TEST", "DR2", "FAEM0"), ("TEST", "DR7", "MDLF0"))


def make_timit_tree(root: Path, *, lower: bool = False, riff_copies: bool = False) -> Path:
    """TIMIT (LDC): ``TIMIT/{TRAIN,TEST}/DR{n}/{speaker}/{SA1,SI1}.WAV`` written as NIST SPHERE files, with
    the .PHN/.TXT/.WRD annotations beside them (ignored). ``lower``: lower-case names (some copies);
    ``riff_copies``: an ``SA1.WAV.wav`` RIFF copy beside each .WAV (some re-distributions). 12 clips."""
    import soundfile as sf

    n = 0
    for split, region, speaker in TIMIT_SPEAKERS:
        folder = root / "TIMIT" / split / region / speaker
        if lower:
            folder = root / "timit" / split.lower() / region.lower() / speaker.lower()
        folder.mkdir(parents=True, exist_ok=True)
        for sentence in ("SA1", "SI1"):
            n += 1
            name = sentence.lower() if lower else sentence
            sf.write(str(folder / f"{name}.{'wav' if lower else 'WAV'}"), clip(region, n), SR, format="NIST",
                     subtype="PCM_16")
            for ext in ("PHN", "TXT", "WRD"):
                (folder / f"{name}.{ext.lower() if lower else ext}").write_text("0 4800 h#\n", encoding="utf-8")
            if riff_copies:
                sf.write(str(folder / f"{name}.{'wav' if lower else 'WAV'}.wav"), clip(region, n), SR)
    return root


# ----------------------------------------------------------------------------------- ARCA23K-FSD

ARCA_ROWS = (("train", 64760, "Acoustic_guitar"), ("train", 16399, "Bark"), ("train", 16401, "Bark"),
             ("train", 37199, "Toilet_flush"), ("val", 175151, "Acoustic_guitar"), ("val", 253463, "Toilet_flush"),
             ("test", 37, "Bark"), ("test", 38, "Toilet_flush"), ("test", 39, "Acoustic_guitar"))


def make_arca23k_fsd_tree(root: Path, *, audio_root: Path | None = None, missing: int = 0) -> Path:
    """ARCA23K-FSD: ``ARCA23K-FSD.ground_truth/{train,val,test}.csv`` (fname,label,...) over FSD50K's audio
    ``FSD50K.dev_audio/{fname}.wav`` (train, val) and ``FSD50K.eval_audio/{fname}.wav`` (test), written in
    ``audio_root`` (default: beside the ground truth, in ``root``). 9 clips; ``missing`` extra train rows
    without audio. Returns ``root``."""
    audio_root = audio_root or root
    by_split: dict[str, list] = {"train": [], "val": [], "test": []}
    for split, fname, label in ARCA_ROWS:
        folder = "FSD50K.eval_audio" if split == "test" else "FSD50K.dev_audio"
        write_clip(audio_root / folder / f"{fname}.wav", label, seed=fname)
        by_split[split].append([fname, label, "/m/0"])
    by_split["train"] += [[990000 + i, "Bark", "/m/0"] for i in range(missing)]
    for split, rows in by_split.items():
        _csv(root / "ARCA23K-FSD.ground_truth" / f"{split}.csv", ["fname", "label", "mids"], rows)
    return root


# ----------------------------------------------------------------------------------- FluSense

# Per recording: its (label as annotated, seconds) intervals, as in the repository's TextGrids (tier "word",
# labels with stray spaces, "etc" for the rest).
FLUSENSE_RECORDINGS = {
    "-4LOcUpXMzc_30_000-40_000": (("etc", 0.3), ("cough", 0.5), ("speech", 0.6)),
    "05YBpmCnoOQ": (("sneeze", 0.4), ("etc", 0.2), (" cough", 0.5)),
    "1EiNSiO0UvU_0_000-10_000": (("speech", 0.6), ("throat-clearing", 0.4)),
    "2B_QV_5R4Zo": (("cough ", 0.5), ("vomit", 0.4), ("sneeze", 0.4)),
    "0AWF9zOT8YY": (("throat-clearing", 0.5), ("speech", 0.5), ("", 0.2)),
}


def _textgrid(intervals: list[tuple[float, float, str]]) -> str:
    end = intervals[-1][1]
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0 ", f"xmax = {end} ",
             "tiers? <exists> ", "size = 1 ", "item []: ", "    item [1]:", '        class = "IntervalTier" ',
             '        name = "word" ', "        xmin = 0 ", f"        xmax = {end} ",
             f"        intervals: size = {len(intervals)} "]
    for i, (a, b, text) in enumerate(intervals, start=1):
        lines += [f"        intervals [{i}]:", f"            xmin = {a} ", f"            xmax = {b} ",
                  f'            text = "{text}" ']
    return "\n".join(lines) + "\n"


def make_flusense_tree(root: Path, *, missing_audio: int = 0) -> Path:
    """FluSense: ``flusense_data/{recording}.TextGrid`` (Praat long text format) and the recordings
    ``FluSense audio/{recording}.wav``, each the concatenation of its intervals' tones. 5 recordings,
    10 usable segments (etc, vomit and empty intervals are not). ``missing_audio``: recordings whose
    TextGrid has no audio. Returns ``root``."""
    import soundfile as sf

    for n, (name, intervals) in enumerate(FLUSENSE_RECORDINGS.items()):
        t, spans, parts = 0.0, [], []
        for label, seconds in intervals:
            spans.append((round(t, 6), round(t + seconds, 6), label))
            parts.append(clip(label.strip() or "none", n, seconds))
            t += seconds
        (root / "flusense_data").mkdir(parents=True, exist_ok=True)
        (root / "flusense_data" / f"{name}.TextGrid").write_text(_textgrid(spans), encoding="utf-8")
        if n >= len(FLUSENSE_RECORDINGS) - missing_audio:
            continue
        (root / "FluSense audio").mkdir(parents=True, exist_ok=True)
        sf.write(str(root / "FluSense audio" / f"{name}.wav"), np.concatenate(parts), SR)
    return root


#: Registry name -> builder, so a test can build any dataset by recipe name.
BUILDERS = {
    "esc50": make_esc50_tree, "us8k": make_us8k_tree, "fsd50k": make_fsd50k_tree, "vivae": make_vivae_tree,
    "fma-small": make_fma_small_tree, "mtt": make_mtt_tree, "irmas": make_irmas_tree, "medley-solos-db": make_medley_solos_db_tree, "ravdess": make_ravdess_tree,
    "audiomnist": make_audiomnist_tree, "slurp": make_slurp_tree, "emovo": make_emovo_tree,
    "crema-d": make_crema_d_tree, "gtzan": make_gtzan_tree, "timit": make_timit_tree,
    "arca23k-fsd": make_arca23k_fsd_tree, "flusense": make_flusense_tree,
}
