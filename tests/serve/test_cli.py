"""The command-line client as users run it (`python -m deployments.cli`, a subprocess) against
the session's Ray Serve app: its outputs equal the API's answers; failures exit non-zero
with the server's message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from support.helpers import REPO, b64, encode, free_port, natural_image

HUB_ID = "openai/clip-vit-base-patch32"
WIDE_ID = "local/tiny-wide"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_SERVE_")}
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**clean, **(env or {})},
    )


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    return result


def jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Four image files (PNG and JPEG) and their bytes."""
    folder = tmp_path_factory.mktemp("cli-images")
    files = []
    for i, (fmt, suffix) in enumerate([("PNG", "png"), ("JPEG", "jpg"), ("PNG", "png"), ("JPEG", "jpeg")]):
        data = encode(natural_image(56, 40 + 8 * i, seed=20 + i), fmt)
        path = folder / f"img{i}.{suffix}"
        path.write_bytes(data)
        files.append((str(path), data))
    return files


def api_vectors(client, model: str, items: list) -> np.ndarray:
    r = client.post("/v1/embeddings", json={"model": model, "input": items})
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32)


def test_embed_texts_and_images_to_npy_in_batches(server, client, images, tmp_path):
    inputs = ["a photo of a cat", images[0][0], "a dog on a sofa", images[1][0]]
    out = tmp_path / "vectors.npy"
    result = ok(cli("embed", *inputs, "--url", server, "--model", "clip-b32", "--batch-size", "3", "-o", str(out)))
    assert "embedded 3/4" in result.stderr and "embedded 4/4" in result.stderr  # progress per request
    vectors = np.load(out)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 16)
    want = api_vectors(client, HUB_ID, [inputs[0], {"image": b64(images[0][1])}, inputs[2], {"image": b64(images[1][1])}])
    np.testing.assert_allclose(vectors, want, atol=1e-5)


def test_embed_jsonl_uses_the_servers_first_model_and_reads_text_when_told(server, client, images):
    result = ok(cli("--url", server, "embed", "--text", "a photo of a cat", images[0][0]))
    assert result.stderr == ""  # one request: no progress noise
    lines = jsonl(result.stdout)
    assert [(line["index"], line["input"]) for line in lines] == [(0, "a photo of a cat"), (1, images[0][0])]
    want = api_vectors(client, HUB_ID, ["a photo of a cat", images[0][0]])  # the path embedded as text
    np.testing.assert_allclose(np.array([line["embedding"] for line in lines], dtype=np.float32), want, atol=1e-5)


def test_classify_equals_the_api(server, client, images):
    paths = [p for p, _ in images[:3]]
    result = ok(cli("classify", *paths, "--url", server, "--labels", "cat, dog", "--labels", "car",
                    "--template", "a photo of a {}.", "--batch-size", "2", "--json"))
    got = jsonl(result.stdout)
    api = client.post("/v1/classify", json={
        "model": HUB_ID, "input": [{"image": b64(d)} for _, d in images[:3]], "labels": ["cat", "dog", "car"],
        "hypothesis_template": "a photo of a {}.",
    })
    assert api.status_code == 200, api.text
    assert [g["input"] for g in got] == paths
    for g, want in zip(got, api.json()["data"]):
        assert g["index"] == want["index"] and g["prediction"] == want["prediction"]
        assert [p["label"] for p in g["predictions"]] == [p["label"] for p in want["predictions"]]
        for p, q in zip(g["predictions"], want["predictions"]):
            assert p["score"] == pytest.approx(q["score"], abs=1e-6)
            assert p["cosine"] == pytest.approx(q["cosine"], abs=1e-6)

    table = ok(cli("classify", paths[0], "--url", server, "--labels", "cat,dog,car", "--top-k", "2")).stdout
    first = api.json()["data"][0]
    assert table.splitlines()[0] == f"{paths[0]}: {first['prediction']} ({first['score']:.4f})"
    assert len(table.splitlines()) == 3  # the header and the top 2


