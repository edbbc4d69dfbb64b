"""Tests for icl_audio.download: resumable fetch, checksums and safe extraction, against a loopback server."""

from __future__ import annotations

import hashlib
import io
import socket
import stat
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fixtures_datasets import make_esc50_tree, make_irmas_tree
from icl_audio.download import (
    SOURCES, DownloadError, download_dataset, extract_archive, fetch, parse_checksum, verify_checksum,
)
from icl_audio.errors import ICLAudioError
from icl_audio.recipes import get_recipe


# ------------------------------------------------------------------------------ loopback server


class _Server:
    """A tiny HTTP server on 127.0.0.1 that honours ``Range: bytes=N-`` and counts what it sends."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.bytes_sent = 0
        self.requests: list[dict] = []
        self.ignore_range = False
        self.truncate_after: int | None = None  # send only this many body bytes, then hang up
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                outer.requests.append({"path": self.path, "range": self.headers.get("Range")})
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and not outer.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if outer.truncate_after is not None:
                    body = body[: outer.truncate_after]
                self.wfile.write(body)
                self.wfile.flush()
                outer.bytes_sent += len(body)
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # A proxy configured in the environment must not intercept loopback requests.
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    s = _Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()
    s.thread.join(timeout=5)


def _zip_dir(src: Path, top: str) -> bytes:
    """Zip every file under ``src`` as ``top/<relative path>``, the way GitHub archives look."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file():
                zf.write(p, f"{top}/{p.relative_to(src).as_posix()}")
    return buf.getvalue()


@pytest.fixture(scope="module")
def esc50_zip(tmp_path_factory) -> bytes:
    src = make_esc50_tree(tmp_path_factory.mktemp("esc50-src"), folds=2, per_fold=1)
    return _zip_dir(src, "ESC-50-master")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".extract-") or p.name.endswith(".part"))


# ------------------------------------------------------------------------------ download


def test_full_download_with_checksum_extracts_and_recipe_reads_it(server, esc50_zip, tmp_path):
    server.files["/esc.zip"] = esc50_zip
    seen = []
    root = download_dataset("ESC-50", tmp_path / "dl", url_override=server.url("/esc.zip"),
                            checksum=f"sha256:{_sha(esc50_zip)}", progress=lambda d, t: seen.append((d, t)))
    assert root == tmp_path / "dl" / "ESC-50-master"
    assert len(get_recipe("esc50").prepare(root)) == 6
    assert seen[-1] == (len(esc50_zip), len(esc50_zip))
    record = (tmp_path / "dl" / "ESC-50-master.zip.sha256").read_text()
    assert record == f"{_sha(esc50_zip)}  ESC-50-master.zip\n"
    assert _leftovers(tmp_path / "dl") == []
    assert server.requests[0]["range"] is None
    # Done once: a second call neither downloads nor extracts again.
    n = len(server.requests)
    assert download_dataset("esc50", tmp_path / "dl", url_override=server.url("/esc.zip")) == root
    assert len(server.requests) == n


def test_download_without_checksum_records_sha256(server, esc50_zip, tmp_path):
    server.files["/esc.zip"] = esc50_zip
    download_dataset("esc50", tmp_path, url_override=server.url("/esc.zip"), keep_archive=False)
    assert not (tmp_path / "ESC-50-master.zip").exists()
    assert (tmp_path / "ESC-50-master.zip.sha256").read_text().split()[0] == _sha(esc50_zip)


def test_checksum_mismatch_is_rejected_and_nothing_extracted(server, esc50_zip, tmp_path):
    server.files["/esc.zip"] = esc50_zip
    with pytest.raises(DownloadError, match="checksum mismatch for ESC-50-master.zip"):
        download_dataset("esc50", tmp_path, url_override=server.url("/esc.zip"), checksum="0" * 64)
    assert not (tmp_path / "ESC-50-master").exists()
    assert not (tmp_path / "ESC-50-master.zip").exists()  # deleted: the next call fetches afresh
    assert _leftovers(tmp_path) == []


def test_resume_from_partial_file_sends_only_the_rest(server, esc50_zip, tmp_path):
    server.files["/esc.zip"] = esc50_zip
    half = len(esc50_zip) // 2
    (tmp_path / "ESC-50-master.zip.part").write_bytes(esc50_zip[:half])
    root = download_dataset("esc50", tmp_path, url_override=server.url("/esc.zip"),
                            checksum=_sha(esc50_zip))
    assert server.requests[0]["range"] == f"bytes={half}-"
    assert server.bytes_sent == len(esc50_zip) - half
    assert (root / "meta" / "esc50.csv").is_file()


def test_interrupted_download_keeps_part_and_resumes(server, esc50_zip, tmp_path):
    server.files["/esc.zip"] = esc50_zip
    server.truncate_after = 1000
    with pytest.raises(DownloadError, match="interrupted after 1000 .*resume"):
        download_dataset("esc50", tmp_path, url_override=server.url("/esc.zip"))
    assert (tmp_path / "ESC-50-master.zip.part").stat().st_size == 1000
    assert not (tmp_path / "ESC-50-master.zip").exists()
    server.truncate_after = None
    download_dataset("esc50", tmp_path, url_override=server.url("/esc.zip"), checksum=_sha(esc50_zip))
    assert server.bytes_sent == len(esc50_zip)  # 1000 + the rest: nothing sent twice
    assert server.requests[-1]["range"] == "bytes=1000-"


