"""Reliability and security on real Ray Serve, in a third application ("rel", under /rel)
beside the session's app: API keys, image URLs fetched from a local image server (the only
place an explicit test allowance lets it reach), the router's deadline and admission
control, client disconnects, and encoder calls retried when their replica is killed."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import numpy as np
import pytest
from support.cluster import app_args, apply
from support.helpers import HUB_ID, b64, cosine, data_uri, encode, natural_image, wait_ready
from support.image_server import CAT_PNG, ImageServer
from test_errors_api import assert_envelope

from deployments.launch import app_config

REL = "rel"
KEY = "sk-rel-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
IMAGE = "ImageEncoder:openai--clip-vit-base-patch32"
TEXT = "TextEncoder:openai--clip-vit-base-patch32"
DEADLINE_S = 6.0
MAX_CONCURRENT = 4
HOOKS = {"CLIP_SERVE_TEST_HOOKS": "1"}


def rel_apps(wide_model_dir) -> list[dict]:
    args = {
        "variants": [{"id": HUB_ID, "dtype": "float32", "cpu_threads": 1}],
        "router": {"request_timeout_s": DEADLINE_S, "max_concurrent_requests": MAX_CONCURRENT},
        "auth": {"enabled": True},
        # the test allowance: only the local image server's address, and private networks
        # (loopback) explicitly on for this app; every other address stays refused
        "image_urls": {"enabled": True, "allow_hosts": ["127.0.0.1"], "allow_private_networks": True,
                       "timeout_s": 3, "max_redirects": 2, "max_bytes": 200_000, "max_urls_per_request": 2},
    }
    encoder = {"ray_actor_options": {"num_cpus": 0.1, "runtime_env": {"env_vars": HOOKS}}}
    deployments = [
        {"name": "Router", "ray_actor_options": {"num_cpus": 0.1,
                                                 "runtime_env": {"env_vars": {"CLIP_SERVE_API_KEYS": KEY}}}},
        {"name": IMAGE, "num_replicas": 2, **encoder},
        {"name": TEXT, "num_replicas": 1, **encoder},
    ]
    rel = {**app_config(args, deployments), "name": REL, "route_prefix": "/rel"}
    return [app_config(app_args(wide_model_dir)), rel]


@pytest.fixture(scope="module")
def rel(server_port, client, wide_model_dir):
    try:
        apply(rel_apps(wide_model_dir), server_port)
        wait_ready(f"http://127.0.0.1:{server_port}/rel")
        yield client
    finally:
        apply([app_config(app_args(wide_model_dir))], server_port)  # removes "rel"


@pytest.fixture(scope="module")
def images():
    with ImageServer() as server:
        yield server


def handle(name: str):
    from ray import serve

    return serve.get_deployment_handle(name, app_name=REL)


def router_stats() -> dict:
    return handle("Router").stats.remote().result()


def wait_idle(timeout_s: float = 30) -> dict:
    """The router's work in progress drains to nothing (no leaked requests, items or calls)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = router_stats()
        busy = stats["active_requests"] or stats["label_encodes_inflight"] or any(
            c["pending"] or c["inflight"] for c in stats["coalescers"].values())
        if not busy:
            return stats
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)


def embed(client, inputs, headers=AUTH, **kw) -> httpx.Response:
    return client.post("/rel/v1/embeddings", json={"model": HUB_ID, "input": inputs}, headers=headers, **kw)


def assert_text_ok(client, reference, text: str = "a reliable cat") -> None:
    r = embed(client, [text])
    assert r.status_code == 200, r.text
    assert cosine(r.json()["data"][0]["embedding"], reference.texts([text])[0]) >= 0.9999


# --- auth ----------------------------------------------------------------------------------


def test_api_routes_need_the_key_probes_and_docs_do_not(rel, reference, images):
    for path in ("/rel/health", "/rel/ready", "/rel/openapi.json", "/rel/docs"):
        assert rel.get(path).status_code == 200, path
    hits = dict(images.hits)
    no_key = embed(rel, [{"image": images.url("/cat.png")}], headers={})
    assert_envelope(no_key, 401, code="missing_api_key")
    assert no_key.headers["www-authenticate"].startswith("Bearer")
    assert_envelope(embed(rel, ["x"], headers={"Authorization": "Bearer wrong-key-0123456789"}), 401,
                    code="invalid_api_key")
    assert_envelope(rel.get("/rel/v1/models"), 401)
    assert images.hits == hits  # refused before any fetch
    huge = b'{"model": "x", "input": "' + b"a" * (5 * 2**20) + b'"}'
    assert_envelope(rel.post("/rel/v1/embeddings", content=huge, headers={"content-type": "application/json"}),
                    401)  # before the body is even read (over the size limit too)
    models = rel.get("/rel/v1/models", headers=AUTH)
    assert models.status_code == 200 and KEY not in models.text
    assert_text_ok(rel, reference)


