"""API keys: `Authorization: Bearer <key>` on every route but an explicit public list.

A pure ASGI middleware placed before the body limit and routing; the public paths
(serving/paths.py) pass without a key, so an unauthenticated
request is answered before its body is read, any image is decoded or any URL fetched.
Keys come from an environment variable (comma-separated) and/or a file (one per line,
re-read when it changes, for rotation without restarts). Every presented key is compared
with every configured key by `hmac.compare_digest` (no early exit on the first match,
so timing tells nothing about which or how many keys exist). Keys are never logged and
never appear in errors, metrics or /v1/models.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import AuthConfig
from ..protocol.errors import APIError
from .errors import send_error
from .paths import is_public

logger = logging.getLogger("ray.serve")

MIN_KEY_CHARS = 16
FILE_RECHECK_S = 5.0
REALM = 'Bearer realm="clip-serve"'


class AuthSetupError(RuntimeError):
    """Auth is on but no usable key was found: the router refuses to start (fail closed)."""


def parse_keys(text: str, separator: str | None) -> list[str]:
    lines = text.split(separator) if separator else text.splitlines()
    keys = [k.strip() for k in lines if k.strip() and not k.strip().startswith("#")]
    short = [k for k in keys if len(k) < MIN_KEY_CHARS or any(ch.isspace() for ch in k)]
    if short:
        raise AuthSetupError(f"{len(short)} API key(s) are shorter than {MIN_KEY_CHARS} characters or contain spaces")
    return keys


class KeyStore:
    """The configured keys, as bytes; the file source is re-read when its mtime changes."""

    def __init__(self, config: AuthConfig) -> None:
        self.env_name = config.api_keys_env
        self.file = Path(config.api_keys_file) if config.api_keys_file else None
        self._env_keys = parse_keys(os.environ.get(self.env_name, ""), ",") if self.env_name else []
        self._file_keys: list[str] = []
        self._file_mtime: float | None = None
        self._checked_at = 0.0
        self._reload_file()
        if not self.keys:
            sources = [f"${self.env_name}"] * bool(self.env_name) + [str(self.file)] * bool(self.file)
            raise AuthSetupError(f"auth is enabled but no API key was found in {' or '.join(sources)}")
        logger.info("API key auth on: %d key(s) loaded", len(self.keys))

    def _reload_file(self) -> None:
        if self.file is None:
            return
        try:
            mtime = self.file.stat().st_mtime
            if mtime != self._file_mtime:
                self._file_keys = parse_keys(self.file.read_text(), None)
                self._file_mtime = mtime
                logger.info("API keys file reloaded: %d key(s)", len(self._file_keys))
        except (OSError, AuthSetupError) as exc:  # keep the last good keys; never log their text
            logger.error("API keys file %s unusable, keeping the previous keys: %s", self.file, type(exc).__name__)

    @property
    def keys(self) -> list[bytes]:
        now = time.monotonic()
        if self.file is not None and now - self._checked_at > FILE_RECHECK_S:
            self._checked_at = now
            self._reload_file()
        return [k.encode() for k in self._env_keys + self._file_keys]

    def accepts(self, presented: bytes) -> bool:
        matched = False
        for key in self.keys:  # no short circuit: every key is compared
            matched |= hmac.compare_digest(presented, key)
        return matched


def bearer_token(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return b""
    return None


class ApiKeyAuth:
    def __init__(self, app: ASGIApp, keys: KeyStore) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        if token is None:
            err = APIError(401, "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
                           code="missing_api_key", headers={"WWW-Authenticate": REALM})
        elif not token or not self.keys.accepts(token):
            err = APIError(401, "Incorrect API key provided.", code="invalid_api_key",
                           headers={"WWW-Authenticate": f'{REALM}, error="invalid_token"'})
        else:
            await self.app(scope, receive, send)
            return
        await send_error(send, err)
