"""The README as a new user reads it: two Quickstart commands, the second being what CI runs; links
that resolve; the download command that exists; short enough to read in one sitting."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_is_two_commands_and_ci_runs_the_second():
    install_and_run, install_and_test = _quickstart_commands()
    assert install_and_run.startswith("pip install -c constraints.txt torch==2.13.0 . && icl-audio classify ")
    assert "--model debug --codec debug" in install_and_run  # offline on a fresh machine
    assert install_and_test == 'pip install -c constraints.txt torch==2.13.0 ".[test]" && python -m pytest -q'
    assert install_and_test in (REPO / ".ci" / "run").read_text()


def test_readme_is_short_and_its_links_resolve():
    assert len(README.splitlines()) <= 150
    links = re.findall(r"\]\(((?:docs|examples)/[^)#]+)", README)
    assert {"docs/usage.md", "docs/models.md", "docs/memory.md", "docs/scoring.md"} <= set(links)
    assert all((REPO / link).is_file() for link in links), [link for link in links if not (REPO / link).is_file()]
    for page in (REPO / "docs").glob("*.md"):  # links between the pages too
        for link in re.findall(r"\]\(([a-z-]+\.md)", page.read_text()):
            assert (REPO / "docs" / link).is_file(), f"{page.name} links to a missing {link}"


def test_no_removed_download_command_anywhere():
    # huggingface_hub 1.x removed its old command line; the command is `hf download ID`.
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    if not tracked:  # not a git checkout (an sdist): read the package and the docs
        tracked = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.suffix in (".py", ".md", ".toml")]
    told_to_run = re.compile("huggingface" + r"-cli\b")  # spelled in two parts so this file does not name it
    offenders = [name for name in tracked
                 if name.endswith((".py", ".md", ".toml", ".txt"))
                 and told_to_run.search((REPO / name).read_text(errors="ignore"))]
    assert offenders == []
    assert "hf download HKUSTAudio/Llasa-1B-Multilingual" in README
    assert "gated" in README and "hf auth login" in README
