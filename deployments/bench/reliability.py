#!/usr/bin/env python3
"""Chaos, overload and soak runs on a local multi-node Ray cluster (`ray.cluster_utils.Cluster`).

The cluster: a head node with the Serve controller, the HTTP proxy and two routers (a
`router_node` resource only the head has) and three worker nodes for two replicas of each
encoder, at most one per node (a `gpu_node` resource standing in for GPUs). Load comes from this process over HTTP on
127.0.0.1. Prints one JSON report as its last line; docs/reliability.md records runs.

    python -m deployments bench reliability overload --seconds 60          # 3x capacity for a minute
    python -m deployments bench reliability soak --minutes 30               # RSS per replica over time
    python -m deployments bench reliability chaos                           # kill encoder, router, node
    python -m deployments bench reliability all --seconds 8 --minutes 0.25 --heal-wait-s 8  # the tests' run

`--model-dir` serves a CLIP checkpoint folder (default: the embedded demo model, built
offline on first use).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..ingress import DEFAULT_INGRESS, INGRESS_MODES, free_port, ingress_env
from ..serving.admission import CALLBACK_ENV, LIMIT_ENV
from ..tools import command_parser
from .common import replicas_import_this_checkout

replicas_import_this_checkout()

MODEL = "tiny"
IMAGE, TEXT, ROUTER = "ImageEncoder:tiny", "TextEncoder:tiny", "Router"
ROUTER_LIMIT = 24  # router.max_concurrent_requests per replica in this run
PROXY_LIMIT = 64  # CLIP_SERVE_PROXY_MAX_INFLIGHT: a little above the routers' 2 x 24
LOAD_CONCURRENCY = 6  # steady load during chaos


def app(model_dir: str) -> dict:
    from ..launch import app_config

    args = {
        "variants": [{"id": MODEL, "source": model_dir, "dtype": "float32", "cpu_threads": 1}],
        "router": {"max_concurrent_requests": ROUTER_LIMIT, "request_timeout_s": 20},
    }
    # one replica of each encoder per node, as one GPU per pod would give: losing a node
    # loses one replica of each, never both
    encoder = {"ray_actor_options": {"num_cpus": 0.1, "resources": {"gpu_node": 1}}, "max_replicas_per_node": 1,
               "user_config": {"max_batch_size": 32, "batch_wait_timeout_s": 0.005}}
    deployments = [
        {"name": ROUTER, "num_replicas": 2, "ray_actor_options": {"num_cpus": 0.1, "resources": {"router_node": 1}}},
        {"name": IMAGE, "num_replicas": 2, **encoder},
        {"name": TEXT, "num_replicas": 2, **encoder},
    ]
    return app_config(args, deployments)


def png_data_uri(seed: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


BODIES = [{"model": MODEL, "input": [{"image": png_data_uri(i)}, f"a caption {i}"]} for i in range(8)]


class Recorder:
    """Every request: when it started and ended, and its status (or the exception name)."""

    def __init__(self) -> None:
        self.records: list[tuple[float, float, object]] = []

    async def one(self, session, url: str, i: int) -> None:
        import aiohttp

        started = time.monotonic()
        try:
            async with session.post(f"{url}/v1/embeddings", json=BODIES[i % len(BODIES)]) as r:
                await r.read()
                status: object = r.status
                if r.status not in (200,) and r.content_type != "application/json":
                    status = f"{r.status}-plain"  # not in the envelope
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            status = type(exc).__name__
        self.records.append((started, time.monotonic(), status))

    def summary(self, since: float = 0.0, until: float = float("inf")) -> dict:
        rows = [r for r in self.records if since <= r[0] < until]
        ok = [end - start for start, end, status in rows if status == 200]
        shed = [end - start for start, end, status in rows if status in (429, 503)]
        failed = [status for _, _, status in rows if status not in (200, 429, 503)]
        pct = lambda xs, q: round(float(np.percentile(xs, q)), 3) if xs else None  # noqa: E731
        return {"sent": len(rows), "ok": len(ok), "rejected": len(shed), "failed": len(failed),
                "failed_statuses": sorted({str(s) for s in failed}), "ok_p50_s": pct(ok, 50), "ok_p99_s": pct(ok, 99),
                "ok_max_s": round(max(ok), 3) if ok else None,
                "rejected_p99_s": pct(shed, 99), "rejected_max_s": round(max(shed), 3) if shed else None}


def session(timeout_s: float = 60):
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                 connector=aiohttp.TCPConnector(limit=0, force_close=False))


async def closed_loop(url: str, rec: Recorder, stop: asyncio.Event, concurrency: int) -> None:
    async with session() as s:
        async def worker(k: int) -> None:
            i = k
            while not stop.is_set():
                await rec.one(s, url, i)
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))


async def open_loop(url: str, rec: Recorder, rate: float, seconds: float) -> float:
    """Requests at a fixed rate whatever the answers; returns the rate actually offered."""
    async with session() as s:
        tasks, started, i = [], time.monotonic(), 0
        while (now := time.monotonic()) - started < seconds:
            due = started + i / rate
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(rec.one(s, url, i)))
            i += 1
        offered = i / (time.monotonic() - started)
        await asyncio.gather(*tasks)
    return offered


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def replica_pids() -> dict[str, list[int]]:
    """Pids of each deployment's replicas (handles spread calls over them)."""
    from ray import serve

    out = {}
    for name, method in ((ROUTER, "stats"), (IMAGE, "stats"), (TEXT, "stats")):
        h = serve.get_deployment_handle(name, app_name="clip")
        out[name] = sorted({getattr(h, method).remote().result()["pid"] for _ in range(16)})
    return out


