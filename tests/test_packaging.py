"""Packaging: every sub-package ships, and the prompt templates are installed with the package."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_subpackage_is_listed():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "icl_audio").rglob("__init__.py")
    }
    assert on_disk <= listed, f"missing from pyproject.toml: {sorted(on_disk - listed)}"
    assert "icl_audio.prompts" in listed


def test_templates_are_packaged():
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"]["icl_audio.prompts"] == "prompts"
    assert "*.toml" in setuptools["package-data"]["icl_audio.prompts"]
    assert {"llasa.toml", "uniaudio.toml"} <= {p.name for p in (REPO / "prompts").glob("*.toml")}
