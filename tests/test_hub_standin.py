"""The hub as it is, against a stand-in hub on 127.0.0.1 and hand-made cache folders: gated and unknown
repositories, downloads, partial caches (completed online, named offline), the `hf download` hint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub_standin import Repo, StandinHub, point_hub_at, serve
from icl_audio.errors import ModelError
from icl_audio.hub import resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def _tiny_repo(**kwargs) -> Repo:
    return Repo({"config.json": json.dumps({"model_type": "llama"}).encode(), "model.safetensors": b"\x01" * 256,
                 "tokenizer.json": b"{}"}, commit=COMMIT, **kwargs)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with serve(StandinHub()) as standin:
        point_hub_at(monkeypatch, standin.url, tmp_path / "hf-cache")
        yield standin


def test_download_then_cached(hub, tmp_path):
    hub.repos["org/tiny"] = _tiny_repo()
    src = resolve_model("org/tiny", kind="LLM")
    assert (src.model_id, src.revision, src.origin) == ("org/tiny", COMMIT, "hub")
    assert (src.folder / "model.safetensors").read_bytes() == b"\x01" * 256
    assert "/org/tiny/resolve/" + COMMIT + "/model.safetensors" in hub.paths("GET")
    # The metadata endpoints huggingface_hub calls were answered by the stand-in, not guessed.
    assert "/api/models/org/tiny/revision/main" in hub.paths("GET")
    before = len(hub.requests)
    assert resolve_model("org/tiny", kind="LLM").folder == src.folder
    assert len(hub.requests) == before  # complete in the cache: no request


def test_gated_repo_is_three_lines_at_most(hub, monkeypatch):
    hub.repos["org/gated"] = _tiny_repo(gated=True, token="hf_secret")
    with pytest.raises(ModelError) as exc:
        resolve_model("org/gated", kind="LLM", flag="--model")
    msg = _one_line(exc)
    assert "LLM org/gated is gated" in msg and f"accept its terms at {hub.url}/org/gated" in msg
    assert "`hf auth login`" in msg and "HF_TOKEN" in msg and "`hf download org/gated`" in msg
    assert "401" not in msg and "GatedRepoError" not in msg
    # Logged in (HF_TOKEN), the same repository downloads: the token is sent although the CLI sets
    # HF_HUB_DISABLE_IMPLICIT_TOKEN.
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    src = resolve_model("org/gated", kind="LLM")
    assert (src.folder / "config.json").is_file()
    assert {r.authorization for r in hub.requests if r.path.endswith("model.safetensors")} == {"Bearer hf_secret"}


def test_unknown_repo(hub):
    with pytest.raises(ModelError) as exc:
        resolve_model("org/nothing-here", kind="codec", flag="--codec")
    msg = _one_line(exc)
    assert "codec org/nothing-here was not found on the hub" in msg and "--codec /path/to/folder" in msg


def _partial_cache(cache: Path, repo: str = "org/tiny") -> Path:
    """A cache as `hf_hub_download(repo, "config.json")` leaves it: no file listing, no weights."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    (storage / "blobs").mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    blob = storage / "blobs" / "0a1b2c"
    blob.write_text(json.dumps({"model_type": "llama"}))
    (snapshot / "config.json").symlink_to(blob)
    return snapshot


def test_partial_cache_completed_online(hub, tmp_path):
    hub.repos["org/tiny"] = _tiny_repo()
    snapshot = _partial_cache(tmp_path / "hf-cache")
    src = resolve_model("org/tiny", kind="LLM")
    assert src.folder == snapshot and (snapshot / "model.safetensors").read_bytes() == b"\x01" * 256
    assert any(p.endswith("/model.safetensors") for p in hub.paths("GET"))


def test_partial_cache_offline_names_the_missing_weights(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    snapshot = _partial_cache(cache)
    with pytest.raises(ModelError) as exc:
        resolve_model("org/tiny", kind="LLM", flag="--model")
    msg = _one_line(exc)
    assert f"({snapshot}) without its weights (model.safetensors)" in msg and "offline" in msg
    assert "`hf download org/tiny`" in msg and "--model /path/to/folder" in msg
    # A sharded checkpoint names the shards it lacks.
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (snapshot / "model-00001-of-00002.safetensors").write_bytes(b"x")
    with pytest.raises(ModelError) as exc:
        resolve_model("org/tiny", kind="LLM")
    assert "without its weights (model-00002-of-00002.safetensors)" in _one_line(exc)


def test_gated_default_llm_offline_hint(tmp_path, monkeypatch):
    """Not cached and offline: the default LLM's hint says it is gated before `hf download`."""
    import huggingface_hub.constants as constants

    from icl_audio.models import load_lm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(ModelError) as exc:
        load_lm(device="cpu")
    msg = _one_line(exc)
    assert "HKUSTAudio/Llasa-1B-Multilingual is not in the Hugging Face cache" in msg
    assert "accept its terms at https://huggingface.co/HKUSTAudio/Llasa-1B-Multilingual" in msg
    assert "`hf download HKUSTAudio/Llasa-1B-Multilingual`" in msg


def test_debug_llm_downloaded_from_the_standin_loads(hub, debug_lm):
    """The LLM path end to end: the debug model's files served as a hub repository, downloaded, loaded."""
    import torch

    from icl_audio.families.llasa import ensure_debug_model
    from icl_audio.models import load_lm

    hub.repos["org/tiny-llasa"] = Repo.from_folder(ensure_debug_model(), commit=COMMIT)
    lm = load_lm("org/tiny-llasa", device="cpu", dtype="float32")
    assert (lm.model_id, lm.revision, lm.origin) == ("org/tiny-llasa", COMMIT, "hub")
    ids = torch.tensor([[1, 2, 3, lm.layout.first_speech_id]])
    with torch.inference_mode():
        assert torch.equal(lm.model(input_ids=ids).logits, debug_lm.model(input_ids=ids).logits)
