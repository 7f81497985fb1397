"""`dashboard.server`: the command line it builds and the checks it makes before starting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dashboard import server


def test_command_passes_every_safety_setting_as_a_flag() -> None:
    cmd = server.streamlit_command(port=8599, address="127.0.0.1", headless=True, python="py")
    assert cmd[:5] == ["py", "-m", "dashboard.serve_child", "run", str(server.APP)]
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert flags["--server.address"] == "127.0.0.1"
    assert flags["--server.port"] == "8599"
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert flags["--server.enableXsrfProtection"] == "true"
    assert int(flags["--server.maxUploadSize"]) > 0


def test_missing_run_dir_fails_before_starting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        server.serve(tmp_path / "nope", open_browser=False)
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="datamap analyze"):
        server.serve(tmp_path / "run", open_browser=False)


def test_cli_reports_a_missing_run_dir_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "analysis.cli", "serve", str(tmp_path / "nope"), "--no-browser"],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 2
    assert "datamap: error:" in out.stderr and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr


def test_server_module_does_not_import_streamlit() -> None:
    code = "import sys, dashboard.server; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == "False"
