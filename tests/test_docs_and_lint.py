"""The README's promises that can drift: its commands, its configuration table, and lint cleanliness."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from feedback_bridge.config import DEFAULTS, PREFIX

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", README)


def test_ci_runs_the_readme_test_command_verbatim():
    demo, tests = readme_commands()[:2]
    assert "feedback-bridge demo" in demo and "pytest" in tests
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def test_every_test_file_ci_names_exists():
    """CI runs some suites again on the lowest versions, by name: a renamed file would fail only there."""
    named = re.findall(r"tests/test_\w+\.py", (ROOT / ".ci" / "run").read_text())
    assert named, "CI names no test file"
    assert [name for name in named if not (ROOT / name).is_file()] == []


def test_every_config_key_is_in_the_readme_table():
    documented = set(re.findall(r"^\| `(FEEDBACK_[A-Z_]+)` \|", README, flags=re.M))
    assert documented == {PREFIX + key for key in DEFAULTS}


def test_the_code_is_ruff_clean():
    beside_python = Path(sys.executable).with_name("ruff")  # the [test] extra's ruff, in this environment
    ruff = str(beside_python) if beside_python.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: it is part of the [test] extra")
    folders = [name for name in ("backend", "tests", "bench") if (ROOT / name).is_dir()]
    result = subprocess.run([ruff, "check", *folders], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