def test_server_ignoring_range_restarts_from_zero(server, esc50_zip, tmp_path):
    server.files["/esc.zip"] = esc50_zip
    server.ignore_range = True
    (tmp_path / "ESC-50-master.zip.part").write_bytes(b"stale bytes from another file")
    download_dataset("esc50", tmp_path, url_override=server.url("/esc.zip"), checksum=_sha(esc50_zip))
    assert (tmp_path / "ESC-50-master").is_dir()


def test_oversized_part_gets_one_fresh_try(server, tmp_path):
    server.files["/f.bin"] = b"x" * 100
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(b"y" * 500)  # longer than the file: 416, then start over
    fetch(server.url("/f.bin"), dest)
    assert dest.read_bytes() == b"x" * 100
    assert len(server.requests) == 2


def test_network_failure_is_one_clear_error(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(DownloadError, match=r"cannot download http://127\.0\.0\.1"):
        download_dataset("esc50", tmp_path, url_override=f"http://127.0.0.1:{port}/x.zip", timeout=5)


def test_http_error_status(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_dataset("esc50", tmp_path, url_override=server.url("/missing.zip"))


def test_only_http_urls(tmp_path):
    with pytest.raises(DownloadError, match="only http and https"):
        download_dataset("esc50", tmp_path, url_override=f"file://{tmp_path}/x.zip")


def test_unknown_and_manual_datasets(tmp_path):
    with pytest.raises(DownloadError, match="unknown dataset 'nope'.*esc50"):
        download_dataset("nope", tmp_path)
    with pytest.raises(DownloadError, match="'slurp' has no stable public archive"):
        download_dataset("slurp", tmp_path)
    with pytest.raises(DownloadError, match="several archives"):
        download_dataset("fma-small", tmp_path, url_override="http://127.0.0.1:9/x.zip")
    with pytest.raises(DownloadError, match=r"^MagnaTagATune has no checksummed archive: .*mirg.city.ac.uk.*"
                                            r"musicnn-training.*--root$") as e:
        download_dataset("MagnaTagATune", tmp_path)
    assert "\n" not in str(e.value)
    assert issubclass(DownloadError, ICLAudioError)


def test_sources_are_well_formed():
    assert {"esc50", "audiomnist"} <= set(SOURCES)
    assert SOURCES["esc50"].archives[0].url.startswith("https://github.com/karolpiczak/ESC-50/")
    assert SOURCES["audiomnist"].archives[0].url.startswith("https://github.com/soerenab/AudioMNIST/")
    for src in SOURCES.values():
        get_recipe(src.name)  # every source feeds a registered recipe
        for arc in src.archives:
            if arc.checksum:
                parse_checksum(arc.checksum)


def test_parse_checksum():
    assert parse_checksum("SHA256:" + "A" * 64) == ("sha256", "a" * 64)
    assert parse_checksum("b" * 40) == ("sha1", "b" * 40)
    with pytest.raises(DownloadError, match="invalid checksum"):
        parse_checksum("md5:abc")


def test_verify_checksum_md5(tmp_path):
    # Zenodo publishes MD5s (IRMAS): accepted prefixed or bare (32 hex digits); a mismatch deletes the file.
    p = tmp_path / "a.bin"
    p.write_bytes(b"hello")
    md5 = hashlib.md5(b"hello").hexdigest()
    assert parse_checksum(md5) == ("md5", md5)
    assert verify_checksum(p, "md5:" + md5) == _sha(b"hello")
    with pytest.raises(DownloadError, match="expected md5"):
        verify_checksum(p, "md5:" + "0" * 32)
    assert not p.exists()


def test_irmas_four_archives_with_md5_into_the_recipe_layout(server, tmp_path):
    # The Zenodo zips: IRMAS-TrainingData/<code>/..., IRMAS-TestingData-PartN/PartN/... at their top.
    src = make_irmas_tree(tmp_path / "src")
    urls, sums = {}, {}
    for top in ("IRMAS-TrainingData", "IRMAS-TestingData-Part1", "IRMAS-TestingData-Part2", "IRMAS-TestingData-Part3"):
        data = _zip_dir(src / top, top)
        server.files[f"/{top}.zip"] = data
        urls[f"{top}.zip"] = server.url(f"/{top}.zip")
        sums[f"{top}.zip"] = "md5:" + hashlib.md5(data).hexdigest()
    assert {a.filename for a in SOURCES["irmas"].archives} == set(urls)
    assert all(a.checksum.startswith("md5:") and "zenodo.org" in a.url for a in SOURCES["irmas"].archives)
    root = download_dataset("irmas", tmp_path / "dl", url_override=urls, checksum=sums)
    assert root == tmp_path / "dl"

    def rel(base):
        return sorted((it.path.relative_to(base).as_posix(), it.labels, it.split) for it in get_recipe("irmas").prepare(base))

    assert rel(root) == rel(src) and sum(x[2] == "test" for x in rel(root)) == 5


def test_verify_checksum_sha1(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"hello")
    assert verify_checksum(p, "sha1:" + hashlib.sha1(b"hello").hexdigest()) == _sha(b"hello")


# ------------------------------------------------------------------------------ safe extraction


def _zip(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for info, data in members:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("evil", ["../evil.txt", "ESC-50-master/../../evil.txt", "ABSOLUTE", "SYMLINK",
                                  "..\\evil.txt"])
def test_zip_slip_is_rejected_and_nothing_written(server, tmp_path, evil):
    outside = tmp_path / "outside-evil.txt"
    if evil == "ABSOLUTE":
        member = (str(outside), b"pwned")
    elif evil == "SYMLINK":
        member = (_symlink_info("ESC-50-master/link"), str(tmp_path).encode())
    else:
        member = (evil, b"pwned")
    # A harmless member first: it must not be left behind either.
    server.files["/evil.zip"] = _zip([("ESC-50-master/meta/esc50.csv", b"filename\n"), member])
    dl = tmp_path / "dl"
    with pytest.raises(DownloadError, match="unsafe archive ESC-50-master.zip"):
        download_dataset("esc50", dl, url_override=server.url("/evil.zip"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dl"]
    assert sorted(p.name for p in dl.iterdir()) == ["ESC-50-master.zip", "ESC-50-master.zip.sha256"]
    assert not outside.exists()


def _tar(members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for m in members:
            payload = (data or {}).get(m.name)
            if payload is not None:
                m.size = len(payload)
                tf.addfile(m, io.BytesIO(payload))
            else:
                tf.addfile(m)
    return buf.getvalue()


def _ti(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname = kind, linkname
    return m


@pytest.mark.parametrize("bad", [
    _ti("data/link", tarfile.SYMTYPE, "/etc/passwd"),
    _ti("data/hard", tarfile.LNKTYPE, "data/ok.txt"),
    _ti("data/dev", tarfile.CHRTYPE),
    _ti("data/fifo", tarfile.FIFOTYPE),
    _ti("../escape.txt"),
    _ti("/abs.txt"),
], ids=["symlink", "hardlink", "device", "fifo", "dotdot", "absolute"])
def test_unsafe_tar_is_rejected(tmp_path, bad):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([_ti("data/ok.txt"), bad], {"data/ok.txt": b"fine", bad.name: b"x"}))
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="unsafe archive a.tar.gz"):
        extract_archive(archive, dest)
    assert list(dest.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar.gz", "dest"]


def test_good_tar_and_existing_entry_clash(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar([_ti("data", tarfile.DIRTYPE), _ti("data/sub/ok.txt")], {"data/sub/ok.txt": b"fine"}))
    dest = tmp_path / "dest"
    assert extract_archive(archive, dest) == [dest / "data"]
    assert (dest / "data" / "sub" / "ok.txt").read_bytes() == b"fine"
    # Extracting again would overwrite: refused, the existing tree untouched, no temp folder left.
    with pytest.raises(DownloadError, match="already exists"):
        extract_archive(archive, dest)
    assert (dest / "data" / "sub" / "ok.txt").read_bytes() == b"fine"
    assert sorted(p.name for p in dest.iterdir()) == ["data"]


def test_not_an_archive(tmp_path):
    p = tmp_path / "x.zip"
    p.write_bytes(b"plain text")
    with pytest.raises(DownloadError, match="not a zip or tar"):
        extract_archive(p, tmp_path / "out")


def test_cli_download_then_build_then_info(cli, server, esc50_zip, tmp_path):
    # The user's path end to end (the CLI in this process; the archive from the loopback server): download
    # an archive, build a named support set from it, inspect it.
    import json

    server.files["/esc.zip"] = esc50_zip
    env = {"NO_PROXY": "127.0.0.1"}
    out = cli("support", "download", "esc50", "--to", str(tmp_path / "dl"), "--url", server.url("/esc.zip"),
              "--checksum", f"sha256:{_sha(esc50_zip)}", "--quiet", env=env)
    assert out.returncode == 0, out.stderr
    root = tmp_path / "dl" / "ESC-50-master"
    assert f"--root {root}" in out.stdout
    bad = cli("support", "download", "esc50", "--to", str(tmp_path / "dl2"), "--url", server.url("/esc.zip"),
              "--checksum", "sha256:" + "0" * 64, "--quiet", env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    built = cli("support", "build", "esc-dl", "--dataset", "esc50", "--root", str(root), "--folds", "1",
                "--model", "debug", "--codec", "debug", "--quiet", env=env)
    assert built.returncode == 0, built.stderr
    info = json.loads(cli("support", "info", "esc-dl", "--json", env=env).stdout)
    assert info["clips"] == 3 and info["dataset"] == "esc50"
