"""A header-read timeout and a header-size limit for the Python HTTP servers Serve starts.

Serve runs uvicorn with httptools (what `ray[serve]` installs), which has neither: a
client sending one header line every 2 s held its connection open indefinitely, and a
16 MB header was buffered whole. Serve exposes no uvicorn setting for either, so we
register a subclass of uvicorn's httptools protocol under uvicorn's `auto` protocol name,
from the HTTP callback Serve calls in every HTTP server it starts before it starts
uvicorn (deployments/serving/admission.py, `middlewares`): Serve's Python proxies,
and each router's own HTTP server behind HAProxy. That registration is the one place
this project reaches into uvicorn.

Per request, from the connection's first byte or (keep-alive) the next request's first
byte until the end of its headers:
- the head must arrive within CLIP_SERVE_HEADER_TIMEOUT_S (deployments/http_limits.py):
  otherwise 408 in the envelope and the connection is closed (closed without an answer
  when the client sent nothing at all);
- the head must not exceed CLIP_SERVE_MAX_HEADER_BYTES (request line and headers): a
  larger one gets 431 in the envelope as soon as it is seen, and the connection is closed.
The body is not covered: the router's deadline (`router.request_timeout_s`) bounds it.
"""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..http_limits import header_timeout_s, max_header_bytes
from ..protocol.errors import APIError
from .errors import count_error

logger = logging.getLogger("ray.serve")
AUTO = "auto"


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on each request head."""

    timeout_s = header_timeout_s()
    max_bytes = max_header_bytes()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._in_head = True  # reading a request line and headers
        self._head_bytes = 0  # bytes of this head so far, in chunks that did not finish it
        self._head_seen = False  # any byte of this head arrived
        self._heads = 0  # heads read to their end on this connection
        self._too_large = False

    # -- connection and bytes ---------------------------------------------------------------

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # the first request's head must come within the timeout, bytes or not

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head and self._head_timer is None:
            self._arm()  # the next request on a kept-alive connection starts now
        in_head, heads = self._in_head, self._heads
        self._head_seen = self._head_seen or (in_head and bool(data))
        super().data_received(data)
        if in_head and self._heads == heads:  # no head ended in this chunk: all of it was head
            self._head_bytes += len(data)
            self._too_large = self._too_large or self._head_bytes > self.max_bytes
        if self._too_large:
            self._refuse(APIError(431, f"request headers exceed the {self.max_bytes}-byte limit",
                                  code="request_headers_too_large"))

    # -- parser callbacks -----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        self._heads += 1
        head = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if head > self.max_bytes:
            self._too_large = True  # answered by data_received once the parser returns
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._too_large:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._too_large:
            return
        super().on_message_complete()
        self._in_head, self._head_bytes, self._head_seen = True, 0, False  # the timer starts with the next byte

    # -- the deadline -----------------------------------------------------------------------

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a pipelined head behind a response still being sent: wait for it
            return
        if self._head_seen:
            self._refuse(APIError(408, f"request headers did not arrive within {self.timeout_s:g} s",
                                  code="header_timeout"))
        else:
            self.transport.close()  # nothing sent: nothing to answer

    def _refuse(self, err: APIError) -> None:
        """Answer `err` and close, unless a response is already under way (then only close)."""
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            count_error(err)
            body = json.dumps(err.envelope(), separators=(",", ":")).encode()
            head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            self.transport.write(STATUS_LINE[err.status_code] + head + body)
        self.transport.close()


def install() -> None:
    """Make uvicorn's `auto` HTTP protocol the guarded one in this process. Serve creates its
    uvicorn config with the default `http="auto"` and loads the class when the server starts."""
    from uvicorn import config

    target = f"{__name__}:{GuardedHttpToolsProtocol.__name__}"
    if config.HTTP_PROTOCOLS.get(AUTO) != target:
        config.HTTP_PROTOCOLS[AUTO] = target
        logger.info("HTTP servers in this process: request heads within %g s and %d bytes",
                    GuardedHttpToolsProtocol.timeout_s, GuardedHttpToolsProtocol.max_bytes)