def test_playground_loads_without_a_key_and_the_clients_send_theirs(rel, server, reference):
    """The browser playground's files are public; its API calls, the command-line client's
    and the openai SDK's carry the key as a Bearer token, which is what the router checks."""
    import openai

    from deployments.client import ClientError, ClipClient

    page = rel.get("/rel/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert rel.get("/rel/playground/app.js").status_code == 200
    assert [m["id"] for m in ClipClient(f"{server}/rel", KEY).request("GET", "/v1/models")["data"]] == [HUB_ID]
    with pytest.raises(ClientError) as exc:
        ClipClient(f"{server}/rel", "sk-wrong-0123456789abcdef").request("GET", "/v1/models")
    assert exc.value.status == 401
    sdk = openai.OpenAI(base_url=f"{server}/rel/v1", api_key=KEY)
    vector = sdk.embeddings.create(model=HUB_ID, input=["a reliable cat"]).data[0].embedding
    assert cosine(vector, reference.texts(["a reliable cat"])[0]) >= 0.9999
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server}/rel/v1", api_key="sk-wrong-0123456789abcdef").models.list()


# --- image URLs ----------------------------------------------------------------------------


def test_image_urls_are_fetched_from_the_allowed_local_server(rel, reference, images):
    r = embed(rel, [{"type": "image_url", "image_url": {"url": images.url("/cat.png")}},
                    {"image": images.url("/gzip.png", host="2130706433")}])  # another spelling, same address
    assert r.status_code == 200, r.text
    expected = reference.image(CAT_PNG)
    for row in r.json()["data"]:
        assert cosine(row["embedding"], expected) >= 0.9999


@pytest.mark.parametrize("path_or_url, status, code", [
    ("http://localhost:{port}/cat.png", 400, "image_url_blocked"),  # not on the allow list
    ("http://10.0.0.1/cat.png", 400, "image_url_blocked"),
    ("http://169.254.169.254/latest/meta-data/", 400, "image_url_blocked"),
    ("http://[::ffff:169.254.169.254]/", 400, "image_url_blocked"),
    ("http://user:pw@127.0.0.1:{port}/cat.png", 400, "image_url_blocked"),
    ("/redirect?to=http://169.254.169.254/latest/meta-data/", 400, "image_url_blocked"),
    ("/redirect?to=http://10.0.0.1/x.png", 400, "image_url_blocked"),
    ("/chain/3", 400, "image_url_blocked"),  # more than max_redirects
    ("/endless.png", 413, "image_too_large"),
    ("/bomb.png", 413, "image_too_large"),
    ("/slow-headers.png?s=8", 400, "image_url_unreachable"),
    ("/missing.png", 400, "image_url_unreachable"),
])
def test_bad_image_urls_get_4xx_envelopes(rel, reference, images, path_or_url, status, code):
    url = images.url(path_or_url) if path_or_url.startswith("/") else path_or_url.format(port=images.port)
    started = time.monotonic()
    r = embed(rel, ["fine text", {"image": url}])
    assert_envelope(r, status, "input[1].image", code)
    assert time.monotonic() - started < 3 + 2.5  # the fetch deadline (3 s) bounds even slow servers
    assert_text_ok(rel, reference)


def test_url_count_is_limited_per_request(rel, images):
    r = embed(rel, [{"image": images.url("/cat.png")}] * 3)
    assert_envelope(r, 413, "input[2].image", "request_too_large")


# --- deadline, admission, disconnects --------------------------------------------------------


def stall(deployment: str, seconds: float) -> set[int]:
    """Stall the forward thread of every replica of a deployment (returns their pids)."""
    from ray import serve

    replicas = serve.status().applications[REL].deployments[deployment].replica_states.get("RUNNING", 0)
    pids: set[int] = set()
    for _ in range(12):
        pids.add(handle(deployment).debug_stall_forward.remote(seconds).result())
        if len(pids) == replicas:
            return pids
    raise AssertionError(f"could not reach every replica of {deployment}")


def wait_unstalled(client, reference, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        r = embed(client, ["unstalled?"], timeout=3)
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)
    assert_text_ok(client, reference)


