"""Proof that a test touched no network beyond this machine: an audit hook that, while
armed, records every socket connect and DNS lookup in this process and refuses (raises
on) any connect to a non-loopback address before it happens."""

from __future__ import annotations

import ipaddress
import sys
from contextlib import contextmanager

_state: dict = {"armed": False, "connects": [], "lookups": []}


def _hook(event: str, args: tuple) -> None:
    if not _state["armed"]:
        return
    if event == "socket.connect":
        address = args[1]
        host = address[0] if isinstance(address, tuple) else str(address)
        _state["connects"].append(host)
        try:
            loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise PermissionError(f"test network guard: connect to {host!r} refused")
    elif event == "socket.getaddrinfo":
        _state["lookups"].append(args[0])


sys.addaudithook(_hook)


@contextmanager
def loopback_only():
    """Yields a record {"connects": [...], "lookups": [...]} of what happened inside."""
    _state.update(armed=True, connects=[], lookups=[])
    try:
        yield _state
    finally:
        _state["armed"] = False
