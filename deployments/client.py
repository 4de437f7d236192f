"""A small HTTP client for a running clip-serve, on the standard library (numpy for vectors).

The command-line client (`deployments.cli`) is built on it; scripts can use it too. Every
failure is a ClientError whose message is what the server said (its error envelope).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


class ClientError(Exception):
    """The request failed: the server refused it (status > 0) or could not be reached (status 0)."""

    def __init__(self, message: str, status: int = 0, code: Any = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param

    def __str__(self) -> str:
        if not self.status:
            return self.message
        where = ", ".join(str(x) for x in (self.code, f"param {self.param}" if self.param else None) if x)
        return f"HTTP {self.status}{f' ({where})' if where else ''}: {self.message}"


def wait_ready(base: str, timeout_s: float = 120.0) -> None:
    """Poll `{base}/ready` until the service has loaded every model; TimeoutError after `timeout_s`."""
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=10) as r:
                if r.status == 200:
                    return
        except OSError:  # not up yet (URLError), or 503 while loading (HTTPError)
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the service at {base} did not become ready in {timeout_s:.0f}s")


def is_image_path(value: str) -> bool:
    return Path(value).suffix.lower() in IMAGE_SUFFIXES


def image_item(path: str | Path) -> dict[str, str]:
    """An `{"image": <base64>}` input item from a file."""
    return {"image": base64.b64encode(Path(path).read_bytes()).decode("ascii")}


def server_error(status: int, body: bytes, reason: str) -> ClientError:
    try:
        error = json.loads(body)["error"]
        return ClientError(str(error["message"]), status, error.get("code"), error.get("param"))
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip()
        return ClientError(text[:500] or reason or "request failed", status)


class ClipClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise server_error(exc.code, exc.read(), exc.reason) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach the server at {self.url}: {reason}") from None
        try:
            return json.loads(payload)
        except ValueError:
            raise ClientError(f"the server at {self.url} answered {method} {path} with something that is not JSON") from None

    def models(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/models")["data"]

    def default_model(self) -> str:
        served = self.models()
        if not served:
            raise ClientError(f"the server at {self.url} serves no models")
        return served[0]["id"]

    def embed(self, model: str, items: list[Any]):
        """Embeddings of `items` (texts or image items) as a float32 array, one row each."""
        import numpy as np

        body = self.request("POST", "/v1/embeddings", {"model": model, "input": items, "encoding_format": "base64"})
        rows = sorted(body["data"], key=lambda d: d["index"])
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in rows])

    def classify(
        self, model: str, items: list[Any], labels: list[str], template: str | None = None, top_k: int | None = None
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"model": model, "input": items, "labels": labels}
        if template:
            body["hypothesis_template"] = template
        if top_k is not None:
            body["top_k"] = top_k
        return self.request("POST", "/v1/classify", body)["data"]

    def rerank(self, model: str, query: Any, documents: list[Any]) -> list[dict[str, Any]]:
        """Every document's relevance to `query`, best first."""
        body = {"model": model, "query": query, "documents": documents}
        return self.request("POST", "/v1/rerank", body)["results"]
