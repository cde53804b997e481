"""Runs the lit + filecheck IR tests in tests/lit as part of the pytest suite."""

from __future__ import annotations

import pathlib
import shutil
import subprocess


def test_lit_suite():
    lit_dir = pathlib.Path(__file__).parent / "lit"
    lit = shutil.which("lit")
    assert lit, "lit is not installed (pip install -e '.[test]')"
    result = subprocess.run([lit, "-v", str(lit_dir)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed" not in result.stdout
