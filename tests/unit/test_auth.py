"""API-key auth as ASGI middleware on its own: which paths are public, the 401 envelope
with WWW-Authenticate, checks before the body is read, key sources and rotation, and keys
never showing up in logs or errors. (The live service is tested in test_reliability_app.)"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi import FastAPI, Request

from deployments.config import AuthConfig
from deployments.serving import auth
from deployments.serving.auth import ApiKeyAuth, AuthSetupError, KeyStore

KEY_A = "sk-test-aaaaaaaaaaaaaaaaaaaa"
KEY_B = "sk-test-bbbbbbbbbbbbbbbbbbbb"

# Every path that must stay open, and a sample of those that must not.
PUBLIC = ["/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/", "/favicon.ico",
          "/playground/app.js", "/playground/style.css"]
PROTECTED = [("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("GET", "/v1/models/clip"), ("POST", "/v1/classify"),
             ("POST", "/v1/rerank"), ("POST", "/v1/similarity"), ("POST", "/v1/tokenize"),
             ("POST", "/models/openai/clip-vit-base-patch32"), ("GET", "/metrics"), ("POST", "/health"),
             ("POST", "/"), ("GET", "/healthz"), ("GET", "/health/"), ("GET", "/playground")]


def make_app(keys: KeyStore) -> tuple[FastAPI, dict]:
    seen = {"bodies_read": 0}
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "HEAD", "OPTIONS"])
    async def anything(request: Request):
        seen["bodies_read"] += 1
        await request.body()
        return {"ok": True}

    app.add_middleware(ApiKeyAuth, keys=keys)
    return app, seen


def call(app, method: str, path: str, headers: dict | None = None, root_path: str = "") -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app, root_path=root_path)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, root_path + path, headers=headers, content=b'{"input": "x"}')

    return asyncio.run(go())


@pytest.fixture
def keys(monkeypatch) -> KeyStore:
    monkeypatch.setenv("CLIP_SERVE_API_KEYS", f"{KEY_A}, {KEY_B}")
    return KeyStore(AuthConfig(enabled=True))


@pytest.mark.parametrize("path", PUBLIC)
def test_public_paths_need_no_key(keys, path):
    app, _ = make_app(keys)
    assert call(app, "GET", path).status_code == 200
    assert call(app, "HEAD", path).status_code == 200


@pytest.mark.parametrize("method, path", PROTECTED)
def test_everything_else_needs_a_key_and_is_refused_before_the_body_is_read(keys, method, path):
    app, seen = make_app(keys)
    r = call(app, method, path)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="clip-serve"'
    assert r.json()["error"] == {"message": r.json()["error"]["message"], "type": "invalid_request_error",
                                 "param": None, "code": "missing_api_key"}
    assert seen["bodies_read"] == 0
    assert call(app, method, path, {"Authorization": f"Bearer {KEY_B}"}).status_code == 200


@pytest.mark.parametrize("header", [f"Bearer {KEY_A}x", f"Bearer {KEY_A[:-1]}", "Bearer ", f"Basic {KEY_A}",
                                    KEY_A, f"Bearer {KEY_A.upper()}", "Bearer sk-test-\u00e9"])
def test_wrong_keys_are_401_invalid_api_key(keys, header):
    app, seen = make_app(keys)
    headers = {"Authorization": header.encode("utf-8")} if not header.isascii() else {"Authorization": header}
    r = call(app, "POST", "/v1/embeddings", headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert KEY_A not in r.text and header not in r.text  # never echoed
    assert seen["bodies_read"] == 0


def test_scheme_is_case_insensitive_and_route_prefix_is_respected(keys):
    app, _ = make_app(keys)
    assert call(app, "POST", "/v1/embeddings", {"Authorization": f"bearer {KEY_A}"}).status_code == 200
    # under a Serve route prefix the public list applies below the prefix
    assert call(app, "GET", "/health", root_path="/rel").status_code == 200
    assert call(app, "GET", "/v1/models", root_path="/rel").status_code == 401
    assert call(app, "OPTIONS", "/v1/embeddings").status_code == 200  # CORS preflights carry no credentials


def test_every_key_is_compared_in_constant_time(keys, monkeypatch):
    compared = []
    real = auth.hmac.compare_digest

    def counting(a, b):
        compared.append(len(b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    assert keys.accepts(KEY_A.encode())  # the first key matches ...
    assert len(compared) == 2  # ... and the second is compared all the same
    assert not keys.accepts(b"nope")


def test_keys_file_rotates_without_restart(tmp_path, monkeypatch):
    monkeypatch.delenv("CLIP_SERVE_API_KEYS", raising=False)
    monkeypatch.setattr(auth, "FILE_RECHECK_S", 0.0)
    path = tmp_path / "keys"
    path.write_text(f"# clip-serve keys\n{KEY_A}\n\n")
    store = KeyStore(AuthConfig(enabled=True, api_keys_file=str(path)))
    assert store.accepts(KEY_A.encode()) and not store.accepts(KEY_B.encode())
    path.write_text(f"{KEY_B}\n")
    import os

    os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
    assert store.accepts(KEY_B.encode()) and not store.accepts(KEY_A.encode())
    path.write_text("short\n")  # a broken rotation keeps the last good keys
    os.utime(path, (2, 2))
    assert store.accepts(KEY_B.encode())


def test_fails_closed_without_keys_and_never_logs_them(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("CLIP_SERVE_API_KEYS", "")
    with pytest.raises(AuthSetupError, match="no API key was found in .CLIP_SERVE_API_KEYS"):
        KeyStore(AuthConfig(enabled=True))
    monkeypatch.setenv("CLIP_SERVE_API_KEYS", "tooshort")
    with pytest.raises(AuthSetupError) as exc:
        KeyStore(AuthConfig(enabled=True))
    assert "tooshort" not in str(exc.value)
    monkeypatch.setenv("CLIP_SERVE_API_KEYS", KEY_A)
    with caplog.at_level(logging.DEBUG, logger="ray.serve"):
        store = KeyStore(AuthConfig(enabled=True, api_keys_file=str(tmp_path / "absent")))
        app, _ = make_app(store)
        call(app, "POST", "/v1/embeddings", {"Authorization": f"Bearer {KEY_B}"})
        call(app, "POST", "/v1/embeddings", {"Authorization": f"Bearer {KEY_A}"})
    assert caplog.records  # it did log (key counts, the unusable file) ...
    assert all(KEY_A not in r.getMessage() and KEY_B not in r.getMessage() for r in caplog.records)  # ... no keys