def test_deadline_and_admission_answer_in_the_envelope_and_leave_nothing_behind(rel, reference):
    stall(TEXT, DEADLINE_S + 4)

    def one(i: int):
        started = time.monotonic()
        r = embed(rel, [f"stuck text {i}"], timeout=30)
        return r, time.monotonic() - started

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        pending = [pool.submit(one, i) for i in range(10)]
        time.sleep(1.5)
        # Behind HAProxy the cap is applied in the router's own HTTP server, ahead of the app
        # and its auth (deployments/serving/proxy_admission.py): a full router refuses even a
        # request without a key, and the app did not count the admitted ones twice (below).
        assert_envelope(embed(rel, ["no key"], headers={}), 503, code="overloaded")
        results = [f.result() for f in pending]
    by_status: dict[int, list] = {}
    for r, seconds in results:
        by_status.setdefault(r.status_code, []).append((r, seconds))
    assert set(by_status) == {503, 504}, {k: [r.text for r, _ in v] for k, v in by_status.items()}
    assert len(by_status[504]) == MAX_CONCURRENT  # admitted, then cut at the deadline
    for r, seconds in by_status[504]:
        assert_envelope(r, 504, code="timeout")
        assert DEADLINE_S - 0.5 <= seconds < DEADLINE_S + 5
    for r, seconds in by_status[503]:  # shed at once, in the envelope, with Retry-After
        assert_envelope(r, 503, code="overloaded")
        assert r.headers["retry-after"] == "1" and seconds < 2.0
    assert rel.get("/rel/ready").status_code == 200  # probes are never shed
    stats = wait_idle()
    assert stats["shed_requests"] >= len(by_status[503])
    wait_unstalled(rel, reference)


def test_client_disconnects_cancel_their_work_and_the_batcher_keeps_going(rel, reference):
    stall(TEXT, 3)
    labels = ["a disconnected cat", "a disconnected dog"]
    body = {"model": HUB_ID, "input": ["a photo"], "labels": labels}

    def classify(timeout: float):
        try:
            return rel.post("/rel/v1/classify", json=body, headers=AUTH, timeout=timeout)
        except httpx.TimeoutException:
            return "gone"

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        leavers = [pool.submit(embed, rel, [f"leaving {i}"], AUTH, timeout=0.5) for i in range(2)]  # + 2 below = the cap
        quitter = pool.submit(classify, 0.5)  # starts the shared label encode, then leaves
        time.sleep(0.2)
        stayer = pool.submit(classify, 30)  # joins the same label encode and stays
        for f in leavers:
            with pytest.raises(httpx.TimeoutException):
                f.result()
        assert quitter.result() == "gone"
        kept = stayer.result()
    assert kept.status_code == 200, kept.text
    expected = reference.texts(labels)
    got = kept.json()["data"][0]["predictions"]
    cos = reference.texts(["a photo"])[0] @ expected.T
    assert np.allclose([p["cosine"] for p in got], cos, atol=1e-4)  # the shared encode ran to the end
    wait_idle()  # nothing left: no request, pending item, call or label encode
    wait_unstalled(rel, reference)
    for i in range(3):
        assert_text_ok(rel, reference, f"after the disconnects {i}")


# --- replica loss ----------------------------------------------------------------------------


def replica_actors(deployment: str) -> list:
    import ray

    names = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(f"SERVE_REPLICA::{REL}#{deployment}#")]
    return [ray.get_actor(a["name"], namespace=a["namespace"]) for a in names]


def test_calls_on_a_killed_encoder_replica_are_retried_on_another(rel, reference):
    import ray

    before = router_stats()["coalescers"][f"{HUB_ID}/image"]["retried_calls"]
    stall(IMAGE, 3)
    datas = [encode(natural_image(40, 40, seed=300 + i)) for i in range(MAX_CONCURRENT)]
    with concurrent.futures.ThreadPoolExecutor(MAX_CONCURRENT) as pool:
        futures = [pool.submit(embed, rel, [{"image": data_uri(d)}], AUTH, timeout=60) for d in datas]
        time.sleep(1.0)  # every call now waits in a stalled replica
        busy = [a for a in replica_actors(IMAGE) if ray.get(a.get_num_ongoing_requests.remote()) > 0]
        assert busy, "no replica had calls in flight"
        ray.kill(busy[0], no_restart=True)
        responses = [f.result() for f in futures]
    for data, r in zip(datas, responses):
        assert r.status_code == 200, r.text  # nothing failed: the calls went to the other replica
        assert cosine(r.json()["data"][0]["embedding"], reference.image(data)) >= 0.9999
    assert router_stats()["coalescers"][f"{HUB_ID}/image"]["retried_calls"] > before
    wait_idle()
    r = embed(rel, [{"image": b64(datas[0])}])
    assert r.status_code == 200
