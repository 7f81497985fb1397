"""Start the dashboard: ``streamlit run dashboard/app.py`` in a child process.

Streamlit reads ``.streamlit/config.toml`` only from the directory it is started in, so every
setting that matters is passed as a command-line flag: bind address (localhost by default), port,
headless mode, no usage statistics, XSRF protection, upload limit. The run directory travels in
the ``DATAMAP_RUN_DIR`` environment variable. Ctrl-C or SIGTERM is forwarded to the child, which
is waited for, so the port is released when :func:`serve` returns. The child
(:mod:`dashboard.serve_child`) dies with this process even when it is killed with SIGKILL, and
answers only requests whose ``Host`` header names an allowed host (:func:`allowed_hosts`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import webbrowser
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from analysis import schema as S

__all__ = ["APP", "ENV_RUN_DIR", "allowed_hosts", "streamlit_command", "serve", "start_projection_job"]

ENV_RUN_DIR = "DATAMAP_RUN_DIR"
"""Environment variable through which the run directory reaches the app."""
APP = Path(__file__).resolve().parent / "app.py"
MAX_UPLOAD_MB = 200
STOP_TIMEOUT_S = 10.0


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def streamlit_command(
    *, port: int, address: str, headless: bool, python: str | None = None
) -> list[str]:
    """The ``python -m dashboard.serve_child run`` command line (``streamlit run`` with the
    child's safeguards) with every setting as a flag."""
    return [
        python or sys.executable, "-m", "dashboard.serve_child", "run", str(APP),
        "--server.address", address,
        "--server.port", str(port),
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false",
        "--server.enableXsrfProtection", "true",
        "--server.enableCORS", "true",
        "--server.maxUploadSize", str(MAX_UPLOAD_MB),
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--client.toolbarMode", "minimal",
        "--browser.serverAddress", address if address not in ("0.0.0.0", "::") else "localhost",
        "--browser.serverPort", str(port),
        "--theme.base", "light",
        "--theme.primaryColor", "#4C78A8",
        "--theme.backgroundColor", "#FFFFFF",
        "--theme.secondaryBackgroundColor", "#F3F5F8",
        "--theme.textColor", "#1F2430",
    ]


def allowed_hosts(address: str, extra: Sequence[str] = ()) -> set[str]:
    """Host names the server answers (any port): the bound address and ``localhost``, the
    loopback literals when bound to loopback, this machine's names and any IP literal (``*``)
    when bound to every interface, and ``extra`` (``--allow-host``)."""
    hosts = {"localhost", address.strip("[]").lower()}
    if address in ("0.0.0.0", "::", ""):
        hosts |= {"*", "127.0.0.1", "::1", socket.gethostname().lower(), socket.getfqdn().lower()}
    elif address in ("localhost", "::1") or address.startswith("127."):
        hosts |= {"127.0.0.1", "::1"}
    hosts |= {h.strip().lower() for h in extra if h.strip()}
    return hosts


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"Run directory {str(run_dir)!r} does not exist. Pass an existing run "
            "(`datamap serve RUN_DIR`) or try `datamap demo`."
        )
    if not (run_dir / S.TABLE_FILE).is_file():
        raise FileNotFoundError(
            f"{str(run_dir / S.TABLE_FILE)!r} is missing. Build it with `datamap analyze {run_dir}`."
        )


def serve(
    run_dir: str | os.PathLike[str],
    *,
    port: int = 8501,
    address: str = "127.0.0.1",
    open_browser: bool = True,
    allow_hosts: Sequence[str] = (),
    extra_args: Sequence[str] = (),
) -> int:
    """Serve the dashboard on ``run_dir`` until interrupted; return the server's exit status.

    Parameters
    ----------
    run_dir : path-like
        An analysed run (with ``table.parquet``).
    port : int, default 8501
    address : str, default "127.0.0.1"
        Bind address; the default serves this machine only. ``0.0.0.0`` exposes the dashboard
        (and the flag journal it writes) to the network.
    open_browser : bool, default True
        Open a browser tab (only where a display exists).
    allow_hosts : sequence of str
        Further ``Host`` names to answer (e.g. a reverse proxy's name); see :func:`allowed_hosts`.

    Returns
    -------
    int
        0 after a clean stop (Ctrl-C / SIGTERM), else the child's exit status.

    Raises
    ------
    FileNotFoundError
        The run directory or its ``table.parquet`` does not exist (checked before starting).
    ValueError
        ``port`` outside 1..65535.
    """
    run = Path(run_dir).resolve()
    _check_run_dir(run)
    if not 0 < int(port) < 65536:
        raise ValueError(f"Expected `port` in 1..65535, got {port!r}.")
    headless = not (open_browser and _has_display())
    cmd = [*streamlit_command(port=port, address=address, headless=True), *extra_args]
    env = dict(os.environ)
    env[ENV_RUN_DIR] = str(run)
    env["DATAMAP_PARENT_PID"] = str(os.getpid())
    env["DATAMAP_ALLOWED_HOSTS"] = ",".join(sorted(allowed_hosts(address, allow_hosts)))
    root = str(APP.parents[1])  # `-m dashboard.serve_child` from a source checkout too
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")
    url = f"http://{'localhost' if address in ('0.0.0.0', '::') else address}:{port}"
    print(f"datamap: serving {run} at {url}  (Ctrl-C to stop)", flush=True)
    proc = subprocess.Popen(cmd, env=env)
    projection = start_projection_job(run)
    stopping: dict[str, int | None] = {"signal": None}

    def _forward(signum: int, frame: FrameType | None) -> None:
        stopping["signal"] = signum
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    previous = {s: signal.signal(s, _forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not headless:
            _open_when_up(url, proc)
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # pragma: no cover - handled by _forward
                _forward(signal.SIGINT, None)
    finally:
        stop_projection_job(projection)
        _terminate(proc)
        for s, h in previous.items():
            signal.signal(s, h)
    if stopping["signal"] is not None:
        print("datamap: server stopped", flush=True)
        return 0
    return int(code)


def _open_when_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Open a browser tab once the server answers its health check (at most ~15 s)."""
    import urllib.request

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=1) as resp:
                if resp.status == 200:
                    webbrowser.open(url)
                    return
        except OSError:
            time.sleep(0.3)


def start_projection_job(run_dir: Path) -> subprocess.Popen[bytes] | None:
    """Start the run's pending UMAP projection in a background process (None: nothing to do).

    ``datamap analyze`` leaves the UMAP map pending (``cache/projection.json``) when it wrote a
    PCA stand-in; the job computes it, and the dashboard picks up the rewritten table. A job that
    failed is not retried here (``datamap project RUN_DIR`` shows why); a job still running in
    another process is left to finish.
    """
    from analysis import projection_job

    status = projection_job.read_status(run_dir)
    if status is None or status.get("state") not in ("pending", "running"):
        return None
    if status["state"] == "running" and projection_job.job_is_alive(status):
        return None
    projection_job.write_status(run_dir, step="starting", fraction=0.0)
    env = dict(os.environ)
    root = str(APP.parents[1])  # `-m analysis.projection_job` from a source checkout too
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen([sys.executable, "-m", "analysis.projection_job", str(run_dir)],
                            stdin=subprocess.DEVNULL, env=env)


def stop_projection_job(job: subprocess.Popen[bytes] | None) -> None:
    """Stop a projection job started by :func:`start_projection_job` (the server is stopping)."""
    if job is not None:
        _terminate(job)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a child that is still running; SIGKILL it if it has not exited after the timeout."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
