"""Bad classify/rerank/similarity/tokenize requests: 4xx in the OpenAI envelope naming the field."""

from __future__ import annotations

import pytest
from support.helpers import HUB_ID, b64, encode, natural_image
from test_errors_api import assert_envelope

from deployments.protocol.errors import APIError
from deployments.protocol.labels import PromptLimits, build_prompts

IMG = {"image": b64(encode(natural_image(30, 30, seed=90)))}
OK = {"model": HUB_ID, "input": [IMG]}
LABELS = ["a", "b"]

CASES = [
    # (name, path, body, status, param)
    ("one label", "/v1/classify", {**OK, "labels": ["only"]}, 400, "labels"),
    ("no labels", "/v1/classify", {**OK, "labels": []}, 400, "labels"),
    ("labels over the limit", "/v1/classify", {**OK, "labels": [f"l{i}" for i in range(1001)]}, 400, "labels"),
    ("empty label", "/v1/classify", {**OK, "labels": ["a", " "]}, 400, "labels[1]"),
    ("duplicate label", "/v1/classify", {**OK, "labels": ["a", "b", "a"]}, 400, "labels[2]"),
    ("labels not strings", "/v1/classify", {**OK, "labels": ["a", 3]}, 400, "labels[1]"),
    ("empty template", "/v1/classify", {**OK, "labels": LABELS, "hypothesis_template": ""}, 400, "hypothesis_template"),
    ("template without {}", "/v1/classify", {**OK, "labels": LABELS, "hypothesis_template": "a photo"}, 400,
     "hypothesis_template"),
    ("empty template list", "/v1/classify", {**OK, "labels": LABELS, "templates": []}, 400, "templates"),
    ("template in list without {}", "/v1/classify", {**OK, "labels": LABELS, "templates": ["{}", "x"]}, 400,
     "templates[1]"),
    ("duplicate templates", "/v1/classify", {**OK, "labels": LABELS, "templates": ["{}", "{}"]}, 400, "templates[1]"),
    ("template and templates", "/v1/classify",
     {**OK, "labels": LABELS, "templates": ["{}"], "hypothesis_template": "{}"}, 400, "templates"),
    ("top_k zero", "/v1/classify", {**OK, "labels": LABELS, "top_k": 0}, 400, "top_k"),
    ("unknown model", "/v1/classify", {**OK, "model": "no/such", "labels": LABELS}, 404, "model"),
    ("bad image", "/v1/classify", {**OK, "input": [{"image": "%%%"}], "labels": LABELS}, 400, "input[0].image"),
    ("long label, truncation off", "/v1/classify", {**OK, "labels": ["a", "word " * 100], "truncate": False}, 400,
     "labels[1]"),
    ("top_n zero", "/v1/rerank", {"model": HUB_ID, "query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n"),
    ("no documents", "/v1/rerank", {"model": HUB_ID, "query": "q", "documents": []}, 400, "documents"),
    ("bad document", "/v1/rerank", {"model": HUB_ID, "query": "q", "documents": ["d", {"audio": 1}]}, 400,
     "documents[1]"),
    ("empty query", "/v1/rerank", {"model": HUB_ID, "query": "", "documents": ["d"]}, 400, "query"),
    ("unknown rerank model", "/v1/rerank", {"model": "no/such", "query": "q", "documents": ["d"]}, 404, "model"),
    ("no candidates", "/v1/similarity", {"model": HUB_ID, "queries": ["q"], "candidates": []}, 400, "candidates"),
    ("too many items", "/v1/similarity", {"model": HUB_ID, "queries": ["q"] * 40, "candidates": ["c"] * 40}, 413,
     "candidates"),
    ("tokenize nothing", "/v1/tokenize", {"model": HUB_ID, "input": []}, 400, "input"),
    ("tokenize non-text", "/v1/tokenize", {"model": HUB_ID, "input": [[1, 2]]}, 400, "input"),
    ("tokenize too long", "/v1/tokenize", {"model": HUB_ID, "input": ["a" * 20_001]}, 413, "input[0]"),
    ("hf without labels", f"/models/{HUB_ID}", {"inputs": IMG["image"], "parameters": {}}, 400,
     "parameters.candidate_labels"),
    ("hf one label", f"/models/{HUB_ID}", {"inputs": IMG["image"], "parameters": {"candidate_labels": ["x"]}}, 400,
     "parameters.candidate_labels"),
]


@pytest.mark.parametrize("path, body, status, param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_requests(client, path, body, status, param):
    assert_envelope(client.post(path, json=body), status, param)


def test_prompt_limits_are_configurable():
    limits = PromptLimits(max_labels=3, max_templates=2, max_prompts=4, max_prompt_chars=100, max_total_chars=1000)
    with pytest.raises(APIError) as exc:
        build_prompts(["a", "b", "c", "d"], limits)
    assert exc.value.param == "labels" and exc.value.code == "limit_exceeded"
    with pytest.raises(APIError) as exc:
        build_prompts(["a", "b"], limits, templates=["{}", "x {}", "y {}"])
    assert exc.value.param == "templates"
    with pytest.raises(APIError) as exc:
        build_prompts(["a", "b", "c"], limits, templates=["{}", "x {}"])  # 6 prompts > 4
    assert exc.value.param == "templates" and "6 prompts" in exc.value.message
    prompts = build_prompts(["a", "b"], limits, templates=["{}", "x {}"])
    assert prompts.prompts == ["a", "x a", "b", "x b"] and prompts.index == [[0, 1], [2, 3]]


def test_colliding_prompts_are_embedded_once():
    """Two (label, template) pairs that spell the same prompt share one embedding."""
    prompts = build_prompts(["x", "y"], PromptLimits(10, 10, 100, 100, 1000), templates=["{}{}", "x{}"])
    assert prompts.prompts == ["xx", "yy", "xy"] and prompts.index == [[0, 0], [1, 2]]
