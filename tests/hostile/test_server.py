"""`datamap serve` as a process: it answers only allowed Host headers, and a SIGKILL of it takes
the Streamlit server down too (nothing left serving on the port)."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard import serve_child, server

from .conftest import copy_sample_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, host: str, headers: dict[str, str] | None = None) -> int:
    con = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        con.putrequest("GET", path, skip_host=True)
        con.putheader("Host", host)
        for k, v in (headers or {}).items():
            con.putheader(k, v)
        con.endheaders()
        return con.getresponse().status
    finally:
        con.close()


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    run = copy_sample_run(tmp_path_factory.mktemp("serve") / "run")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis.cli", "serve", str(run), "--port", str(port), "--no-browser",
         "--allow-host", "proxy.internal"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _get(port, "/_stcore/health", f"127.0.0.1:{port}") == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("server did not start")
    yield proc, port
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("LOCALHOST", 200), ("[::1]:{port}", 200),
    ("proxy.internal", 200), ("evil.example", 403), ("evil.example:{port}", 403),
    ("127.0.0.1.evil.example", 403), ("", 403),
])
def test_only_allowed_host_headers_are_answered(served, host, status):
    _, port = served
    assert _get(port, "/_stcore/health", host.format(port=port)) == status
    assert _get(port, "/", host.format(port=port)) == status


def test_websocket_handshake_with_a_foreign_host_is_refused(served):
    _, port = served
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "http://evil.example"}
    assert _get(port, "/_stcore/stream", "evil.example", upgrade) == 403


def test_allowed_hosts_follow_the_bound_address():
    assert server.allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    wide = server.allowed_hosts("0.0.0.0", ["lab.example"])
    assert {"*", "localhost", "lab.example"} <= wide
    assert serve_child.host_allowed("10.1.2.3:8501", wide)
    assert not serve_child.host_allowed("attacker.example", wide)
    assert not serve_child.host_allowed("10.1.2.3.nip.io", wide)


def test_sigkill_of_serve_stops_the_streamlit_child(tmp_path):
    run = copy_sample_run(tmp_path / "run")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "analysis.cli", "serve", str(run), "--port", str(port), "--no-browser"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if _get(port, "/_stcore/health", "localhost") == 200:
                    break
            except OSError:
                time.sleep(0.2)
        children = _children(proc.pid)
        assert children, "the server runs in a child process"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(_gone(c) for c in children):
            time.sleep(0.2)
        assert all(_gone(c) for c in children)
        with pytest.raises(OSError):
            _get(port, "/_stcore/health", "localhost")
    finally:
        for c in _children(proc.pid):
            os.kill(c, signal.SIGKILL)
        proc.kill()
