"""Which requests skip API keys and admission: the one definition of the public paths.

Probes (`/health`, `/ready`), the API docs and the browser playground's files are open
without a key (GET/HEAD; the page holds no data, its API calls carry the user's key), and
CORS preflights never carry credentials. Admission never sheds them either, nor Serve's
own endpoints (`/-/healthz`, `/-/routes`), so a loaded router stays ready.
"""

from __future__ import annotations

from starlette.types import Scope

from .routes.playground import ASSET_PREFIX

PROBE_PATHS = ("/health", "/ready")
DOC_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
PUBLIC_PATHS = frozenset({*PROBE_PATHS, *DOC_PATHS, "/", "/favicon.ico"})
PUBLIC_PREFIXES = (ASSET_PREFIX,)  # the playground's files
PUBLIC_METHODS = frozenset({"GET", "HEAD"})
SERVE_PREFIX = "/-/"  # Serve's own endpoints, in its HTTP servers


def route_path(scope: Scope) -> str:
    """The path below the application's route prefix (Serve puts the prefix in root_path)."""
    path, root = scope.get("path", "/"), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def is_public(scope: Scope) -> bool:
    """Open without an API key, inside the app (paths below the route prefix)."""
    if scope.get("method") == "OPTIONS":  # CORS preflights never carry credentials
        return True
    if scope.get("method") not in PUBLIC_METHODS:
        return False
    path = route_path(scope)
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def never_shed(scope: Scope) -> bool:
    """Exempt from admission in any HTTP server: the public paths, and Serve's endpoints
    and our probes under any route prefix (a proxy sees full paths, not the app's)."""
    path = scope.get("path", "")
    return (is_public(scope) or path.startswith(SERVE_PREFIX)
            or (scope.get("method") in PUBLIC_METHODS and path.endswith(PROBE_PATHS)))
