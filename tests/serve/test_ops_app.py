"""Operations on real Ray Serve, in a second application ("ops", under /ops) beside the
session's app: /ready stays 503 until every configured variant has loaded while /health
answers 200 throughout; a replica whose forward thread hangs fails its health check and is
replaced; batch size, batch wait and autoscaling bounds change by re-applying an edited
config (`serve deploy`) without restarting replicas."""

from __future__ import annotations

import time

import numpy as np
import pytest
from support.cluster import app_args
from support.helpers import HUB_ID, cosine, data_uri, encode, natural_image

from deployments.launch import app_config
from deployments.launch import deploy as apply
from deployments.engine.payloads import TokenBatch

OPS = "ops"
WIDE_IMAGE = "ImageEncoder:local--tiny-wide"
HUB_TEXT = "TextEncoder:openai--clip-vit-base-patch32"
AUTOSCALING = {"min_replicas": 1, "max_replicas": 1, "target_ongoing_requests": 4, "upscale_delay_s": 1,
               "downscale_delay_s": 1}


def ops_apps(wide_model_dir, image_schedulable: bool = True, text_tuning: dict | None = None) -> list[dict]:
    """The session's app unchanged, plus "ops": the text tower of the hub variant and the
    image tower of the wide variant, whose replica needs a resource no node has until
    `image_schedulable` (like a GPU node that has not joined yet). `text_tuning` overrides
    the text encoder's `deployments:` entry, as an operator edits serve_config.yaml."""
    args = {
        "variants": [
            {"id": HUB_ID, "towers": ["text"], "dtype": "float32", "cpu_threads": 1},
            {"id": "local/tiny-wide", "source": str(wide_model_dir), "towers": ["image"], "dtype": "float32",
             "cpu_threads": 1},
        ],
        "router": {"deployment": {"ray_actor_options": {"num_cpus": 0.25}}},
    }
    image_actor = {"num_cpus": 0.25, "runtime_env": {"env_vars": {"CLIP_SERVE_TEST_HOOKS": "1"}}}
    if not image_schedulable:
        image_actor["resources"] = {"node_not_joined_yet": 1}
    text = {"name": HUB_TEXT, "ray_actor_options": {"num_cpus": 0.25}, "autoscaling_config": AUTOSCALING}
    deployments = [
        {**text, **(text_tuning or {})},
        {"name": WIDE_IMAGE, "ray_actor_options": image_actor, "health_check_period_s": 1,
         "health_check_timeout_s": 2, "graceful_shutdown_timeout_s": 1},
    ]
    ops = {**app_config(args, deployments), "name": OPS, "route_prefix": "/ops"}
    return [app_config(app_args(wide_model_dir)), ops]


def poll(check, timeout_s: float, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every_s)


@pytest.fixture(scope="module")
def ops_app(server_port, client, wide_model_dir):
    """Deploys "ops" with its image tower unschedulable, then schedulable; records what
    /ops/health, /ops/ready and /ops/v1/models said along the way."""
    log: dict = {"health": [], "ready": [], "models_before": None}

    def probe() -> int:
        log["health"].append(client.get("/ops/health").status_code)
        ready = client.get("/ops/ready")
        log["ready"].append((ready.status_code, ready.json()))
        return ready.status_code

    try:
        apply(ops_apps(wide_model_dir, image_schedulable=False), "127.0.0.1", server_port, blocking=False)
        # the router is up and the text variant loaded; the image variant cannot start
        up = poll(lambda: client.get("/ops/health").status_code == 200, 90)
        assert up, "the ops router did not come up"
        hub_ready = lambda: {m["id"]: m["ready"] for m in client.get("/ops/v1/models").json()["data"]}  # noqa: E731
        poll(lambda: hub_ready().get(HUB_ID), 60)
        log["models_before"] = hub_ready()
        for _ in range(3):
            probe()
            time.sleep(0.5)
        apply(ops_apps(wide_model_dir, image_schedulable=True), "127.0.0.1", server_port, blocking=False)
        poll(lambda: probe() == 200, 120, every_s=1)
        yield log
    finally:
        apply([app_config(app_args(wide_model_dir))], "127.0.0.1", server_port)  # removes "ops"


def test_ready_waits_for_every_variant_while_health_stays_up(ops_app):
    log = ops_app
    assert log["models_before"] == {HUB_ID: True, "local/tiny-wide": False}
    statuses = [status for status, _ in log["ready"]]
    assert statuses[:3] == [503, 503, 503]  # one variant loaded, the other not: not ready
    body = log["ready"][0][1]
    assert body["error"]["code"] == "not_ready"
    assert "local/tiny-wide" in body["error"]["message"] and HUB_ID not in body["error"]["message"]
    assert statuses[-1] == 200 and set(statuses) == {503, 200}
    assert set(log["health"]) == {200}  # liveness never followed readiness down


