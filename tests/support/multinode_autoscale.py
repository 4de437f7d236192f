"""Independent autoscaling of the two towers on a local multi-node Ray cluster.

Run by tests/ops/test_autoscaling.py in its own process (a second Ray cluster cannot share the
test session's driver). A head node hosts the controller, the HTTP proxy and the router;
two worker nodes carry a custom `gpu_node` resource that stands in for GPUs, and encoders
require it, as they require `nvidia.com/gpu` on Kubernetes. Image-only load is driven
through HTTP while replica counts are sampled; then, under light load, the node holding the
image replica is drained the way the pods' preStop hook does it (`python -m
deployments.drain`). Prints one JSON report on its last line.

    python tests/support/multinode_autoscale.py MODEL_DIR
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from helpers import free_port  # this folder is on sys.path when run as a script

IMAGE, TEXT, ROUTER = "ImageEncoder:tiny", "TextEncoder:tiny", "Router"
GPU_NODES, GPU_SLOTS = 2, 2
# Each phase waits for what it is about, with a deadline far beyond what it needs, so a slow
# or busy machine only takes longer: a new replica's start-up (process, imports, weights)
# is most of every wait below and its length depends on the machine.
DEPLOY_DEADLINE_S, SCALE_UP_DEADLINE_S, SCALE_DOWN_DEADLINE_S, DRAIN_DEADLINE_S = 240, 150, 90, 120
HOLD_S = 4  # load kept on after the image tower scaled up: it must not pass max_replicas meanwhile
ENCODER_SCALING = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2, "upscale_delay_s": 1,
                   "downscale_delay_s": 3, "metrics_interval_s": 0.5, "look_back_period_s": 2}


def app(model_dir: str) -> dict:
    from deployments.launch import app_config

    args = {
        "variants": [{"id": "tiny", "source": model_dir, "dtype": "float32", "cpu_threads": 1}],
        "router": {"max_inflight_calls": 8},
    }
    # batch_wait 0.25 s keeps calls in flight at the encoders long enough for a small box to
    # build a queue that autoscaling reacts to; production uses milliseconds on real models.
    encoder = {"ray_actor_options": {"num_cpus": 0.1, "resources": {"gpu_node": 1}},
               "autoscaling_config": ENCODER_SCALING,
               "user_config": {"max_batch_size": 64, "batch_wait_timeout_s": 0.25}}
    deployments = [
        {"name": ROUTER, "ray_actor_options": {"num_cpus": 0.5},
         "autoscaling_config": {**ENCODER_SCALING, "max_replicas": 2, "target_ongoing_requests": 64}},
        {"name": IMAGE, **encoder},
        {"name": TEXT, **encoder},
    ]
    return app_config(args, deployments)


def replicas() -> dict[str, int]:
    from ray import serve

    deployments = serve.status().applications["clip"].deployments
    return {name: deployments[name].replica_states.get("RUNNING", 0) for name in (IMAGE, TEXT, ROUTER)}


def png_data_uri() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def image_load(url: str, stop: asyncio.Event, counts: dict[str, int], concurrency: int = 32) -> None:
    import httpx

    body = {"model": "tiny", "input": [{"image": png_data_uri()}]}
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def worker():
            while not stop.is_set():
                try:
                    status = (await client.post("/v1/embeddings", json=body)).status_code
                except httpx.HTTPError:
                    status = "error"
                key = "ok" if status == 200 else f"failed_{status}"
                counts[key] = counts.get(key, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def sample_until(timeline: list, t0: float, done, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        counts = await asyncio.to_thread(replicas)
        timeline.append({"t": round(time.monotonic() - t0, 1), **counts})
        if done(counts):
            return True
        await asyncio.sleep(0.5)
    return False


async def scenario(url: str, report: dict) -> None:
    t0 = time.monotonic()
    timeline = report["timeline"]
    stop, counts = asyncio.Event(), report["requests"]
    load = asyncio.create_task(image_load(url, stop, counts))
    report["scaled_up"] = await sample_until(timeline, t0, lambda c: c[IMAGE] >= 2, SCALE_UP_DEADLINE_S)
    await sample_until(timeline, t0, lambda c: False, HOLD_S)
    report["encoder_nodes"] = {name: await asyncio.to_thread(replica_nodes, name) for name in (IMAGE, TEXT)}
    report["load_stopped_at"] = round(time.monotonic() - t0, 1)
    stop.set()
    await load
    report["scaled_down"] = await sample_until(timeline, t0, lambda c: c[IMAGE] == 1 and c[TEXT] == 1,
                                               SCALE_DOWN_DEADLINE_S)
    await drain_under_load(url, report)


async def drain_under_load(url: str, report: dict) -> None:
    """Drain the image replica's node as its pod's preStop would, while requests keep coming."""
    (node,) = await asyncio.to_thread(replica_nodes, IMAGE)
    stop, counts = asyncio.Event(), {}
    load = asyncio.create_task(image_load(url, stop, counts, concurrency=4))
    command = [sys.executable, "-m", "deployments.drain", "--address", report["address"], "--node-id", node,
               "--deadline-s", str(DRAIN_DEADLINE_S)]
    drained = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True,
                                      timeout=DRAIN_DEADLINE_S + 30)
    report["drain"] = {"node": node, "output": json.loads(drained.stdout.strip().splitlines()[-1]),
                       "image_nodes_after": await asyncio.to_thread(replica_nodes, IMAGE)}
    await asyncio.sleep(1)
    stop.set()
    await load
    report["drain"]["requests"] = counts


def replica_nodes(deployment: str) -> list[str]:
    """Node ids an encoder's replicas report (the handle spreads calls over them)."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name="clip")
    return sorted({handle.stats.remote().result()["node_id"] for _ in range(30)})


def main(model_dir: str) -> dict:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from deployments.launch import deploy

    report: dict = {"timeline": [], "requests": {}}
    started = time.monotonic()
    # the dashboard serves the state API the drain hook asks which actors remain on its node
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": True,
                                                            "dashboard_port": free_port()})
    try:
        gpu_nodes = [cluster.add_node(num_cpus=1, resources={"gpu_node": GPU_SLOTS}) for _ in range(GPU_NODES)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        report["head_node"] = cluster.head_node.node_id
        report["address"] = cluster.address
        report["gpu_nodes"] = sorted(node.node_id for node in gpu_nodes)
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        deploy([app(model_dir)], "127.0.0.1", port, timeout_s=DEPLOY_DEADLINE_S)
        report["deployed_after_s"] = round(time.monotonic() - started, 1)
        report["before"] = replicas()
        asyncio.run(scenario(f"http://127.0.0.1:{port}", report))
    finally:
        report["total_s"] = round(time.monotonic() - started, 1)
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    print(json.dumps(main(sys.argv[1])), flush=True)
