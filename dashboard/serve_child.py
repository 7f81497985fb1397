"""The Streamlit server process that ``datamap serve`` starts: ``python -m dashboard.serve_child
run dashboard/app.py --server.* ...`` (the arguments of ``streamlit run``).

Before handing over to Streamlit's command line it

* ties its life to the ``datamap serve`` process: on Linux the kernel sends it SIGTERM when the
  parent dies (``prctl(PR_SET_PDEATHSIG)``), and everywhere a watchdog thread stops it once the
  parent is gone, so a parent killed with SIGKILL leaves nothing serving on the port;
* answers 403 to any HTTP request (page, asset, health check) and refuses any websocket handshake
  whose ``Host`` header is not an allowed host (:data:`ENV_ALLOWED_HOSTS`), by a middleware put
  first in Streamlit's Starlette app: a web page elsewhere cannot reach the dashboard through a
  DNS name that it points at this machine (DNS rebinding).
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import sys
import threading
import time
from typing import Any

__all__ = ["ENV_ALLOWED_HOSTS", "ENV_PARENT_PID", "HostCheckMiddleware", "host_allowed", "main"]

ENV_ALLOWED_HOSTS = "DATAMAP_ALLOWED_HOSTS"
"""Comma-separated host names (or IP literals) the server answers; ``*`` allows any IP literal."""
ENV_PARENT_PID = "DATAMAP_PARENT_PID"
"""Pid of the ``datamap serve`` process the server lives and dies with."""
_PR_SET_PDEATHSIG = 1
WATCHDOG_INTERVAL_S = 0.5


def _host_name(header: str) -> str:
    """The host of a ``Host`` header, without port or IPv6 brackets, lower case."""
    host = header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def host_allowed(header: str | None, allowed: set[str]) -> bool:
    """Whether a request's ``Host`` header names an allowed host (any port)."""
    if not header:
        return False
    host = _host_name(header)
    if host in allowed:
        return True
    if "*" in allowed:  # bound to every interface: any address literal of this machine
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return False
        return True
    return False


class HostCheckMiddleware:
    """ASGI middleware: 403 for an HTTP request, and a refused handshake for a websocket, whose
    ``Host`` header is not allowed (:func:`host_allowed`)."""

    def __init__(self, app: Any, allowed: set[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), None)
        if host_allowed(host, self.allowed):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = (b"datamap: this Host header is not allowed. Open the dashboard at the address "
                b"`datamap serve` printed, or start it with --allow-host NAME.\n")
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _install_host_check(allowed: set[str]) -> None:
    """Put :class:`HostCheckMiddleware` first in Streamlit's (Starlette) middleware stack."""
    from starlette.middleware import Middleware
    from streamlit.web.server.starlette import starlette_app

    original = starlette_app.create_streamlit_middleware

    def with_host_check() -> list[Any]:
        return [Middleware(HostCheckMiddleware, allowed=allowed), *original()]

    starlette_app.create_streamlit_middleware = with_host_check


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCHDOG_INTERVAL_S)
        os.kill(os.getpid(), signal.SIGTERM)  # Streamlit's own clean shutdown
        time.sleep(10)
        os._exit(0)

    threading.Thread(target=watch, name="datamap-parent-watchdog", daemon=True).start()


def main() -> None:
    parent = os.environ.get(ENV_PARENT_PID)
    if parent and parent.isdigit():
        _die_with_parent(int(parent))
    allowed = {h.strip().lower() for h in os.environ.get(ENV_ALLOWED_HOSTS, "").split(",") if h.strip()}
    if allowed:
        _install_host_check(allowed)
    from streamlit.web import cli

    sys.argv = ["streamlit", *sys.argv[1:]]
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
