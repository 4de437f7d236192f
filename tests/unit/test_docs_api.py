"""docs/api.md keeps up with the app: every route the router's FastAPI app serves (its
OpenAPI schema, the playground, the API docs) and every error `code` the server can send
is named there. The app is built from its route modules without a Ray cluster."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]
API_DOC = (REPO / "docs" / "api.md").read_text()
# Where error codes are written: APIError(..., code="..."), `code: str = "..."` defaults,
# `code="a" if ... else "b"`, and the HTTP status -> code table of serving/errors.py.
CODE_SOURCES = ["deployments/protocol", "deployments/preprocess", "deployments/serving"]
CODE_LITERAL = re.compile(r"""\bcode\s*(?::\s*str\s*)?=\s*("[a-z_]+"(?:\s+if\s+[^\n]+?\s+else\s+"[a-z_]+")?)""")


def app():
    from deployments.config import parse_app_config
    from deployments.serving.http_app import build_http_app

    config = parse_app_config({"variants": [{"id": "clip"}]})  # the playground is on by default
    return build_http_app(SimpleNamespace(config=config, capacity=None, keys=None))


def routes() -> list[str]:
    from deployments.serving.http_app import ROUTE_MODULES
    from deployments.serving.routes import playground

    built = app()
    paths = set(built.openapi()["paths"])
    paths |= {r.path for m in (*ROUTE_MODULES, playground) for r in m.router.routes}
    paths |= {built.openapi_url, built.docs_url, built.redoc_url}
    return sorted(paths)


def error_codes() -> list[str]:
    from deployments.serving.errors import _HTTP_CODES

    codes = set(_HTTP_CODES.values()) | {"http_error"}  # the fallback of that table
    for folder in CODE_SOURCES:
        for path in (REPO / folder).rglob("*.py"):
            for expression in CODE_LITERAL.findall(path.read_text()):
                codes |= set(re.findall(r'"([a-z_]+)"', expression))
    return sorted(codes)


def documented(path: str) -> bool:
    """`/v1/models/{model}` is documented as `/v1/models/{id}`: parameters match any name."""
    pattern = re.escape(path)
    pattern = re.sub(r"\\\{[^}]*\\\}", r"\\{[^}]+\\}", pattern)
    return re.search(rf"`(?:GET|POST|HEAD) {pattern}`", API_DOC) is not None


def test_the_routes_are_found():
    found = routes()
    assert {"/v1/embeddings", "/v1/classify", "/models/{model_id}", "/ready", "/", "/docs", "/openapi.json"} <= set(found)


@pytest.mark.parametrize("path", routes())
def test_every_route_is_documented(path):
    assert documented(path), f"docs/api.md does not name `{path}` (as `GET {path}` or `POST {path}`)"


def test_the_error_codes_are_found():
    assert {"invalid_value", "model_not_found", "overloaded", "timeout", "invalid_image", "not_found"} <= set(error_codes())


@pytest.mark.parametrize("code", error_codes())
def test_every_error_code_is_documented(code):
    assert f"`{code}`" in API_DOC, f"docs/api.md does not name the error code `{code}`"


def test_an_undocumented_route_would_fail():
    assert not documented("/v1/no-such-route") and documented("/v1/models/{model}")
