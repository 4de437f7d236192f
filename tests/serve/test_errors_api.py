"""Bad requests get the OpenAI error envelope with the right status and `param`, and the
service keeps serving good requests, including ones that share a batch with bad ones."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
from support.helpers import HUB_ID, b64, cosine, encode, natural_image

GOOD_PNG = encode(natural_image(40, 40, seed=7))


def assert_envelope(r, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def assert_still_serving(client, reference):
    r = client.post("/v1/embeddings", json={"model": HUB_ID, "input": [{"image": b64(GOOD_PNG)}]})
    assert r.status_code == 200
    assert cosine(r.json()["data"][0]["embedding"], reference.image(GOOD_PNG)) >= 0.9999


CASES = [
    ("unknown model", {"model": "nope/missing", "input": "x"}, 404, "model", "model_not_found"),
    ("empty list", {"model": HUB_ID, "input": []}, 400, "input", None),
    ("empty string", {"model": HUB_ID, "input": ""}, 400, "input", None),
    ("empty string in list", {"model": HUB_ID, "input": ["ok", ""]}, 400, "input[1]", None),
    ("undecodable image", {"model": HUB_ID, "input": ["ok", {"image": b64(b"not an image at all")}]}, 400,
     "input[1].image", "invalid_image"),
    ("garbage base64", {"model": HUB_ID, "input": [{"image": "%%%"}]}, 400, "input[0].image", "invalid_image"),
    ("image url refused", {"model": HUB_ID, "input": [{"type": "image_url", "image_url": {"url": "http://10.0.0.1/a.png"}}]},
     400, "input[0].image_url.url", "invalid_image"),
    ("over-long text, truncation off", {"model": HUB_ID, "input": ["ok", "word " * 100], "truncate": False}, 400,
     "input[1]", "context_length_exceeded"),
    ("over-long tokens, truncation off", {"model": HUB_ID, "input": [[320] * 90], "truncate": False}, 400,
     "input[0]", "context_length_exceeded"),
    ("token id out of range", {"model": HUB_ID, "input": [[320, 99999]]}, 400, "input[0]", None),
    ("input of wrong type", {"model": HUB_ID, "input": 5}, 400, "input", None),
    ("nested junk", {"model": HUB_ID, "input": [[["a"]]]}, 400, "input[0]", None),
    ("object of unknown shape", {"model": HUB_ID, "input": [{"audio": "x"}]}, 400, "input[0]", None),
    ("model of wrong type", {"model": 12, "input": "x"}, 400, "model", None),
    ("missing model", {"input": "x"}, 400, "model", None),
    ("missing input", {"model": HUB_ID}, 400, "input", None),
    ("bad encoding_format", {"model": HUB_ID, "input": "x", "encoding_format": "hex"}, 400, "encoding_format", None),
    ("bad modality", {"model": HUB_ID, "input": "x", "modality": "audio"}, 400, "modality", None),
    ("bad dimensions", {"model": HUB_ID, "input": "x", "dimensions": 0}, 400, "dimensions", None),
    ("too many inputs", {"model": HUB_ID, "input": ["x"] * 65}, 413, "input", "request_too_large"),
    ("text over char limit", {"model": HUB_ID, "input": ["a" * 20_001]}, 413, "input[0]", None),
    ("image over byte limit", {"model": HUB_ID, "input": [{"image": "A" * 2**21}]}, 413,
     "input[0].image", "image_too_large"),
]


@pytest.mark.parametrize("body, status, param, code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_envelopes(client, reference, body, status, param, code):
    assert_envelope(client.post("/v1/embeddings", json=body), status, param, code)
    assert_still_serving(client, reference)


def test_body_problems(client, reference):
    assert_envelope(client.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}),
                    400, code="invalid_json")
    assert_envelope(client.post("/v1/embeddings", content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    assert_envelope(client.post("/v1/embeddings", content=b"\xff\xfe\x00garbage",
                                headers={"content-type": "application/json"}), 400)
    big = b'{"model": "x", "input": "' + b"a" * (5 * 2**20) + b'"}'
    assert_envelope(client.post("/v1/embeddings", content=big, headers={"content-type": "application/json"}), 413)

    def chunks():
        yield b'{"model": "x", "input": "'
        for _ in range(80):
            yield b"a" * 65536
        yield b'"}'

    assert_envelope(client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert_still_serving(client, reference)


def test_unknown_routes_and_methods(client):
    assert_envelope(client.get("/v1/nothing-here"), 404, code="not_found")
    assert_envelope(client.get("/v1/embeddings"), 405, code="method_not_allowed")
    assert_envelope(client.get("/v1/models/not-a-model"), 404, code="model_not_found")


def test_a_corrupt_image_fails_only_its_own_request(client, reference):
    """Concurrent good and bad requests: every good one is answered correctly."""
    good = [encode(natural_image(40, 40, seed=200 + i)) for i in range(12)]
    bodies = [{"model": HUB_ID, "input": [{"image": b64(d)}]} for d in good]
    bodies.insert(5, {"model": HUB_ID, "input": [{"image": b64(GOOD_PNG[:60])}]})  # truncated PNG
    with concurrent.futures.ThreadPoolExecutor(13) as pool:
        responses = list(pool.map(lambda b: client.post("/v1/embeddings", json=b), bodies))
    assert_envelope(responses.pop(5), 400, "input[0].image", "invalid_image")
    for data, r in zip(good, responses):
        assert r.status_code == 200
        assert cosine(np.asarray(r.json()["data"][0]["embedding"]), reference.image(data)) >= 0.9999
