"""The documentation stays true to the code: the site builds with every warning an error, every setting is in
the configuration table, the import picture is drawn from today's imports, and the README stays short with links
that lead somewhere."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README = REPO / "README.md"
# A variable the settings read from the environment, in any of the ways settings.py reads one.
ENV_READ = re.compile(r"""(?:environ\.get|environ\[|env_bool|env_list|getenv)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")


def mkdocs() -> str | None:
    found = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    return found


@pytest.mark.skipif(mkdocs() is None, reason="mkdocs is not installed (pip install -r docs/requirements.txt)")
def test_the_documentation_site_builds_with_warnings_as_errors(tmp_path):
    result = subprocess.run(
        [mkdocs(), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "operations" / "configuration" / "index.html").is_file()


def settings_variables() -> set[str]:
    return set(ENV_READ.findall((REPO / "mnistsite" / "settings.py").read_text()))


def test_the_reader_finds_the_settings_variables():
    found = settings_variables()
    assert {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "PROMOTION_ALPHA",
            "SHADOW_WORKER", "RETRAIN_POLICY_RUN_OPTIONS"} <= found
    assert len(found) > 60


def test_every_setting_is_in_the_configuration_table():
    table = (DOCS / "operations" / "configuration.md").read_text()
    documented = set(re.findall(r"^\|[^|]*?`([A-Z][A-Z0-9_]+)`", table, flags=re.MULTILINE))
    documented |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", " ".join(
        line.split("|")[1] for line in table.splitlines() if line.startswith("|") and line.count("|") > 2)))
    missing = sorted(settings_variables() - documented)
    assert not missing, f"add to docs/operations/configuration.md: {', '.join(missing)}"


def test_the_import_picture_matches_the_imports():
    result = subprocess.run([sys.executable, "docs/tools/import_graph.py", "--check"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_is_short_and_its_quick_start_is_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    quick_start = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick_start.strip().splitlines()]
    assert commands == ["make run", "make test"]


def test_every_relative_link_and_picture_in_the_readme_exists():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [target.split("#")[0] for target in targets if not re.match(r"[a-z]+:", target)]
    assert local, "the README links into docs/"
    missing = [target for target in local if target and not (REPO / target).exists()]
    assert not missing, missing


def test_the_screenshots_are_there_and_small():
    pictures = sorted((DOCS / "images").glob("*.png"))
    names = {picture.stem for picture in pictures}
    for page in ("draw", "dashboard", "stats", "review", "admin"):
        assert {f"{page}-desktop", f"{page}-phone"} <= names, f"make screenshots: {page} is missing"
    too_big = [picture.name for picture in pictures if picture.stat().st_size > 150 * 1024]
    assert not too_big, too_big
