"""GET / and /playground/{name}: the browser playground, static files shipped in the package.

The page calls only the public API (the same endpoints and headers a client uses), so the
router serves nothing for it but files. Registered only when `router.playground` is on.
The files are public: the page itself holds no data, and API calls carry the user's key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import Request
from starlette.responses import Response

from ...protocol.errors import APIError
from . import api_router

STATIC_DIR = Path(__file__).resolve().parents[2] / "playground"
INDEX = "index.html"
ASSETS = ("app.js", "style.css", "icon.svg")  # what /playground/{name} serves; nothing else is reachable
ASSET_PREFIX = "/playground/"
PUBLIC_PATHS = ("/", *(ASSET_PREFIX + name for name in ASSETS))  # no API key needed to load the page

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Nothing inline and nothing from elsewhere; thumbnails are the user's own files (blob: URLs).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
# Always revalidate (cheap: 304 by ETag), so a server upgrade never pairs a new page with an old script.
CACHE_CONTROL = "no-cache"

router = api_router()


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


@cache
def static_file(name: str) -> StaticFile:
    body = (STATIC_DIR / name).read_bytes()
    return StaticFile(body, _CONTENT_TYPES[Path(name).suffix], f'"{hashlib.sha256(body).hexdigest()[:32]}"')


def file_response(name: str, request: Request) -> Response:
    file = static_file(name)
    headers = {
        "ETag": file.etag,
        "Cache-Control": CACHE_CONTROL,
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if file.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.content_type, headers=headers)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index(request: Request) -> Response:
    return file_response(INDEX, request)


@router.api_route(ASSET_PREFIX + "{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def asset(name: str, request: Request) -> Response:
    if name not in ASSETS:
        raise APIError(404, f"no playground file `{name}`", code="not_found")
    return file_response(name, request)
