"""examples/ holds what a user would copy, studies/ the scripts behind the docs' numbers
(issue 27): each folder's README lists every script in it, every script the docs and
the records name exists, and (slow) the user examples run to the end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = re.compile(r"\b(examples|studies)/([A-Za-z0-9_]+\.(?:py|sh))\b")


def scripts(folder: str) -> set[str]:
    return {p.name for p in (ROOT / folder).iterdir() if p.suffix in (".py", ".sh")}


@pytest.mark.parametrize("folder", ["examples", "studies"])
def test_the_readme_lists_every_script_of_its_folder(folder):
    readme = (ROOT / folder / "README.md").read_text()
    listed = set(re.findall(r"^\| \[?`([A-Za-z0-9_]+\.(?:py|sh))`", readme, re.M))
    assert listed == scripts(folder)


def test_every_script_the_docs_and_records_name_exists():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "docs" / "results").glob("*.jsonl")),
             ROOT / "examples" / "README.md", ROOT / "studies" / "README.md",
             *sorted((ROOT / "labelclean").rglob("*.py")), ROOT / "pyproject.toml"]
    named = {(page.relative_to(ROOT).as_posix(), f"{folder}/{name}")
             for page in pages for folder, name in SCRIPT.findall(page.read_text())}
    missing = sorted(f"{page}: {path}" for page, path in named if not (ROOT / path).is_file())
    assert not missing
    assert any(path.startswith("studies/") for _, path in named)


def test_the_records_commands_name_the_studies():
    for path in sorted((ROOT / "docs" / "results").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            command = json.loads(line)["command"]
            assert "examples/" not in command, (path.name, command)


def _run(*args: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_the_pipeline_example_runs(tmp_path):
    out = _run(sys.executable, str(ROOT / "examples" / "pipeline.py"), "--out",
               str(tmp_path / "run"), cwd=tmp_path)
    assert "verdict: flagged" in out and "test accuracy trained on the" in out
    assert (tmp_path / "run" / "cleaned.csv").is_file()


@pytest.mark.slow
def test_the_bench_example_runs(tmp_path):
    out = _run(sys.executable, str(ROOT / "examples" / "bench.py"), "--seeds", "0",
               cwd=tmp_path)
    assert "verdicts: seed 0:" in out


@pytest.mark.slow
def test_the_cli_example_runs(tmp_path):
    out = _run("bash", str(ROOT / "examples" / "cli.sh"), str(tmp_path / "work"),
               cwd=tmp_path)
    assert "rank,path," in out and "samples in" in out  # the flags' head; apply's summary
    assert (tmp_path / "work" / "final" / "apply_log.csv").is_file()
    assert any((tmp_path / "work" / "final" / "cleaned").iterdir())
