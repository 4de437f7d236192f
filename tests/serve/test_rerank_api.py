"""/v1/rerank, /v1/similarity and /v1/tokenize on real Ray Serve, checked against a direct
computation on transformers' embeddings of the same weights."""

from __future__ import annotations

import numpy as np
import pytest
from support.helpers import HUB_ID, b64, encode, natural_image

IMAGES = [encode(natural_image(60, 60, seed=50 + i)) for i in range(4)]
TEXTS = ["a red square", "a photo of a cat", "an aerial view of a city", "a bowl of soup"]


def post(client, path: str, **body) -> dict:
    r = client.post(path, json={"model": HUB_ID, **body})
    assert r.status_code == 200, r.text
    return r.json()


def direct_order(query: np.ndarray, documents: np.ndarray) -> tuple[list[int], np.ndarray]:
    scores = documents.astype(np.float64) @ query.astype(np.float64)
    return sorted(range(len(scores)), key=lambda j: -scores[j]), scores


@pytest.mark.parametrize("direction", ["text->image", "image->text", "image->image", "text->mixed"])
def test_rerank_orders_equal_a_direct_cosine_sort(client, reference, direction):
    image_vectors = np.stack([reference.image(d) for d in IMAGES])
    text_vectors = reference.texts(TEXTS)
    image_docs = [{"image": b64(d)} for d in IMAGES]
    if direction == "text->image":
        query, q, docs, d = "a photo of a cat", reference.texts(["a photo of a cat"])[0], image_docs, image_vectors
    elif direction == "image->text":
        query, q, docs, d = {"image": b64(IMAGES[0])}, image_vectors[0], TEXTS, text_vectors
    elif direction == "image->image":
        query, q, docs, d = {"image": b64(IMAGES[3])}, image_vectors[3], image_docs, image_vectors
    else:
        query, q = {"text": "a bowl of soup"}, reference.texts(["a bowl of soup"])[0]
        docs, d = [TEXTS[0], image_docs[1], {"text": TEXTS[2]}, image_docs[2]], np.stack(
            [text_vectors[0], image_vectors[1], text_vectors[2], image_vectors[2]])
    out = post(client, "/v1/rerank", query=query, documents=docs)
    order, scores = direct_order(q, d)
    assert [r["index"] for r in out["results"]] == order
    assert np.abs([r["relevance_score"] for r in out["results"]] - scores[order]).max() <= 1e-5
    assert out["object"] == "rerank" and out["model"] == HUB_ID
    assert all("document" not in r for r in out["results"])
    if direction == "image->image":
        assert out["results"][0]["index"] == 3 and out["results"][0]["relevance_score"] == pytest.approx(1.0, abs=1e-5)


def test_rerank_top_n_and_return_documents(client, reference):
    out = post(client, "/v1/rerank", query="a cat", documents=TEXTS, top_n=2, return_documents=True)
    order, _ = direct_order(reference.texts(["a cat"])[0], reference.texts(TEXTS))
    assert [r["index"] for r in out["results"]] == order[:2]
    assert [r["document"] for r in out["results"]] == [TEXTS[j] for j in order[:2]]
    assert len(post(client, "/v1/rerank", query="a cat", documents=TEXTS, top_n=50)["results"]) == 4
    usage = out["usage"]
    assert usage["prompt_tokens"] == sum(len(reference.token_ids(t)) for t in ["a cat", *TEXTS])


def test_similarity_matrix_and_probabilities(client, reference):
    queries = [{"image": b64(IMAGES[0])}, "a photo of a cat"]
    candidates = [*TEXTS, {"image": b64(IMAGES[1])}]
    out = post(client, "/v1/similarity", queries=queries, candidates=candidates)
    q = np.stack([reference.image(IMAGES[0]), reference.texts(["a photo of a cat"])[0]])
    c = np.vstack([reference.texts(TEXTS), reference.image(IMAGES[1])[None]])
    cos = q.astype(np.float64) @ c.T.astype(np.float64)
    logits = reference.logit_scale * cos
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    assert [row["index"] for row in out["data"]] == [0, 1]
    assert np.abs(np.array([row["cosine"] for row in out["data"]]) - cos).max() <= 1e-5
    assert np.abs(np.array([row["probabilities"] for row in out["data"]]) - probs).max() <= 1e-5
    assert abs(out["logit_scale"] - reference.logit_scale) <= 1e-4 and out["usage"]["images"] == 2


def test_image_text_probabilities_equal_transformers(client, reference):
    """similarity with images as queries and texts as candidates is CLIP's own zero-shot."""
    out = post(client, "/v1/similarity", queries=[{"image": b64(d)} for d in IMAGES[:2]], candidates=TEXTS)
    expected = reference.zero_shot(IMAGES[:2], TEXTS)
    assert np.abs(np.array([row["probabilities"] for row in out["data"]]) - expected).max() <= 1e-5


def test_tokenize_matches_the_checkpoint_tokenizer(client, reference):
    long = "word " * 100
    out = post(client, "/v1/tokenize", input=["a photo of a cat", long])
    assert out["context_length"] == 77 and out["model"] == HUB_ID
    first, second = out["data"]
    assert first["tokens"] == reference.token_ids("a photo of a cat") == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (first["count"], first["truncated"]) == (7, False)
    assert second["tokens"] == reference.token_ids(long) and (second["count"], second["truncated"]) == (102, True)
    single = post(client, "/v1/tokenize", input="hello world")
    assert single["data"][0]["tokens"] == reference.token_ids("hello world")
    # Token strings and character spans (docs/api.md's example): 🐈 is one character, two tokens.
    shown = post(client, "/v1/tokenize", input="A Photo,  café 🐈")["data"][0]
    assert shown["token_strings"] == ["<|startoftext|>", "a</w>", "photo</w>", ",</w>", "cafÃ©</w>", "ðŁĲ", "Ī</w>",
                                      "<|endoftext|>"]
    assert shown["offsets"] == [[0, 0], [0, 1], [2, 7], [7, 8], [10, 14], [15, 16], [15, 16], [16, 16]]
    assert len(second["offsets"]) == len(second["token_strings"]) == 102