def memory(pids: dict[str, list[int]]) -> dict[str, float]:
    return {f"{name}#{k}": round(rss_mb(pid), 1) for name, ps in pids.items() for k, pid in enumerate(ps)}


async def measure_capacity(url: str, seconds: float) -> dict:
    """Closed-loop throughput with enough concurrency to keep every replica busy, below the routers' caps."""
    rec, stop = Recorder(), asyncio.Event()
    load = asyncio.create_task(closed_loop(url, rec, stop, concurrency=2 * ROUTER_LIMIT - 8))
    await asyncio.sleep(2)  # warm up
    mark = time.monotonic()
    await asyncio.sleep(seconds)
    stop.set()
    await load
    window = rec.summary(since=mark)
    window["req_per_s"] = round(window["ok"] / seconds, 1)
    return window


async def overload(url: str, seconds: float, factor: float, report: dict) -> None:
    capacity = await measure_capacity(url, max(4.0, seconds / 4))
    report["capacity"] = capacity
    pids = await asyncio.to_thread(replica_pids)
    report["rss_before_mb"] = memory(pids)
    rec = Recorder()
    offered = await open_loop(url, rec, factor * capacity["req_per_s"], seconds)
    await asyncio.sleep(2)
    report["rss_after_mb"] = memory(pids)
    report["overload"] = {"factor": factor, "seconds": seconds, "target_req_per_s": round(factor * capacity["req_per_s"], 1),
                          "offered_req_per_s": round(offered, 1), **rec.summary()}


async def soak(url: str, seconds: float, report: dict) -> None:
    """Steady moderate load; RSS of every replica sampled along the way."""
    pids = await asyncio.to_thread(replica_pids)
    samples, rec, stop = [], Recorder(), asyncio.Event()
    load = asyncio.create_task(closed_loop(url, rec, stop, concurrency=4))
    started = time.monotonic()
    await asyncio.sleep(min(5.0, seconds / 4))  # allocator warm-up is not growth
    samples.append({"t": round(time.monotonic() - started, 1), **memory(pids)})
    while time.monotonic() - started < seconds:
        await asyncio.sleep(min(10.0, max(1.0, seconds / 10)))
        samples.append({"t": round(time.monotonic() - started, 1), **memory(pids)})
    stop.set()
    await load
    first, last = samples[0], samples[-1]
    minutes = max((last["t"] - first["t"]) / 60, 1e-9)
    growth = {k: round(last[k] - first[k], 1) for k in first if k != "t"}
    report["soak"] = {"seconds": round(time.monotonic() - started, 1), **rec.summary(), "rss_samples_mb": samples,
                      "rss_growth_mb": growth, "rss_growth_mb_per_min": {k: round(v / minutes, 2) for k, v in growth.items()}}


