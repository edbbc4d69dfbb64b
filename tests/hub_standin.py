"""A stand-in for the Hugging Face hub on 127.0.0.1: the endpoints huggingface_hub's snapshot_download
calls (read in huggingface_hub 2.4.0: hf_api.py repo_info / list_repo_tree, file_download.py
get_hf_file_metadata / http_get), answering as the hub does for files, gated repositories and
unknown ones. Every request is recorded. Used through ``HF_ENDPOINT`` (patched into
huggingface_hub's constants, which read it at import)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False
    token: str | None = None  # the token that opens a gated repo

    @classmethod
    def from_folder(cls, folder: Path, **kwargs) -> "Repo":
        return cls({p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}, **kwargs)


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None


@dataclass
class StandinHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def paths(self, method: str | None = None) -> list[str]:
        return [r.path for r in self.requests if method is None or r.method == method]


_API = re.compile(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def _handler(hub: StandinHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str, head: bool):
            self._send(status, json.dumps({"error": message}).encode(),
                       {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}, head)

        def _route(self, head: bool):
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(Request(self.command, path, self.headers.get("Authorization")))
            api, resolve = _API.match(path), _RESOLVE.match(path)
            repo_id = (api or resolve).group(1) if (api or resolve) else None
            repo = hub.repos.get(repo_id) if repo_id else None
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found", head)
            if repo.gated and self.headers.get("Authorization") != f"Bearer {repo.token}":
                # As the hub answers an anonymous request for a gated model.
                return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access "
                                   "to it and be authenticated to access it. Please log in.", head)
            if api and api.group(2) == "revision":
                body = {"id": repo_id, "sha": repo.commit, "private": False, "gated": "manual" if repo.gated else False,
                        "siblings": [{"rfilename": name} for name in repo.files]}
                return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
            if api:
                body = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for name, data in repo.files.items()]
                return self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
            name = resolve.group(3)
            if name not in repo.files:
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}, head)
            data = repo.files[name]
            self._send(200, data, {"X-Repo-Commit": repo.commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                                   "Content-Type": "application/octet-stream"}, head)

        def do_GET(self):
            self._route(head=False)

        def do_HEAD(self):
            self._route(head=True)

    return Handler


class serve:
    """``with serve(hub) as hub:`` runs the stand-in on a free port of 127.0.0.1 (``hub.url``)."""

    def __init__(self, hub: StandinHub):
        self.hub = hub

    def __enter__(self) -> StandinHub:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.hub))
        self.hub.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self.hub

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        return False


def point_hub_at(monkeypatch, url: str, cache: Path) -> None:
    """huggingface_hub (already imported) talks to ``url``, online, with its cache in ``cache``."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(cache / "no-token"))
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache / "no-token"))
