"""Download dataset archives: resumable HTTP(S) fetch, checksum verification, safe zip/tar extraction."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import HTTPRedirectHandler, Request, build_opener

from icl_audio import __version__
from icl_audio.errors import ICLAudioError, SupportSetError
from icl_audio.fsutil import atomic_write

#: progress(bytes_done, bytes_total_or_None), called after every chunk written.
Progress = Callable[[int, "int | None"], None]

_CHUNK = 1 << 16
_USER_AGENT = f"icl-audio/{__version__} (dataset download)"


class DownloadError(ICLAudioError):
    """A dataset could not be downloaded, verified or extracted; the message says which and why."""


class _HTTPOnlyRedirects(HTTPRedirectHandler):
    # urllib would also follow a redirect to ftp://; a dataset download has no business there.
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise DownloadError(f"refusing redirect from {req.full_url} to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)




@dataclass(frozen=True)
class Archive:
    """One downloadable file of a dataset.

    checksum: "sha256:<hex>", "sha1:<hex>" or "md5:<hex>" when a trustworthy published value exists, else None
      (then the computed sha256 is only recorded, see :func:`download_dataset`).
    size: expected size in bytes when known, else None.
    """

    url: str
    filename: str
    checksum: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class Source:
    """Where a dataset's archives live and which extracted folder its recipe reads (``root``,
    relative to the download folder; "" for the download folder itself)."""

    name: str
    archives: tuple[Archive, ...]
    root: str
    note: str = ""


# GitHub "archive/…/master.zip" files are generated on request: there is no published checksum and
# the bytes change whenever the repository does, so none is pinned. What was downloaded is recorded
# in "<archive>.sha256"; pass that value as `checksum=` to pin later downloads to the same bytes.
_GITHUB_NOTE = ("GitHub builds this zip on request: no published checksum, and its bytes change with "
                "the repository. The sha256 of what you got is written beside it (<archive>.sha256); "
                "pass it as checksum= to pin later downloads.")

SOURCES: dict[str, Source] = {
    "esc50": Source(
        name="esc50",
        archives=(Archive("https://github.com/karolpiczak/ESC-50/archive/refs/heads/master.zip",
                          "ESC-50-master.zip"),),  # ~ 600 MiB
        root="ESC-50-master",
        note=_GITHUB_NOTE,
    ),
    "audiomnist": Source(
        name="audiomnist",
        archives=(Archive("https://github.com/soerenab/AudioMNIST/archive/refs/heads/master.zip",
                          "AudioMNIST-master.zip"),),  # ~ 1 GiB
        root="AudioMNIST-master",
        note=_GITHUB_NOTE,
    ),
    # SHA-1 values published in the FMA repository's README (mdeff/fma), the official mirror.
    "fma-small": Source(
        name="fma-small",
        archives=(
            Archive("https://os.unil.cloud.switch.ch/fma/fma_metadata.zip", "fma_metadata.zip",
                    checksum="sha1:f0df49ffe5f2a6008d7dc83c6915b31835dfe733"),  # ~ 342 MiB
            Archive("https://os.unil.cloud.switch.ch/fma/fma_small.zip", "fma_small.zip",
                    checksum="sha1:ade154f733639d52e35e32f5593efe5be76c6d70"),  # ~ 7.2 GiB
        ),
        root="",
        note="Checksums: the SHA-1 values published by the FMA authors.",
    ),
    # Zenodo record 1290750 (the IRMAS authors' deposit) publishes an MD5 per file; the values are
    # those of that record (also pinned by mirdata's IRMAS loader). Extracts to IRMAS-TrainingData/
    # and IRMAS-TestingData-Part{1,2,3}/Part{1,2,3}/, the layout the recipe reads.
    "irmas": Source(
        name="irmas",
        archives=tuple(
            Archive(f"https://zenodo.org/records/1290750/files/{name}?download=1", name, checksum=f"md5:{md5}")
            for name, md5 in (
                ("IRMAS-TrainingData.zip", "4fd9f5ed5a18d8e2687e6360b5f60afe"),  # ~ 3.0 GiB
                ("IRMAS-TestingData-Part1.zip", "5a2e65520dcedada565dff2050bb2a56"),
                ("IRMAS-TestingData-Part2.zip", "afb0c8ea92f34ee653693106be95c895"),
                ("IRMAS-TestingData-Part3.zip", "9b3fb2d0c89cdc98037121c25bd5b556"),
            )
        ),
        root="",
        note="Checksums: the MD5 values Zenodo publishes for record 1290750.",
    ),
    # The original archive of GTZAN (genres/{genre}/{genre}.000NN.au). Its SHA-256 is the one torchaudio's
    # GTZAN dataset pins for this URL (mirdata pins its MD5, 5b3d6dddb579ab49814ab86dba69e7c7). The host is
    # often offline: --url takes a mirror (e.g. the copy in the marsyas/gtzan hub repository, data/genres.tar.gz),
    # whose bytes are checked against the same value.
    "gtzan": Source(
        name="gtzan",
        archives=(Archive("http://opihi.cs.uvic.ca/sound/genres.tar.gz", "genres.tar.gz",
                          checksum="sha256:24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6"),),  # ~ 1.2 GiB
        root="genres",
        note=("Checksum: the SHA-256 torchaudio pins for the original archive. The host is often offline; "
              "--url https://huggingface.co/datasets/marsyas/gtzan/resolve/main/data/genres.tar.gz is a mirror "
              "(checked against the same value)."),
    ),
}

#: Where to get the datasets without a stable checksummed archive (one line each, shown by
#: `support download`). MagnaTagATune's mp3s come as three split zip parts from a university
#: server that publishes no checksum, and its split files live in another repository.
MANUAL: dict[str, str] = {
    "mtt": ("MagnaTagATune has no checksummed archive: get mp3.zip.001-003 (cat them into mp3.zip, unzip) and "
            "annotations_final.csv from https://mirg.city.ac.uk/datasets/magnatagatune/, and "
            "{train,val,test}_gt_mtt.tsv from https://github.com/jordipons/musicnn-training (data/index/mtt/), "
            "all in one folder; then pass it as --root"),
    "crema-d": ("CREMA-D keeps its audio in Git LFS (a GitHub zip holds only pointers): `git lfs clone "
                "https://github.com/CheyneyComputerScience/CREMA-D` (about 9 GB with the videos; AudioWAV/ is "
                "what the recipe reads), then pass the clone as --root"),
    "timit": ("TIMIT is licensed by the Linguistic Data Consortium (LDC93S1, https://catalog.ldc.upenn.edu/LDC93S1) "
              "and cannot be downloaded here; pass the folder holding its TRAIN/ and TEST/ as --root"),
    "arca23k-fsd": ("ARCA23K-FSD is two Zenodo records whose audio comes as split zips (FSD50K.dev_audio.z01-z05 "
                    "+ .zip, joined with `zip -s 0`): get ARCA23K-FSD.ground_truth.zip from "
                    "https://zenodo.org/records/5117901 and the FSD50K audio from https://zenodo.org/records/4060432, "
                    "then pass the ground truth's folder as --root and the FSD50K folder as --audio-root"),
    "flusense": ("FluSense's annotations are at https://github.com/Forsad/FluSense-data (flusense_data/*.TextGrid) and "
                 "its recordings in a Google Drive folder linked from that README, with no checksums: put the "
                 "recordings below the repository folder and pass it as --root"),
}


def download_dataset(
    name: str,
    to: Path | str,
    *,
    progress: Progress | None = None,
    url_override: str | Mapping[str, str] | None = None,
    checksum: str | Mapping[str, str] | None = None,
    keep_archive: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download, verify and extract dataset ``name`` into folder ``to``; return the recipe root.

    name: a recipe name with a stable public archive: see ``SOURCES`` ("esc50", "audiomnist",
      "fma-small", "irmas", "gtzan"); aliases such as "ESC-50" work. The datasets of ``MANUAL`` raise
      DownloadError saying in one line where to get them.
    to: download folder (created). Archives land here; interrupted downloads continue from
      ``<archive>.part`` (HTTP Range) on the next call. A finished dataset (marker file
      ``.icl-audio-<name>.done``; one per archive, ``.icl-audio-<archive>.extracted``) is not
      downloaded or extracted again.
    progress: ``progress(bytes_done, total_or_None)`` per chunk, e.g. to drive a progress bar.
    url_override: another URL (a mirror, a local server) -- a string for single-archive
      datasets, or {archive filename: url}. Only http and https.
    checksum: expected "sha256:<hex>" / "sha1:<hex>" / bare hex (length picks the algorithm), a
      string for single-archive datasets or {archive filename: checksum}; overrides the built-in
      value. Without any, the archive is accepted and its sha256 only recorded.
    keep_archive: keep the archive after extraction (False deletes it; the .sha256 stays).
    Every archive's sha256 is written to ``<archive>.sha256`` (sha256sum format).
    Extraction is safe: absolute paths, ``..`` components, links and device files are refused,
    and members are unpacked into a temporary folder inside ``to`` that is renamed into place
    only when everything succeeded. Raises DownloadError (one line) on network failure, checksum
    mismatch, unsafe archive or a name without a known archive.
    """
    src = _source(name)
    to = Path(to).expanduser()
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(f"cannot create download folder {to}: {e}") from None
    root = to / src.root if src.root else to
    marker = to / f".icl-audio-{src.name}.done"
    if marker.is_file() and root.is_dir():
        return root
    urls = _per_archive(src, url_override, "url_override")
    sums = _per_archive(src, checksum, "checksum")
    for arc in src.archives:
        archive = to / arc.filename
        # Per-archive marker: a multi-archive dataset interrupted after its first archive does not
        # re-extract (and clash with) what is already in place on the next call.
        extracted = to / f".icl-audio-{arc.filename}.extracted"
        if extracted.is_file():
            continue
        if not archive.is_file():
            fetch(urls.get(arc.filename, arc.url), archive, progress=progress, timeout=timeout,
                  expected_size=arc.size)
        verify_checksum(archive, sums.get(arc.filename, arc.checksum))
        extract_archive(archive, to)
        atomic_write(extracted, "ok\n")
        if not keep_archive:
            archive.unlink()
    if not root.is_dir():
        raise DownloadError(f"{src.name}: the archive did not contain the expected folder {root.name}/")
    atomic_write(marker, "ok\n")
    return root