def test_rank_in_batches_equals_one_rerank(server, client, images):
    paths = [p for p, _ in images]
    query = "a photo of a cat"
    result = ok(cli("rank", "--query", query, *paths, "--url", server, "--model", WIDE_ID, "--batch-size", "3", "--json"))
    got = jsonl(result.stdout)
    api = client.post("/v1/rerank", json={"model": WIDE_ID, "query": query, "documents": [{"image": b64(d)} for _, d in images]})
    assert api.status_code == 200, api.text
    want = api.json()["results"]
    assert [g["index"] for g in got] == [w["index"] for w in want]
    assert [g["rank"] for g in got] == [1, 2, 3, 4] and [g["input"] for g in got] == [paths[w["index"]] for w in want]
    for g, w in zip(got, want):
        assert g["relevance_score"] == pytest.approx(w["relevance_score"], abs=1e-6)

    top = ok(cli("rank", "--query", query, *paths, "--url", server, "--model", WIDE_ID, "--top-n", "2")).stdout
    assert [line.split("\t")[2] for line in top.splitlines()] == [paths[w["index"]] for w in want[:2]]


def test_models_lists_what_the_api_lists(server, client):
    got = jsonl(ok(cli("models", "--json", "--url", server)).stdout)
    assert [m["id"] for m in got] == [m["id"] for m in client.get("/v1/models").json()["data"]] == [HUB_ID, WIDE_ID]
    table = ok(cli("models", "--url", server)).stdout.splitlines()
    assert table[0].split("\t")[:3] == [HUB_ID, "16-d", "image+text"]


def test_server_errors_exit_1_with_the_servers_message(server, client, images):
    result = cli("classify", images[0][0], "--url", server, "--labels", "cat")
    api = client.post("/v1/classify", json={"model": HUB_ID, "input": [{"image": b64(images[0][1])}], "labels": ["cat"]})
    envelope = api.json()["error"]
    assert result.returncode == 1 and result.stdout == ""
    assert f"HTTP 400 ({envelope['code']}, param labels): {envelope['message']}" in result.stderr

    result = cli("embed", "hello", "--url", server, "--model", "no/such-model")
    assert result.returncode == 1
    assert "HTTP 404 (model_not_found, param model)" in result.stderr and "no/such-model" in result.stderr


def test_unreachable_server_and_bad_usage_exit_non_zero(images):
    result = cli("models", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and "cannot reach the server" in result.stderr

    result = cli("rank", "--query", "x", "missing.png", images[0][0], "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "no such file: missing.png" in result.stderr  # checked before any request
    assert cli("classify", images[0][0], "--labels", "a,b", "--batch-size", "0").returncode == 2
    result = cli("embed", "a caption", "holiday.jpg")
    assert result.returncode == 2 and "no such file: holiday.jpg (--text embeds" in result.stderr


class AuthServer(BaseHTTPRequestHandler):
    """What issue 8's auth answers: 401 with the OpenAI envelope unless the key is right."""

    seen: list[str | None] = []

    def reply(self) -> None:
        self.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") == "Bearer right-key":
            status, body = 200, {"object": "list", "data": [{"id": "m", "towers": ["text"], "ready": True}]}
        else:
            status, body = 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                           "param": None, "code": "invalid_api_key"}}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="clip-serve"')
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = reply

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def auth_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), AuthServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    AuthServer.seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_api_key_is_sent_as_bearer_and_a_401_is_reported(auth_server):
    assert ok(cli("models", "--url", auth_server, "--api-key", "right-key")).stdout.startswith("m\t")
    assert ok(cli("models", env={"CLIP_SERVE_URL": auth_server, "CLIP_SERVE_API_KEY": "right-key"}))
    result = cli("embed", "hi", "--model", "m", "--url", auth_server, "--api-key", "wrong")
    assert result.returncode == 1
    assert "HTTP 401 (invalid_api_key): Incorrect API key provided." in result.stderr
    assert AuthServer.seen == ["Bearer right-key", "Bearer right-key", "Bearer wrong"]