def running(name: str) -> int:
    from ray import serve

    return serve.status().applications["clip"].deployments[name].replica_states.get("RUNNING", 0)


def live_replicas(deployment: str) -> dict[str, str]:
    """Actor name -> node id of every live replica of a deployment (Ray's state API)."""
    from ray.util.state import list_actors

    prefix = f"SERVE_REPLICA::clip#{deployment}#"
    return {a.name: a.node_id for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if (a.name or "").startswith(prefix)}


def actor_pid(name: str) -> int:
    from ray.util.state import list_actors

    (actor,) = list_actors(filters=[("name", "=", name), ("state", "=", "ALIVE")], limit=10)
    return actor.pid


def wait_process_gone(pid: int, timeout_s: float = 30) -> bool:
    """True once `pid` has exited (a zombie awaiting its parent counts as gone): every node
    of this local cluster runs on this machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


def replaced(deployment: str, gone: str, count: int):
    """A check: the killed replica is gone and Serve runs `count` replicas again, none starting."""
    from ray import serve

    def check() -> bool:
        states = serve.status().applications["clip"].deployments[deployment].replica_states
        live = live_replicas(deployment)
        return gone not in live and len(live) == count and dict(states) == {"RUNNING": count}

    return check


async def chaos_event(url: str, name: str, act, wait_for, report: dict, heal_wait_s: float) -> None:
    """Steady load; `act()` breaks something; until `wait_for()` the system heals. Records
    failed requests around the event and the seconds until requests succeed again. When
    `act()` waits for what it killed to be gone (`gone_after_s` in its detail), also when
    each failed request sent after that was sent (seconds after it was gone): until the
    proxy in front has seen it go, requests can still be sent to it."""
    rec, stop = Recorder(), asyncio.Event()
    load = asyncio.create_task(closed_loop(url, rec, stop, LOAD_CONCURRENCY))
    await asyncio.sleep(3)
    event_at = time.monotonic()
    detail = await asyncio.to_thread(act)
    healed = None
    while time.monotonic() - event_at < heal_wait_s:
        if await asyncio.to_thread(wait_for):
            healed = round(time.monotonic() - event_at, 1)
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)
    stop.set()
    await load
    after = [r for r in rec.records if r[0] >= event_at - 1]
    failures = [r for r in after if r[2] != 200]
    last_failure = max((end for _, end, _ in failures), default=event_at)
    if "gone_after_s" in detail:
        gone_at = event_at + detail["gone_after_s"]
        detail["failures_sent_after_gone_s"] = sorted(round(started - gone_at, 3) for started, _, _ in failures
                                                      if started > gone_at)
    report.setdefault("chaos", {})[name] = {
        **rec.summary(), "detail": detail, "replaced_after_s": healed,
        "recovery_s": round(last_failure - event_at, 1) if failures else 0.0,
        "failed_after_event": len(failures), "failed_statuses": sorted({str(s) for _, _, s in failures}),
    }


def healthy() -> bool:
    from ray import serve

    deployments = serve.status().applications["clip"].deployments
    return all(dict(deployments[d].replica_states) == {"RUNNING": 2} for d in (ROUTER, IMAGE, TEXT))


async def wait_healthy(timeout_s: float = 180) -> float:
    """Before each event: every deployment back at full strength (not part of the measurement)."""
    started = time.monotonic()
    while not await asyncio.to_thread(healthy):
        if time.monotonic() - started > timeout_s:
            raise RuntimeError("the deployments did not get back to full strength")
        await asyncio.sleep(0.5)
    return round(time.monotonic() - started, 1)


async def chaos(url: str, cluster, report: dict, heal_wait_s: float) -> None:
    import ray

    for deployment, count, name in ((IMAGE, 2, "encoder_replica_killed"), (ROUTER, 2, "router_replica_killed")):
        await wait_healthy()
        victim, node = sorted(live_replicas(deployment).items())[0]
        pid = actor_pid(victim)

        def act(victim=victim, node=node, pid=pid):
            # ray.kill returns before the process has exited: until then its port still
            # takes connections, so requests sent meanwhile can fail too
            started = time.monotonic()
            ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
            gone = wait_process_gone(pid)
            return {"killed": victim.split("#")[1], "node": node,
                    **({"gone_after_s": round(time.monotonic() - started, 3)} if gone else {})}

        await chaos_event(url, name, act, replaced(deployment, victim, count), report, heal_wait_s)

    await wait_healthy()
    victim, node_id = sorted(live_replicas(IMAGE).items())[0]

    def remove_node():
        there = sorted(name.split("#")[1] for d in (IMAGE, TEXT) for name, n in live_replicas(d).items() if n == node_id)
        node = next(n for n in cluster.worker_nodes if n.node_id == node_id)
        cluster.remove_node(node, allow_graceful=False)
        return {"removed_node": node_id, "replicas_there": there}

    healed = replaced(IMAGE, victim, 2)
    await chaos_event(url, "worker_node_removed", remove_node, lambda: healed() and running(TEXT) == 2, report,
                      heal_wait_s)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("bench reliability", __doc__)
    parser.add_argument("what", choices=["overload", "soak", "chaos", "all"])
    parser.add_argument("--seconds", type=float, default=60.0, help="overload duration")
    parser.add_argument("--factor", type=float, default=3.0, help="offered load / measured capacity")
    parser.add_argument("--minutes", type=float, default=10.0, help="soak duration")
    parser.add_argument("--model-dir", help="CLIP checkpoint folder (default: the demo model)")
    parser.add_argument("--heal-wait-s", type=float, default=90.0,
                        help="chaos: how long to keep the load on while Serve replaces what was killed")
    parser.add_argument("--ingress", choices=INGRESS_MODES, default=DEFAULT_INGRESS,
                        help="HAProxy in front of the routers (default) or Serve's Python proxy (deployments/ingress.py)")
    parser.add_argument("--no-proxy-admission", action="store_true",
                        help="no shedding in Serve's HTTP servers, only in the apps (to compare)")
    return parser


def run(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    proxy_admission = not args.no_proxy_admission
    env = {**ingress_env(args.ingress, local=True), LIMIT_ENV: str(PROXY_LIMIT)}  # the cluster below inherits these
    if not proxy_admission:
        env.pop(CALLBACK_ENV)
    os.environ.update(env)

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from ..launch import deploy

    model_dir = args.model_dir
    if model_dir is None:
        from ..demo import ensure_demo_model

        model_dir = str(ensure_demo_model())
    report: dict = {"what": args.what, "ingress": args.ingress, "proxy_admission": proxy_admission}
    started = time.monotonic()
    # Its own temp dir: a plain `ray.init()` elsewhere on this machine (another test
    # session) must not find this cluster as "the current one" and attach to it.
    temp_dir = tempfile.mkdtemp(prefix="rel-", dir="/tmp")
    # the dashboard serves the state API (which replica runs on which node)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"router_node": 4}, "include_dashboard": True, "dashboard_port": free_port(),
        "temp_dir": temp_dir})
    try:
        for _ in range(3):  # two hold the encoders, the third takes the replacements of a lost node
            cluster.add_node(num_cpus=2, resources={"gpu_node": 4}, temp_dir=temp_dir)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        deploy([app(model_dir)], "127.0.0.1", port)
        report["deployed_after_s"] = round(time.monotonic() - started, 1)
        url = f"http://127.0.0.1:{port}"
        if args.what in ("overload", "all"):
            asyncio.run(overload(url, args.seconds, args.factor, report))
        if args.what in ("soak", "all"):
            asyncio.run(soak(url, args.minutes * 60, report))
        if args.what in ("chaos", "all"):
            asyncio.run(chaos(url, cluster, report, args.heal_wait_s))
    finally:
        report["total_s"] = round(time.monotonic() - started, 1)
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """The report as one JSON line on stdout (what tests/ops/test_chaos_overload.py reads)."""
    print(json.dumps(run(argv)), flush=True)
    return 0
