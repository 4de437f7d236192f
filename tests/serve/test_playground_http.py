"""The playground's static files: served by the router with the right types and headers,
only from the package's file list, and gone when `router.playground` is off."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from deployments.config import AppConfig
from deployments.serving.http_app import build_http_app
from deployments.serving.routes.playground import PUBLIC_PATHS, STATIC_DIR
from deployments.serving.state import RouterState


def http_app(**router) -> TestClient:
    """The router's real FastAPI app without Ray: static routes need no encoders."""
    config = AppConfig.model_validate({"variants": [{"id": "local/x"}], "router": router})
    return TestClient(build_http_app(RouterState(config, {"local/x": {"image": None, "text": None}})))


@pytest.fixture(scope="module")
def local():
    with http_app() as client:
        yield client


@pytest.mark.parametrize(
    ("path", "file", "content_type"),
    [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/playground/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/playground/style.css", "style.css", "text/css; charset=utf-8"),
        ("/playground/icon.svg", "icon.svg", "image/svg+xml"),
    ],
)
def test_files_are_served_with_their_type_and_a_strict_policy(local, path, file, content_type):
    r = local.get(path)
    assert r.status_code == 200
    assert r.content == (STATIC_DIR / file).read_bytes()
    assert r.headers["content-type"] == content_type
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-cache"
    assert path in PUBLIC_PATHS


def test_unchanged_files_revalidate_with_304(local):
    first = local.get("/playground/app.js")
    again = local.get("/playground/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert local.get("/playground/app.js", headers={"If-None-Match": '"stale"'}).status_code == 200


@pytest.mark.parametrize("path", ["/playground/index.html", "/playground/..%2Fconfig.py", "/playground/missing.js"])
def test_only_the_listed_files_are_reachable(local, path):
    r = local.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"


def test_page_is_self_contained():
    """No inline script or style, nothing from another origin: what the CSP demands."""
    html = (STATIC_DIR / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script src="playground/app.js" defer>']
    assert "<style" not in html and " style=" not in html and re.search(r" on[a-z]+=", html) is None
    for text in (html, (STATIC_DIR / "app.js").read_text(), (STATIC_DIR / "style.css").read_text()):
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    # Labels and error messages are user text: rendered as text nodes, never parsed as HTML.
    js = (STATIC_DIR / "app.js").read_text()
    assert re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|\beval\(", js) is None


def test_disabled_playground_is_a_404_envelope_while_the_api_stays():
    with http_app(playground=False) as client:
        for path in ("/", "/playground/app.js"):
            r = client.get(path)
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "not_found"
        assert client.get("/v1/models").status_code == 200


def test_wheel_ships_the_page_and_the_client_script(tmp_path):
    """What `pip install` gets: the static files as package data and the console script."""
    repo = Path(__file__).resolve().parents[2]
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo / name, src / name)
    shutil.copytree(repo / "deployments", src / "deployments", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("clip_serve-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for file in ("index.html", "app.js", "style.css", "icon.svg"):
        assert f"deployments/playground/{file}" in names
    assert "clip-serve-client = deployments.cli:main" in entry_points


def test_served_through_ray_serve_with_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert client.get("/playground/app.js").headers["content-type"] == "text/javascript; charset=utf-8"
