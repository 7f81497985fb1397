"""On a machine without Chromium the browser tests fail with the command to run; they never pass
by skipping (the Makefile's `chromium` target installs it first where it can)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_browser_tests_fail_without_chromium(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "from tests.dashboard.test_browser import chromium  # noqa: F401\n\n"
        "def test_needs_the_browser(chromium):\n    pass\n"
    )
    env = dict(os.environ, DATAMAP_CHROMIUM=str(tmp_path / "no-chromium"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(probe)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode != 0, out.stdout[-2000:]
    assert "skipped" not in out.stdout.splitlines()[-1], out.stdout[-2000:]
    assert "sudo apt-get install -y chromium" in out.stdout, out.stdout[-2000:]


def test_make_test_installs_or_demands_chromium():
    makefile = (ROOT / "Makefile").read_text()
    test_rule = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert "chromium" in test_rule.split(":", 1)[1].split()
    assert "sudo apt-get install -y --no-install-recommends $(CHROMIUM_PKGS)" in makefile
