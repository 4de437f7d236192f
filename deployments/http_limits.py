"""How long a client may take to send a request's head (request line and headers) and how
large the head may be, on every ingress: HAProxy (deployments/haproxy_launcher.sh) and
the Python HTTP servers Serve starts (deployments/serving/http_guard.py). Without them a
client sending a header line every few seconds held a connection open indefinitely, and
a 16 MB header was read into memory.

Ray processes and the HAProxy they start read these from their environment;
deployments/ingress.py sets them for local clusters and Kubernetes pods. Standard library
only: deployments/ingress.py imports it on the light `--help` path.
"""

from __future__ import annotations

import os

HEADER_TIMEOUT_ENV = "CLIP_SERVE_HEADER_TIMEOUT_S"
MAX_HEADER_BYTES_ENV = "CLIP_SERVE_MAX_HEADER_BYTES"
# Ten seconds is far longer than a real client needs for a few hundred bytes of headers and
# short enough that holding connections open costs an attacker a new one every 10 s.
DEFAULT_HEADER_TIMEOUT_S = 10.0
# Request line plus headers. Our API needs well under 1 KiB (an API key, a content type);
# 16 KiB is HAProxy's and Node's default and fits generous cookies and tracing headers.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
# HAProxy keeps tune.maxrewrite (1024 bytes) of each buffer free for header rewrites, so a
# buffer this much larger than the head limit admits heads of about that size.
HAPROXY_MAXREWRITE = 1024


def header_timeout_s() -> float:
    value = float(os.environ.get(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT_S))
    if not value > 0:
        raise ValueError(f"{HEADER_TIMEOUT_ENV} must be a positive number of seconds, not {value}")
    return value


def max_header_bytes() -> int:
    value = int(os.environ.get(MAX_HEADER_BYTES_ENV, DEFAULT_MAX_HEADER_BYTES))
    if value < 1024:
        raise ValueError(f"{MAX_HEADER_BYTES_ENV} must be at least 1024 bytes, not {value}")
    return value

