"""/v1/embeddings and /v1/models over HTTP on real Ray Serve, checked against transformers."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from support.helpers import HUB_ID, b64, cosine, data_uri, encode, natural_image

PNG = encode(natural_image(97, 61, seed=1), "PNG")
JPEG = encode(natural_image(61, 97, seed=2), "JPEG", quality=90)


def embed(client, **body) -> list[np.ndarray]:
    r = client.post("/v1/embeddings", json={"model": HUB_ID, **body})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return [np.asarray(d["embedding"], dtype=np.float32) for d in data]


def test_models_describe_each_variant(client):
    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert set(models) == {HUB_ID, "local/tiny-wide"}
    b32 = models[HUB_ID]
    assert (b32["embedding_dimension"], b32["image_size"], b32["context_length"]) == (16, [32, 32], 77)
    assert (b32["towers"], b32["backend"], b32["dtype"], b32["ready"]) == (["image", "text"], "torch", "float32", True)
    assert b32["aliases"] == ["clip-b32"] and b32["object"] == "model"
    assert models["local/tiny-wide"]["embedding_dimension"] == 24
    assert client.get("/v1/models/clip-b32").json()["id"] == HUB_ID
    assert client.get(f"/v1/models/{HUB_ID}").json()["id"] == HUB_ID


def test_health_and_readiness(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and set(ready.json()["models"]) == {HUB_ID, "local/tiny-wide"}


@pytest.mark.parametrize("data", [PNG, JPEG], ids=["png", "jpeg"])
def test_image_parity_every_input_form(client, reference, data):
    mime = "image/png" if data is PNG else "image/jpeg"
    forms = [
        {"type": "image_url", "image_url": {"url": data_uri(data, mime)}},
        {"type": "image_url", "image_url": data_uri(data, mime)},
        {"image": b64(data)},
        {"image": data_uri(data, mime)},
    ]
    vectors = embed(client, input=forms) + embed(client, input=[b64(data)], modality="image")
    expected = reference.image(data)
    for v in vectors:
        assert cosine(v, expected) >= 0.9999


def test_second_variant_from_local_folder(client, wide_reference):
    (vec,) = embed(client, model="local/tiny-wide", input=[{"image": b64(PNG)}])
    assert vec.shape == (24,) and cosine(vec, wide_reference.image(PNG)) >= 0.9999
    (tvec,) = embed(client, model="local/tiny-wide", input="a red square")
    assert cosine(tvec, wide_reference.texts(["a red square"])[0]) >= 0.9999


def test_text_parity_with_and_without_truncation(client, reference):
    texts = ["a photo of a cat", "A DIAGRAM of a Network!", "word " * 150]
    vectors = embed(client, input=texts)
    assert (cosine(np.stack(vectors), reference.texts(texts)) >= 0.9999).all()
    short = embed(client, input=texts[:2], truncate=False)
    assert (cosine(np.stack(short), reference.texts(texts[:2])) >= 0.9999).all()


def test_mixed_list_keeps_input_order(client, reference):
    body = ["a cat", {"image": b64(PNG)}, {"text": "a dog"}, {"image": b64(JPEG)}, [320, 1125]]
    r = client.post("/v1/embeddings", json={"model": HUB_ID, "input": body})
    vectors = [np.asarray(d["embedding"]) for d in r.json()["data"]]
    expected = [reference.texts(["a cat"])[0], reference.image(PNG), reference.texts(["a dog"])[0],
                reference.image(JPEG), reference.texts(["a photo"])[0]]
    for v, e in zip(vectors, expected):
        assert cosine(v, e) >= 0.9999
    usage = r.json()["usage"]
    token_counts = sum(len(reference.token_ids(t)) for t in ("a cat", "a dog", "a photo"))
    assert usage == {"prompt_tokens": token_counts, "total_tokens": token_counts, "images": 2}


def test_token_arrays(client, reference):
    ids = reference.token_ids("a photo of a cat")
    single = embed(client, input=ids)
    batch = embed(client, input=[ids, ids[1:-1]])
    expected = reference.texts(["a photo of a cat"])[0]
    for v in single + batch:
        assert cosine(v, expected) >= 0.9999


def test_base64_encoding_is_little_endian_float32(client):
    floats = embed(client, input=["a cat", {"image": b64(PNG)}])
    r = client.post("/v1/embeddings", json={"model": HUB_ID, "input": ["a cat", {"image": b64(PNG)}],
                                            "encoding_format": "base64"})
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]]
    for a, b in zip(floats, decoded):
        np.testing.assert_array_equal(a, b)


def test_vectors_are_unit_length_and_dimensions_checked(client):
    (vec,) = embed(client, input="hello", dimensions=16)
    assert abs(np.linalg.norm(vec) - 1) < 1e-5
    r = client.post("/v1/embeddings", json={"model": HUB_ID, "input": "hello", "dimensions": 8})
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"


def test_alias_resolves_and_response_names_canonical_model(client):
    r = client.post("/v1/embeddings", json={"model": "clip-b32", "input": "hi", "user": "u1", "unknown_extra": 1})
    assert r.status_code == 200 and r.json()["model"] == HUB_ID


def test_concurrent_requests_are_coalesced(client, reference):
    """Many concurrent one-image requests: all correct, and fewer encoder forwards than images."""
    import concurrent.futures

    from ray import serve

    encoder = serve.get_deployment_handle("ImageEncoder:openai--clip-vit-base-patch32", app_name="clip")
    before = encoder.stats.remote().result()
    images = [encode(natural_image(40, 40, seed=100 + i)) for i in range(48)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda d: embed(client, input=[{"image": b64(d)}])[0], images))
    for data, vec in zip(images[:5], results[:5]):
        assert cosine(vec, reference.image(data)) >= 0.9999
    after = encoder.stats.remote().result()
    assert after["items"] - before["items"] == 48
    assert after["forwards"] - before["forwards"] < 48
