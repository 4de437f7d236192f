"""The header guard (deployments/serving/http_guard.py) in a real uvicorn server on
loopback, with a 1 s header timeout so the cases run quickly: heads trickled, split
across reads, too large in one read or many, kept-alive connections with large heads,
and pipelined requests. The served app (tests/test_bad_inputs.py) runs the same class
behind both ingresses with the documented defaults."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time

import pytest
import uvicorn

from deployments.serving.http_guard import GuardedHttpToolsProtocol

LIMIT = 4096


class Fast(GuardedHttpToolsProtocol):
    timeout_s = 1.0
    max_bytes = LIMIT


async def echo_app(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = b"%d" % len(body)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(echo_app, http=Fast, lifespan="off", log_level="warning",
                                           timeout_keep_alive=30))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(10)


def answer(sock: socket.socket, limit_s: float = 5.0) -> bytes:
    sock.settimeout(limit_s)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except OSError:
        pass
    return out


def test_a_trickled_head_gets_408_at_the_deadline(port):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        for i in range(20):  # 4 s of trickling if never cut off
            try:
                sock.sendall(b"X-%d: 1\r\n" % i)
            except OSError:
                break
            time.sleep(0.2)
        got = answer(sock)
    assert got.startswith(b"HTTP/1.1 408 ") and b'"code":"header_timeout"' in got, got
    assert time.monotonic() - started < 2.5


def test_a_silent_connection_is_closed_without_an_answer(port):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        assert answer(sock) == b""
    assert 0.9 < time.monotonic() - started < 2.5


@pytest.mark.parametrize("pieces", [1, 3, 50])
def test_a_head_over_the_limit_gets_431_in_one_read_or_many(port, pieces):
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * LIMIT + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        step = len(head) // pieces + 1
        for i in range(0, len(head), step):
            sock.sendall(head[i:i + step])
            time.sleep(0.01)
        got = answer(sock)
    assert got.startswith(b"HTTP/1.1 431 ") and b'"code":"request_headers_too_large"' in got, got


def test_kept_alive_connections_with_large_heads_and_bodies_keep_working(port):
    """Heads just under the limit, bodies far over it, and idle time longer than the header
    timeout between requests: the same connection answers each one."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"x-pad": "p" * (LIMIT - 200)}
    try:
        sock = None
        for i, body in enumerate((b"", b"b" * 100_000, b"c" * 10)):
            if i:
                time.sleep(1.3)  # idle past the header timeout before the next request
            conn.request("POST", "/", body=body, headers=headers)
            assert sock is None or conn.sock is sock  # the same connection as before
            sock = conn.sock
            r = conn.getresponse()
            assert r.status == 200 and r.read() == b"%d" % len(body)
    finally:
        conn.close()


def test_pipelined_requests_are_each_answered(port):
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request * 3 + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = answer(sock)
    assert got.count(b"HTTP/1.1 200 OK") == 4, got