def test_stalled_encoder_fails_health_and_is_replaced(ops_app, client, wide_reference):
    from ray import serve

    encoder = serve.get_deployment_handle(WIDE_IMAGE, app_name=OPS)
    before = encoder.stats.remote().result()
    encoder.debug_stall_forward.remote(300).result()  # the forward thread now hangs

    def replaced():
        try:
            return encoder.stats.remote().result(timeout_s=5)["pid"] != before["pid"]
        except Exception:  # the old replica is going away
            return False

    assert poll(replaced, 90, every_s=1), "Serve kept the stalled replica"
    status = serve.status().applications[OPS].deployments[WIDE_IMAGE]
    assert status.replica_states.get("RUNNING") == 1
    # the service recovered: a real image embeds correctly through the new replica
    data = encode(natural_image(64, 48, seed=7))
    response = client.post("/ops/v1/embeddings", json={"model": "local/tiny-wide", "input": [{"image": data_uri(data)}]})
    assert response.status_code == 200, response.text
    vector = np.array(response.json()["data"][0]["embedding"])
    assert cosine(vector, wide_reference.image(data)) >= 0.9999
    assert client.get("/ops/ready").status_code == 200


def test_stall_hook_is_refused_without_the_test_env(server):
    from ray import serve

    encoder = serve.get_deployment_handle("ImageEncoder:openai--clip-vit-base-patch32", app_name="clip")
    with pytest.raises(Exception, match="test hooks are disabled"):
        encoder.debug_stall_forward.remote(1).result()


def deployment_config(name: str) -> dict:
    from ray.serve.context import _get_global_client

    return _get_global_client().get_serve_details()["applications"][OPS]["deployments"][name]["deployment_config"]


def running_replicas(name: str) -> int:
    from ray import serve

    return serve.status().applications[OPS].deployments[name].replica_states.get("RUNNING", 0)


def replica_stats(encoder, calls: int = 24) -> dict[int, dict]:
    """Stats of the replicas the handle reaches (it spreads calls over all of them), by pid."""
    return {s["pid"]: s for s in (encoder.stats.remote().result() for _ in range(calls))}


def test_batching_and_autoscaling_bounds_change_without_restarts(ops_app, server_port, wide_model_dir):
    from ray import serve

    encoder = serve.get_deployment_handle(HUB_TEXT, app_name=OPS)
    original_pid = encoder.stats.remote().result()["pid"]
    grown = {"autoscaling_config": {**AUTOSCALING, "min_replicas": 2, "max_replicas": 3},
             "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.05}}
    apply(ops_apps(wide_model_dir, text_tuning=grown), "127.0.0.1", server_port)
    assert poll(lambda: running_replicas(HUB_TEXT) == 2, 60), "the new lower bound did not add a replica"
    bounds = deployment_config(HUB_TEXT)["autoscaling_config"]
    assert (bounds["min_replicas"], bounds["max_replicas"]) == (2, 3)
    stats = replica_stats(encoder)
    assert original_pid in stats and len(stats) == 2  # the first replica kept serving
    assert {(s["max_batch_size"], s["batch_wait_timeout_s"]) for s in stats.values()} == {(4, 0.05)}

    # the new batch size is what replicas do: 9 texts take 3 forwards (4 + 4 + 1)
    before = replica_stats(encoder)
    tokens = TokenBatch(np.tile(np.array([[49406, 320, 49407]], np.int32), (9, 1)), np.full(9, 3, np.int32))
    assert encoder.embed.remote(tokens).result().shape == (9, 16)
    after = replica_stats(encoder)
    assert sum(after[pid]["forwards"] - before[pid]["forwards"] for pid in after) == 3

    # tighter bounds and other batching: back to one replica, one of those already running
    shrunk = {"autoscaling_config": AUTOSCALING, "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.0}}
    apply(ops_apps(wide_model_dir, text_tuning=shrunk), "127.0.0.1", server_port)
    assert poll(lambda: running_replicas(HUB_TEXT) == 1, 60), "the new upper bound did not remove a replica"
    assert deployment_config(HUB_TEXT)["autoscaling_config"]["max_replicas"] == 1
    (survivor,) = replica_stats(encoder, calls=4).values()
    assert survivor["pid"] in stats
    assert (survivor["max_batch_size"], survivor["batch_wait_timeout_s"]) == (8, 0.0)
