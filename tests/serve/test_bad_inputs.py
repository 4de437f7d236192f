"""A corpus of hostile inputs against the live service, while a good client keeps going:
every bad request gets a 4xx in the OpenAI envelope (never a 5xx, never a hang), and the
good client's answers stay correct throughout. Complements test_errors_api.py (field
mistakes) with malformed, truncated, polyglot and bomb files and malformed bodies, on
every endpoint, and covers hostile request heads (slow or huge headers) on both
ingresses, HAProxy and Serve's Python proxy, and image URLs that spell a denied address
some other way (a third application with URL fetching on, beside the session's)."""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from support.cluster import app_args
from support.helpers import HUB_ID, b64, cosine, encode, natural_image
from support.image_server import CAT_PNG, ImageServer
from PIL import Image
from test_errors_api import assert_envelope

GOOD = encode(natural_image(40, 32, seed=21))
JPEG = encode(natural_image(64, 48, seed=22), "JPEG")
GIF = encode(natural_image(32, 32, seed=23).convert("P"), "GIF")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, bit_depth: int = 8, color: int = 2) -> bytes:
    """A PNG that declares a size and carries (almost) no pixels: a decompression bomb's
    header costs nothing to send."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def flip(data: bytes, every: int = 7) -> bytes:
    out = bytearray(data)
    for i in range(len(out) // 3, len(out), every):
        out[i] ^= 0x5A
    return bytes(out)


BAD_IMAGES = {
    "truncated png": GOOD[: len(GOOD) // 2],
    "truncated jpeg": JPEG[: len(JPEG) // 3],
    "truncated gif": GIF[:40],
    "corrupt png": flip(GOOD),
    "png signature only": b"\x89PNG\r\n\x1a\n",
    "zero-size png": png_header_only(0, 0),
    "zero-width png": png_header_only(0, 10),
    "png bomb 50000x50000": png_header_only(50_000, 50_000),
    "png bomb 16-bit 20000x20000": png_header_only(20_000, 20_000, bit_depth=16),
    "aspect bomb 1x10000": png_header_only(1, 10_000),
    "aspect bomb 30000x2": png_header_only(30_000, 2),
    "gif bomb": b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\x00\x00\x00" + b",\x00\x00\x00\x00"
                + struct.pack("<HH", 65535, 65535) + b"\x00\x02\x02D\x01\x00;",
    "gif/js polyglot": b"GIF89a/*\x00\x00\x00\x00*/=alert(document.domain);//;",
    "html as png": b"<html><script>alert(1)</script></html>",
    "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
    "pdf with jpeg magic": b"\xff\xd8\xff\xe0%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
    "zip after a png signature": b"\x89PNG\r\n\x1a\nPK\x03\x04" + b"\0" * 60,
    "ico": b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00" + b"\0" * 40,
    "ppm": encode(Image.new("RGB", (4, 4)), "PPM"),  # a real format the server does not accept
    "png of 80,000 empty chunks": png_header_only(8, 8)[:33] + png_chunk(b"abCd", b"") * 80_000
                                  + png_header_only(8, 8)[33:],
    "all zeros": b"\0" * 4096,
    "random bytes": np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
}


def image_body(data: bytes) -> dict:
    return {"model": HUB_ID, "input": [{"image": b64(data)}]}


BAD_JSON_BODIES = {
    "invalid utf-8 in a string": b'{"model": "x", "input": "\xc3\x28\xa0\xa1"}',
    "deeply nested arrays": b'{"model": "x", "input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
    "deeply nested objects": b'{"model": "x", "input": ' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b"}",
    "nested 200 deep": b'{"model": "' + HUB_ID.encode() + b'", "input": ' + b"[" * 200 + b"]" * 200 + b"}",
    "NaN dimensions": b'{"model": "' + HUB_ID.encode() + b'", "input": "x", "dimensions": NaN}',
    "huge number": b'{"model": "' + HUB_ID.encode() + b'", "input": "x", "dimensions": 1e400}',
    "truncated json": b'{"model": "' + HUB_ID.encode() + b'", "input": ["a", ',
    "a bare string": b'"just a string"',
    "null": b"null",
    "bom then json": b'\xef\xbb\xbf{"model": "x", "input": "x"}',
    "utf-16 json": '{"model": "x", "input": "x"}'.encode("utf-16"),
    "huge base64 in input": b'{"model": "' + HUB_ID.encode() + b'", "input": [{"image": "' + b"QUFB" * 400_000 + b'"}]}',
    "token ids as floats": b'{"model": "' + HUB_ID.encode() + b'", "input": [[49406.5, 320]]}',
    "negative token ids": b'{"model": "' + HUB_ID.encode() + b'", "input": [[-1, 320]]}',
    "enormous token id": b'{"model": "' + HUB_ID.encode() + b'", "input": [[' + b"9" * 400 + b"]]}",
}

WRONG_TYPES = [
    ("/v1/classify", {"model": HUB_ID, "input": ["x"], "labels": "cat"}),
    ("/v1/classify", {"model": HUB_ID, "input": ["x"], "labels": [1, 2]}),
    ("/v1/classify", {"model": HUB_ID, "input": ["x"], "labels": ["a", "b"], "top_k": "all"}),
    ("/v1/classify", {"model": HUB_ID, "input": ["x"], "labels": ["a", "b"], "templates": "a {}"}),
    ("/v1/classify", {"model": HUB_ID, "input": [{"image": b64(BAD_IMAGES["png bomb 50000x50000"])}],
                      "labels": ["a", "b"]}),
    ("/v1/rerank", {"model": HUB_ID, "query": ["a"], "documents": ["b"]}),
    ("/v1/rerank", {"model": HUB_ID, "query": "a", "documents": "b"}),
    ("/v1/rerank", {"model": HUB_ID, "query": {"image": b64(BAD_IMAGES["gif/js polyglot"])}, "documents": ["b"]}),
    ("/v1/similarity", {"model": HUB_ID, "queries": "a", "candidates": [None]}),
    ("/v1/similarity", {"model": HUB_ID, "queries": [{"image": 5}], "candidates": ["b"]}),
    ("/v1/tokenize", {"model": HUB_ID, "input": [["nested"]]}),
    ("/v1/tokenize", {"model": HUB_ID, "input": {"text": 5}}),
    ("/v1/embeddings", {"model": HUB_ID, "input": [{"type": "image_url", "image_url": {"url": 5}}]}),
    ("/v1/embeddings", {"model": HUB_ID, "input": [{"type": "image_url", "image_url": "file:///etc/passwd"}]}),
    ("/v1/embeddings", {"model": HUB_ID, "input": [{"image": "data:image/png;base64," + "A" * 10 + "%%"}]}),
    ("/v1/embeddings", {"model": HUB_ID, "input": [True, False]}),
    ("/v1/embeddings", {"model": HUB_ID, "input": [{"text": ["a"]}]}),
    ("/v1/embeddings", {"model": {"id": HUB_ID}, "input": "x"}),
    ("/v1/embeddings", {"model": HUB_ID, "input": "x", "truncate": "maybe"}),
    (f"/models/{HUB_ID}", {"inputs": 5, "parameters": {"candidate_labels": ["a", "b"]}}),
    (f"/models/{HUB_ID}", {"inputs": b64(BAD_IMAGES["truncated jpeg"]), "parameters": {"candidate_labels": ["a", "b"]}}),
    (f"/models/{HUB_ID}", {"inputs": b64(GOOD), "parameters": "cat"}),
]


class GoodClient:
    """Sends correct image requests in a loop on its own connection; records every answer."""

    def __init__(self, server: str, reference) -> None:
        self.server = server
        self.expected = reference.image(GOOD)
        self.results: list[tuple[int, float]] = []  # (status, cosine to the reference)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = image_body(GOOD)
        with httpx.Client(base_url=self.server, timeout=60) as client:
            for _ in range(10_000):  # bounded; stops when told
                if self._stop.is_set():
                    return
                r = client.post("/v1/embeddings", json=body)
                similarity = cosine(r.json()["data"][0]["embedding"], self.expected) if r.status_code == 200 else 0.0
                self.results.append((r.status_code, float(similarity)))

    def __enter__(self) -> GoodClient:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.fixture(scope="module")
def good_client(server, reference):
    with GoodClient(server, reference) as good:
        yield good
    assert good.results, "the good client sent nothing"
    assert all(status == 200 and similarity >= 0.9999 for status, similarity in good.results), good.results


def assert_4xx(r: httpx.Response) -> dict:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    return assert_envelope(r, r.status_code)


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_image_files(client, good_client, name):
    error = assert_4xx(client.post("/v1/embeddings", json=image_body(BAD_IMAGES[name])))
    assert error["param"] == "input[0].image"


@pytest.mark.parametrize("name", list(BAD_JSON_BODIES))
def test_malformed_bodies(client, good_client, name):
    started = time.monotonic()
    r = client.post("/v1/embeddings", content=BAD_JSON_BODIES[name], headers={"content-type": "application/json"})
    assert_4xx(r)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("path, body", WRONG_TYPES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(WRONG_TYPES)])
def test_wrong_types_on_every_endpoint(client, good_client, path, body):
    assert_4xx(client.post(path, json=body))


@pytest.mark.parametrize("headers, content", [
    ({"content-type": "text/plain"}, b'{"model": "x", "input": "x"}'),
    ({"content-type": "application/x-www-form-urlencoded"}, b"model=x&input=y"),
    ({"content-type": "multipart/form-data; boundary=zz"}, b"--zz\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--zz--"),
    ({"content-type": "application/json", "content-encoding": "gzip"}, zlib.compress(b"{}")),
    ({"content-type": "application/json"}, b""),
])
def test_odd_content_types_and_empty_bodies(client, good_client, headers, content):
    assert_4xx(client.post("/v1/embeddings", content=content, headers=headers))


def test_many_bad_requests_at_once(server, good_client):
    """A burst of concurrent bad requests of every kind: all 4xx, the good client unharmed."""
    bodies = [image_body(data) for data in BAD_IMAGES.values()]

    def send(body):
        with httpx.Client(base_url=server, timeout=60) as c:
            return c.post("/v1/embeddings", json=body)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        for r in pool.map(send, bodies * 2):
            assert_4xx(r)


def post_json_text(client, path: str, text: str) -> httpx.Response:
    """Send JSON text as written (escapes included): no client-side encoder re-reads it."""
    return client.post(path, content=text.encode("utf-8"), headers={"content-type": "application/json"})


# Legal JSON escapes that are no Unicode text: lone UTF-16 surrogates (written as escapes,
# which is how they travel: UTF-8 cannot carry them).
LONE_SURROGATES = {"high": "\\ud800", "low": "\\udfff", "reversed pair": "\\ude00\\ud83d", "high at the end": "x\\udbff"}
M = HUB_ID
SURROGATE_FIELDS = {
    "embeddings input": ("/v1/embeddings", '{"model": "%s", "input": ["ok", "{s}"]}' % M),
    "embeddings model": ("/v1/embeddings", '{"model": "{s}", "input": "x"}'),
    "embeddings extra field": ("/v1/embeddings", '{"model": "%s", "input": "x", "user": "{s}"}' % M),
    "an object key": ("/v1/embeddings", '{"model": "%s", "input": [{"text": "x", "{s}": 1}]}' % M),
    "image data uri": ("/v1/embeddings", '{"model": "%s", "input": [{"image": "data:{s};base64,AAAA"}]}' % M),
    "classify label": ("/v1/classify", '{"model": "%s", "input": ["x"], "labels": ["a", "{s}"]}' % M),
    "classify template": ("/v1/classify", '{"model": "%s", "input": ["x"], "labels": ["a", "b"], "templates": ["{} {s}"]}' % M),
    "classify model": ("/v1/classify", '{"model": "{s}", "input": ["x"], "labels": ["a", "b"]}'),
    "tokenize input": ("/v1/tokenize", '{"model": "%s", "input": ["{s}"]}' % M),
    "tokenize model": ("/v1/tokenize", '{"model": "{s}", "input": "x"}'),
    "rerank document": ("/v1/rerank", '{"model": "%s", "query": "q", "documents": ["{s}"], "return_documents": true}' % M),
    "similarity query": ("/v1/similarity", '{"model": "%s", "queries": ["{s}"], "candidates": ["b"]}' % M),
    "hugging face label": (f"/models/{M}", '{"inputs": "AAAA", "parameters": {"candidate_labels": ["a", "{s}"]}}'),
}


@pytest.mark.parametrize("surrogate", list(LONE_SURROGATES))
@pytest.mark.parametrize("field", list(SURROGATE_FIELDS))
def test_lone_surrogates_are_refused_in_every_field(client, good_client, field, surrogate):
    path, template = SURROGATE_FIELDS[field]
    r = post_json_text(client, path, template.replace("{s}", LONE_SURROGATES[surrogate]))
    error = assert_4xx(r)
    assert r.status_code == 400 and error["code"] == "invalid_json" and "surrogate" in error["message"], error


def test_surrogate_pairs_are_text(client, good_client):
    """A pair is a character (an emoji): valid requests stay valid."""
    r = post_json_text(client, "/v1/embeddings", '{"model": "%s", "input": ["\\ud83d\\ude00 a cat"]}' % M)
    assert r.status_code == 200, r.text


def test_rerank_echoes_only_what_it_can_write(client, good_client):
    deep = "[" * 300 + "]" * 300
    body = '{"model": "%s", "query": "q", "documents": ["a", {"text": "b", "meta": %s}], "return_documents": %s}'
    error = assert_4xx(post_json_text(client, "/v1/rerank", body % (M, deep, "true")))
    assert error["param"] == "documents[1]", error
    assert post_json_text(client, "/v1/rerank", body % (M, deep, "false")).status_code == 200  # nothing to echo
    huge = "1" + "0" * 30  # beyond 64 bits: decoded as a number the encoder can write
    r = post_json_text(client, "/v1/rerank", body % (M, huge, "true"))
    assert r.status_code == 200, r.text
    assert {row["index"]: row["document"] for row in r.json()["results"]}[1] == {"text": "b", "meta": 1e30}


LONG_LABELS = ["a" * 1000, "b"]
PROMPT_TEXT_BOMBS = [  # few prompts, each or all of them far too long once written out
    ("/v1/classify", {"model": M, "input": ["x"], "labels": LONG_LABELS, "templates": ["{}" * 5000]},
     "templates[0]", "limits.max_text_chars"),
    ("/v1/classify", {"model": M, "input": ["x"], "labels": LONG_LABELS, "hypothesis_template": "{}" * 5000},
     "hypothesis_template", "limits.max_text_chars"),
    ("/v1/classify", {"model": M, "input": ["x"], "labels": ["x" * 20_001, "b"]}, "labels", "limits.max_text_chars"),
    (f"/models/{M}", {"inputs": b64(GOOD), "parameters": {"candidate_labels": LONG_LABELS,
                                                           "hypothesis_template": "{}" * 5000}},
     "parameters.hypothesis_template", "limits.max_text_chars"),
    ("/v1/classify", {"model": M, "input": ["x"], "labels": [f"{i} " + "x" * 200 for i in range(1000)],
                      "templates": [f"{j} {{}} " + "y" * 200 for j in range(20)]}, "labels", "limits.max_request_text_chars"),
]


@pytest.mark.parametrize("path, body, param, limit", PROMPT_TEXT_BOMBS, ids=[f"{p}-{i}" for i, (p, *_) in enumerate(PROMPT_TEXT_BOMBS)])
def test_prompt_text_is_bounded_before_it_is_written(client, good_client, path, body, param, limit):
    started = time.monotonic()
    r = client.post(path, json=body)
    error = assert_4xx(r)
    assert r.status_code == 413 and error["param"] == param and limit in error["message"], error
    assert time.monotonic() - started < 5


def one_bit_png(side: int) -> bytes:
    """A 1-bit PNG at the pixel limit: a few kB on the wire, `side`^2 pixels to decode."""
    return encode(Image.new("1", (side, side)), "PNG")


def test_request_pixels_are_bounded_before_decoding(client, good_client):
    """Six images at the per-image pixel limit (5 kB each) exceed the per-request total:
    refused from the headers alone, naming the limit and the first image over it."""
    side = int(40_000_000 ** 0.5)  # LimitsConfig.max_image_pixels
    started = time.monotonic()
    r = client.post("/v1/embeddings", json={"model": M, "input": [{"image": b64(one_bit_png(side))}] * 6})
    error = assert_4xx(r)
    assert r.status_code == 413 and error["param"] == "input[5].image", error
    assert "limits.max_request_pixels" in error["message"]
    assert time.monotonic() - started < 5


def test_request_characters_are_bounded(client, good_client):
    texts = ["word " * 4000] * 51  # 20,000 characters each (the per-text limit), 1,020,000 in all
    for path in ("/v1/embeddings", "/v1/tokenize"):
        r = client.post(path, json={"model": M, "input": texts})
        error = assert_4xx(r)
        assert r.status_code == 413 and error["param"] == "input" and "limits.max_request_text_chars" in error["message"]
    assert client.post("/v1/embeddings", json={"model": M, "input": texts[:50]}).status_code == 200


def test_phone_photos_with_a_multi_picture_segment_are_jpegs(client, good_client, reference):
    """Pillow opens a JPEG with an MPF segment as MPO: it is embedded as the JPEG it starts with."""
    first, second = natural_image(64, 48, seed=31), natural_image(64, 48, seed=32)
    mpo = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(__import__("io").BytesIO(mpo)).format == "MPO"
    r = client.post("/v1/embeddings", json=image_body(mpo))
    assert r.status_code == 200, r.text
    assert cosine(r.json()["data"][0]["embedding"], reference.image(encode(first, "JPEG"))) >= 0.9999


# --- request heads: slow and huge headers, on both ingresses ------------------------------


@pytest.fixture(scope="module")
def ingresses(server_port, cluster_env) -> dict[str, int]:
    """Ports of the session cluster's two ingresses: HAProxy, and the head's Python proxy
    (Serve's fallback behind HAProxy, the same ProxyActor `--ingress proxy` runs on every node)."""
    proxy = int(cluster_env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"])
    deadline = time.monotonic() + 60
    while True:  # the fallback proxy starts beside HAProxy; give it a moment on a busy machine
        try:
            if httpx.get(f"http://127.0.0.1:{proxy}/v1/models", timeout=10).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the Python proxy did not answer"
        time.sleep(0.5)
    return {"haproxy": server_port, "proxy": proxy}


def read_answer(sock: socket.socket, limit_s: float) -> bytes:
    """What the server sends until it closes the connection (at most `limit_s` and 64 KiB)."""
    sock.settimeout(limit_s)
    out = b""
    try:
        while len(out) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:  # reset after the answer, or nothing within limit_s
        pass
    return out


def status_of(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None


@pytest.mark.parametrize("ingress", ["haproxy", "proxy"])
def test_a_client_sending_headers_slowly_is_cut_off(ingresses, cluster_env, good_client, ingress):
    """One header line every 2 s: the connection ends with a 408 within the header timeout,
    however long the client would go on."""
    timeout_s = float(cluster_env["CLIP_SERVE_HEADER_TIMEOUT_S"])
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", ingresses[ingress])) as sock:
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        for i in range(int(timeout_s) + 30):  # bounded: 60 s and more of trickling if never cut off
            try:
                sock.sendall(b"X-Slow-%d: 1\r\n" % i)
            except OSError:
                break
            answer = read_answer(sock, 2.0)
            if answer:
                break
    elapsed = time.monotonic() - started
    assert elapsed < timeout_s + 5, (elapsed, answer[:200])
    assert status_of(answer) == 408 or answer == b"", answer[:300]
    if ingress == "proxy":  # HAProxy answers with its own page; our servers with the envelope
        assert b'"code":"header_timeout"' in answer, answer[:300]


@pytest.mark.parametrize("ingress", ["haproxy", "proxy"])
@pytest.mark.parametrize("shape", ["one 16 MB header", "4096 headers of 4 KB", "a 1 MB request line"])
def test_huge_request_heads_are_refused_quickly(ingresses, cluster_env, good_client, ingress, shape):
    big = {"one 16 MB header": b"X-Big: " + b"a" * (16 * 2**20) + b"\r\n",
           "4096 headers of 4 KB": b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 4096) for i in range(4096)),
           "a 1 MB request line": b""}[shape]
    path = b"/v1/models" + (b"?q=" + b"c" * 2**20 if shape == "a 1 MB request line" else b"")
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", ingresses[ingress])) as sock:
        try:
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
        except OSError:  # refused while still sending
            pass
        answer = read_answer(sock, 10.0)
    assert time.monotonic() - started < 10, shape
    assert status_of(answer) in (400, 431, None), answer[:300]  # None: closed without an answer
    if ingress == "proxy":
        assert status_of(answer) == 431 and b'"code":"request_headers_too_large"' in answer, answer[:300]


@pytest.mark.parametrize("ingress", ["haproxy", "proxy"])
def test_large_but_valid_heads_and_kept_alive_connections_still_work(ingresses, cluster_env, good_client, ingress):
    """Just under the limit is served; a kept-alive connection idle for longer than the
    header timeout is not cut (that is the keep-alive timeout's job) and answers again."""
    import http.client
    import json

    limit = int(cluster_env["CLIP_SERVE_MAX_HEADER_BYTES"])
    headers = {f"x-pad-{i}": "p" * 1000 for i in range((limit - 2048) // 1024)}
    conn = http.client.HTTPConnection("127.0.0.1", ingresses[ingress], timeout=60)
    try:
        conn.request("GET", "/v1/models", headers=headers)
        first = conn.getresponse()
        assert first.status == 200 and first.read()
        sock = conn.sock
        time.sleep(float(cluster_env["CLIP_SERVE_HEADER_TIMEOUT_S"]) + 1)
        conn.request("POST", "/v1/embeddings", body=json.dumps(image_body(GOOD)),
                     headers={**headers, "content-type": "application/json"})
        assert conn.sock is sock  # the same connection, not a new one
        second = conn.getresponse()
        assert second.status == 200, second.read()[:300]
        assert json.loads(second.read())["data"]
    finally:
        conn.close()


# --- image URLs that spell a denied address another way ------------------------------------

URLS_PREFIX = "/urls"


@pytest.fixture(scope="module")
def denied_images():
    """The image server whose address (127.0.0.1) the URL app denies."""
    with ImageServer("127.0.0.1") as server:
        yield server


@pytest.fixture(scope="module")
def open_images():
    """A second image server, on 127.0.0.3, that the URL app may fetch from: the first hop of
    redirects into the denied one."""
    with ImageServer("127.0.0.3") as server:
        yield server


@pytest.fixture(scope="module")
def url_app(server_port, client, wide_model_dir):
    from deployments.launch import app_config
    from deployments.launch import deploy as apply

    args = {"variants": [{"id": HUB_ID, "dtype": "float32", "cpu_threads": 1}],
            "image_urls": {"enabled": True, "allow_private_networks": True, "deny_hosts": ["127.0.0.1"],
                           "timeout_s": 3, "max_redirects": 2}}
    tiny = {"ray_actor_options": {"num_cpus": 0.1}}
    deployments = [{"name": name, **tiny} for name in
                   ("Router", "ImageEncoder:openai--clip-vit-base-patch32", "TextEncoder:openai--clip-vit-base-patch32")]
    session_app = app_config(app_args(wide_model_dir))
    urls = {**app_config(args, deployments), "name": "urls", "route_prefix": URLS_PREFIX}
    apply([session_app, urls], "127.0.0.1", server_port, blocking=False)
    try:
        deadline = time.monotonic() + 240  # generous: the machine is shared
        while client.get(f"{URLS_PREFIX}/ready").status_code != 200:
            assert time.monotonic() < deadline, "the URL app did not become ready"
            time.sleep(0.5)
        yield client
    finally:
        apply([session_app], "127.0.0.1", server_port)


# 127.0.0.1 in every other spelling: IPv6 forms that only spell it, fullwidth digits and
# dots, numeric forms, and a name that resolves to it (localhost, from /etc/hosts).
DENIED_ALIASES = ["[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::ffff:0:7f00:1]", "[::127.0.0.1]", "[64:ff9b::7f00:1]",
                  "１２７．０．０．１", "１２７．１", "2130706433", "0x7f.1", "localhost"]


@pytest.mark.parametrize("how", ["direct", "redirect"])
@pytest.mark.parametrize("host", DENIED_ALIASES)
def test_a_denied_address_in_any_spelling_is_never_fetched(url_app, good_client, denied_images, open_images,
                                                           reference, how, host):
    url = denied_images.url("/cat.png", host)
    if how == "redirect":
        url = open_images.url(f"/redirect?to={quote(url, safe=':/[]')}")
    before = dict(denied_images.hits)
    started = time.monotonic()
    r = url_app.post(f"{URLS_PREFIX}/v1/embeddings", json={"model": HUB_ID, "input": ["fine text", {"image": url}]})
    error = assert_4xx(r)
    assert r.status_code == 400 and error["code"] == "image_url_blocked", error
    assert error["param"] == "input[1].image" and "denied" in error["message"], error
    assert time.monotonic() - started < 3 + 2.5  # within the fetch deadline
    assert denied_images.hits == before  # nothing reached the denied address
    fine = url_app.post(f"{URLS_PREFIX}/v1/embeddings",
                        json={"model": HUB_ID, "input": [{"image": open_images.url("/cat.png")}]})
    assert fine.status_code == 200, fine.text  # a valid URL still works, from an address not denied
    assert cosine(fine.json()["data"][0]["embedding"], reference.image(CAT_PNG)) >= 0.9999