def _source(name: str) -> Source:
    from icl_audio.recipes import get_recipe

    try:
        canonical = get_recipe(name).name
    except SupportSetError as e:
        raise DownloadError(str(e)) from None
    if canonical in MANUAL:
        raise DownloadError(MANUAL[canonical])
    if canonical not in SOURCES:
        raise DownloadError(
            f"dataset {canonical!r} has no stable public archive to download (downloadable: "
            f"{', '.join(SOURCES)}); get it from its homepage and point the recipe at the folder"
        )
    return SOURCES[canonical]


def _per_archive(src: Source, value: str | Mapping[str, str] | None, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        if len(src.archives) != 1:
            names = ", ".join(a.filename for a in src.archives)
            raise DownloadError(f"{src.name} has several archives ({names}): give {what} as {{filename: value}}")
        return {src.archives[0].filename: value}
    unknown = set(value) - {a.filename for a in src.archives}
    if unknown:
        raise DownloadError(f"{what} names unknown archive(s) of {src.name}: {', '.join(sorted(unknown))}")
    return dict(value)


# ------------------------------------------------------------------------------------ fetching


def fetch(url: str, dest: Path, *, progress: Progress | None = None, timeout: float = 60.0,
          expected_size: int | None = None) -> Path:
    """Download ``url`` to ``dest``, resuming from ``dest.part`` with an HTTP Range request.

    The data goes to ``<dest>.part`` and is renamed to ``dest`` only when complete, so ``dest``
    never holds a partial file. A server that ignores Range (answers 200) is read from the start;
    one that answers 416 (the .part is as long as or longer than the file) gets one fresh try.
    Raises DownloadError on network errors (the .part is kept for the next call to resume).
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise DownloadError(f"refusing to download {url}: only http and https URLs are supported")
    part = dest.with_name(dest.name + ".part")
    # At most two rounds: the second only after the server rejected the range of a stale .part.
    for _round in range(2):
        have = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            # A fresh opener per request: proxy settings are read from the environment now, not at import.
            resp = build_opener(_HTTPOnlyRedirects).open(Request(url, headers=headers), timeout=timeout)
        except HTTPError as e:
            if e.code == 416 and have:
                if expected_size is not None and have == expected_size:
                    part.replace(dest)
                    return dest
                part.unlink()  # cannot tell what the .part holds: start over
                continue
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
        except (URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"cannot download {url}: {reason}") from None
        with resp:
            total = _content_length(resp)
            if resp.status == 206 and have:
                start, full = _content_range(resp)
                if start != have:
                    raise DownloadError(f"download of {url}: server resumed at byte {start}, not {have}")
                total = full
                mode = "ab"
            elif resp.status == 200:
                have, mode = 0, "wb"  # Range ignored (or fresh start): rewrite from byte 0
            else:
                raise DownloadError(f"download of {url} failed: unexpected HTTP {resp.status}")
            if total is None and expected_size is not None:
                total = expected_size
            try:
                with part.open(mode) as f:
                    while True:
                        chunk = resp.read(_CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                        have += len(chunk)
                        if progress is not None:
                            progress(have, total)
            except (OSError, http.client.HTTPException, socket.timeout) as e:
                raise DownloadError(
                    f"download of {url} interrupted after {have} bytes ({e}); run again to resume from {part}"
                ) from None
        if total is not None and have < total:
            raise DownloadError(
                f"download of {url} interrupted after {have} of {total} bytes; run again to resume from {part}"
            )
        if (total is not None and have > total) or (expected_size is not None and have != expected_size):
            part.unlink()
            raise DownloadError(
                f"download of {url}: got {have} bytes, expected {expected_size or total}; deleted, run again"
            )
        part.replace(dest)
        return dest
    raise DownloadError(f"download of {url}: the server keeps rejecting the resume range; delete {part}")


def _content_length(resp) -> int | None:
    value = resp.headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


def _content_range(resp) -> tuple[int, int | None]:
    # "bytes 100-199/200" or "bytes 100-199/*"
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
    if not m:
        raise DownloadError("server answered 206 without a valid Content-Range header")
    return int(m.group(1)), (int(m.group(3)) if m.group(3) != "*" else None)


# ------------------------------------------------------------------------------------ checksums


_DIGEST_LENGTHS = {"sha256": 64, "sha1": 40, "md5": 32}


def parse_checksum(value: str) -> tuple[str, str]:
    """``"sha256:<hex>"``, ``"sha1:<hex>"``, ``"md5:<hex>"`` or bare hex (64 -> sha256, 40 -> sha1,
    32 -> md5) -> (algo, hex). MD5 is accepted because it is what Zenodo publishes."""
    value = value.strip().lower()
    algo, _, digest = value.rpartition(":")
    if not algo:
        algo = {n: a for a, n in _DIGEST_LENGTHS.items()}.get(len(digest), "")
    if algo not in _DIGEST_LENGTHS or not re.fullmatch(r"[0-9a-f]+", digest) or len(digest) != _DIGEST_LENGTHS[algo]:
        raise DownloadError(f"invalid checksum {value!r} (expected sha256:<64 hex>, sha1:<40 hex> or md5:<32 hex>)")
    return algo, digest


def verify_checksum(path: Path, expected: str | None) -> str:
    """Hash ``path``, write ``<path>.sha256``, and compare with ``expected`` (if any).

    Returns the sha256 hex digest. On a mismatch the file is deleted (a later call downloads it
    afresh) and DownloadError says both values.
    """
    want = parse_checksum(expected) if expected else None
    h256 = hashlib.sha256()
    other = hashlib.new(want[0]) if want and want[0] != "sha256" else None
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h256.update(chunk)
            if other is not None:
                other.update(chunk)
    digest = h256.hexdigest()
    atomic_write(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n")
    if want:
        got = digest if other is None else other.hexdigest()
        if got != want[1]:
            path.unlink()
            raise DownloadError(
                f"checksum mismatch for {path.name}: expected {want[0]} {want[1]}, got {got}; file deleted"
            )
    return digest


# ------------------------------------------------------------------------------------ extraction
#
# Not fsutil.build_once: that builds one whole folder, marker inside, into icl-audio's cache. A download
# folder is the user's; it holds the archives and resumable .part files beside the extracted data, and
# several archives merge into one dataset folder (FMA: metadata + audio; IRMAS: four parts). So each
# archive is extracted into a temporary folder inside it and its top-level entries renamed into place
# (never over anything that exists), with a marker per archive and one per dataset beside the data.


def _safe_name(name: str, archive: Path) -> PurePosixPath | None:
    """The member's relative path, or None for the archive root itself; refuses escaping names."""
    if "\x00" in name:
        raise DownloadError(f"unsafe archive {archive.name}: member name with a NUL byte")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise DownloadError(f"unsafe archive {archive.name}: absolute path {name!r}")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DownloadError(f"unsafe archive {archive.name}: '..' in member {name!r}")
    return PurePosixPath(*parts) if parts else None


def _plan_zip(zf: zipfile.ZipFile, archive: Path) -> list[tuple[PurePosixPath, zipfile.ZipInfo | None]]:
    plan, seen = [], set()
    for info in zf.infolist():
        rel = _safe_name(info.filename, archive)
        mode = info.external_attr >> 16
        if mode and info.create_system == 3:  # Unix-made zip: the high bits are st_mode
            if stat.S_ISLNK(mode):
                raise DownloadError(f"unsafe archive {archive.name}: symbolic link {info.filename!r}")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise DownloadError(f"unsafe archive {archive.name}: special file {info.filename!r}")
        if rel is None:
            continue
        if not info.is_dir():
            if rel in seen:
                raise DownloadError(f"unsafe archive {archive.name}: duplicate member {info.filename!r}")
            seen.add(rel)
        plan.append((rel, None if info.is_dir() else info))
    return plan


def _plan_tar(tf: tarfile.TarFile, archive: Path) -> list[tuple[PurePosixPath, tarfile.TarInfo | None]]:
    plan, seen = [], set()
    for m in tf.getmembers():
        rel = _safe_name(m.name, archive)
        if m.issym() or m.islnk():
            raise DownloadError(f"unsafe archive {archive.name}: link {m.name!r}")
        if not (m.isreg() or m.isdir()):
            raise DownloadError(f"unsafe archive {archive.name}: special file {m.name!r}")
        if rel is None:
            continue
        if m.isreg():
            if rel in seen:
                raise DownloadError(f"unsafe archive {archive.name}: duplicate member {m.name!r}")
            seen.add(rel)
        plan.append((rel, m if m.isreg() else None))
    return plan


def _write_members(plan, open_member, tmp: Path) -> None:
    base = tmp.resolve()
    for rel, member in plan:
        target = tmp.joinpath(*rel.parts)
        # Second line of defence: whatever the checks above missed cannot leave the temp folder.
        if not target.resolve().is_relative_to(base):
            raise DownloadError(f"unsafe archive member {rel}")
        if member is None:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        # "xb": never follow or overwrite anything already there; modes from the archive are
        # ignored on purpose (no setuid, no executable surprises).
        with open_member(member) as src, target.open("xb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


def extract_archive(archive: Path, to: Path) -> list[Path]:
    """Safely extract a zip or tar (any compression tarfile reads) into folder ``to``.

    Every member is checked before anything is written: absolute paths, ``..`` components,
    symbolic/hard links, device files, FIFOs and duplicates are refused (DownloadError). Members
    are written into a temporary folder inside ``to`` and its top-level entries renamed into
    ``to`` only once all succeeded; on any failure the temporary folder is removed, so nothing
    half-extracted remains. An entry that already exists in ``to`` is an error, never overwritten.
    Returns the top-level paths created.
    """
    archive, to = Path(archive), Path(to)
    to.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=to))
    try:
        try:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    _write_members(_plan_zip(zf, archive), zf.open, tmp)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive) as tf:
                    _write_members(_plan_tar(tf, archive), tf.extractfile, tmp)
            else:
                raise DownloadError(f"cannot extract {archive.name}: not a zip or tar archive")
        except DownloadError:
            raise
        except (OSError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, EOFError) as e:
            raise DownloadError(f"cannot extract {archive.name}: {e}") from None
        entries = sorted(tmp.iterdir())
        clash = [e.name for e in entries if (to / e.name).exists() or (to / e.name).is_symlink()]
        if clash:
            raise DownloadError(
                f"cannot extract {archive.name}: {to / clash[0]} already exists (remove it or use another folder)"
            )
        created = []
        for e in entries:
            os.replace(e, to / e.name)  # same file system (tmp is inside `to`): a rename
            created.append(to / e.name)
        return created
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
