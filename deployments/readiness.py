"""Wait for Serve applications to run, with our own deadline, saying what each deployment is doing.

Serve's own blocking deploy gives up after a fixed 60 s with no cause; real hub weights can
take longer than that to download, and a replica asking for more than any node has waits
for ever. Here each poll reads Serve's instance details (`ServeInstanceDetails`: per
deployment its status, message, required resources and replicas) and:

- prints a line per deployment whenever its state changes: replicas scheduling (waiting
  for resources), downloading weights, loading, running;
- fails at once, naming the resource, what one replica asks for and what the cluster has,
  when no node could ever hold a replica (unless the cluster can grow: an autoscaler);
- fails with the replica's own error when Serve gives up on a deployment;
- on the deadline, fails naming what was still pending and why.

The decisions are pure functions of the details and the nodes' resources, so they are
tested on hand-built Serve schema objects without a cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.serve._private.common import DeploymentStatus, ReplicaState
from ray.serve.schema import ApplicationDetails, ApplicationStatus, DeploymentDetails

POLL_S = 0.5
# A deployment whose state is unchanged gets its line again this often, with the time waited.
REPEAT_S = 30.0
# Ray's names for resources a replica asks for in bytes.
BYTE_RESOURCES = frozenset({"memory", "object_store_memory"})


class NotReady(RuntimeError):
    """The applications did not come up; the message is the cause, in one paragraph."""


@dataclass(frozen=True)
class Shortfall:
    resource: str
    asked: float
    largest_node: float  # the most any one node has in total
    available: float  # free across the cluster now

    def describe(self) -> str:
        r = self.resource
        return (f"each replica asks for {r} {_amount(r, self.asked)} but no node has that much "
                f"(largest node: {r} {_amount(r, self.largest_node)}; "
                f"free in the cluster now: {r} {_amount(r, self.available)})")


def _amount(resource: str, value: float) -> str:
    if resource in BYTE_RESOURCES:
        return f"{value / 2**30:.1f} GiB"
    return f"{value:g}"


def _asked(required: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in (required or {}).items() if isinstance(v, (int, float)) and v > 0}


def unplaceable(required: dict[str, Any], nodes: Iterable[dict[str, float]], available: dict[str, float]) -> Shortfall | None:
    """Why no node can ever hold one replica asking for `required`, or None if one can.

    A replica is one actor, so it must fit on a single node: the resource named is the
    first one that even the best-provided node lacks."""
    asked = _asked(required)
    totals = list(nodes)
    if not asked or any(all(node.get(k, 0.0) >= v for k, v in asked.items()) for node in totals):
        return None
    for resource, value in asked.items():
        largest = max((node.get(resource, 0.0) for node in totals), default=0.0)
        if largest < value:
            return Shortfall(resource, value, largest, available.get(resource, 0.0))
    # Each resource fits on some node, but no node has all of them at once.
    resource, value = next(iter(asked.items()))
    largest = max((node.get(resource, 0.0) for node in totals), default=0.0)
    return Shortfall(resource, value, largest, available.get(resource, 0.0))


def short_now(required: dict[str, Any], available: dict[str, float]) -> str:
    """What a replica waiting for resources asks for that the cluster has not free now ('' if nothing)."""
    return ", ".join(f"{k} {_amount(k, v)} asked, {_amount(k, available.get(k, 0.0))} free"
                     for k, v in _asked(required).items() if available.get(k, 0.0) < v)


def error_summary(message: str) -> str:
    """Serve's failure message without the replica's traceback: the exception line(s) at its end."""
    text = message.strip()
    marker = "Traceback (most recent call last):"
    if marker not in text:
        return text
    head, _, trace = text.rpartition(marker)
    lines = trace.splitlines()
    # The exception follows the last indented line (the frames and their source lines).
    last_frame = max((i for i, line in enumerate(lines) if line.startswith((" ", "\t"))), default=-1)
    exception = " ".join(line.strip() for line in lines[last_frame + 1:] if line.strip())
    intro = head.strip().splitlines()[0] if head.strip() else ""
    return " ".join(x for x in (intro, exception) if x)


def hub_download_bytes(deployment: str, hub_cache: Path | None = None) -> int | None:
    """Bytes of weights being downloaded for the variant behind `deployment` (None: no download seen).

    Deployments are named `<Tower>:<variant id, "/" as "--">`, which is also how the hub cache
    names a repository's folder; huggingface_hub writes `blobs/*.incomplete` while downloading.
    Only a cluster that shares this machine's disk (a local one) shows up here."""
    if hub_cache is None:
        from huggingface_hub import constants

        hub_cache = Path(constants.HF_HUB_CACHE)
    slug = deployment.partition(":")[2]
    partial = list((hub_cache / f"models--{slug}" / "blobs").glob("*.incomplete")) if slug else []
    if not partial:
        return None
    return sum(p.stat().st_size for p in partial if p.exists())


def deployment_line(name: str, details: DeploymentDetails, available: dict[str, float],
                    downloading: int | None = None) -> str:
    """One progress line: replicas running of those wanted, and what the others are doing."""
    replicas = [r for r in details.replicas if r.state != ReplicaState.STOPPING]
    running = sum(r.state == ReplicaState.RUNNING for r in replicas)
    # Serve sets a replica's pid once Ray has placed its actor: before that it is being scheduled.
    scheduling = sum(r.state != ReplicaState.RUNNING and r.pid is None for r in replicas)
    starting = len(replicas) - running - scheduling
    parts = []
    if scheduling:
        short = short_now(details.required_resources, available)
        parts.append(f"{scheduling} scheduling" + (f" (waiting for resources: {short})" if short else ""))
    if starting:
        if downloading is not None:
            parts.append(f"{starting} downloading weights ({downloading / 2**20:.0f} MiB so far)")
        else:
            parts.append(f"{starting} loading")
    state = "; ".join(parts) or ("no replica started yet" if not replicas else details.status.value.lower())
    return f"{name}  {running}/{details.target_num_replicas} replicas running: {state}"


def check(apps: dict[str, ApplicationDetails], names: Iterable[str], nodes: list[dict[str, float]],
          available: dict[str, float], cluster_can_grow: bool = False) -> tuple[bool, dict[str, DeploymentDetails]]:
    """(all `names` are RUNNING, their deployments); NotReady when one cannot come up."""
    deployments: dict[str, DeploymentDetails] = {}
    ready = True
    for name in names:
        app = apps.get(name)
        if app is None:
            ready = False
            continue
        if app.status == ApplicationStatus.DEPLOY_FAILED and not app.deployments:
            # The app was never built (import or config error): Serve's message says why.
            raise NotReady(f"application '{name}' failed to deploy: {error_summary(app.message)}")
        for dep_name, dep in app.deployments.items():
            deployments[dep_name] = dep
            if dep.status in (DeploymentStatus.DEPLOY_FAILED, DeploymentStatus.UNHEALTHY):
                raise NotReady(f"{dep_name} in application '{name}' failed to start "
                               f"({dep.status.value}): {error_summary(dep.message or app.message)}")
            pending = [r for r in dep.replicas if r.state != ReplicaState.RUNNING and r.pid is None]
            shortfall = unplaceable(dep.required_resources, nodes, available) if pending else None
            if shortfall and not cluster_can_grow:
                raise NotReady(f"{dep_name} in application '{name}' cannot be placed: {shortfall.describe()}. "
                               "Lower its ray_actor_options in the config or give the cluster more "
                               "(`--num-cpus` for a local cluster).")
        if app.status == ApplicationStatus.DEPLOY_FAILED:
            raise NotReady(f"application '{name}' failed to deploy: {error_summary(app.message)}")
        ready = ready and app.status == ApplicationStatus.RUNNING
    return ready, deployments


def cluster_resources() -> tuple[list[dict[str, float]], dict[str, float]]:
    """(each alive node's total resources, what is free across the cluster now)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return nodes, ray.available_resources()


def wait_running(names: list[str], timeout_s: float | None, progress: Callable[[str], None] | None = print,
                 cluster_can_grow: bool = False) -> None:
    """Block until every application in `names` is RUNNING; NotReady (the cause) otherwise.

    `timeout_s` None or 0 waits for ever; `progress` gets a line per deployment when its
    state changes (None: quiet)."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    client = _get_global_client()
    start = time.monotonic()
    shown: dict[str, tuple[str, float]] = {}
    lines: dict[str, str] = {}
    while True:
        apps = ServeInstanceDetails(**client.get_serve_details()).applications
        nodes, available = cluster_resources()
        ready, deployments = check(apps, names, nodes, available, cluster_can_grow)
        if ready:
            return
        now = time.monotonic()
        for dep_name, dep in deployments.items():
            waiting = dep.status != DeploymentStatus.HEALTHY
            downloading = hub_download_bytes(dep_name) if waiting else None
            line = lines[dep_name] = deployment_line(dep_name, dep, available, downloading)
            # A download in progress is a new line per poll; show it again only every REPEAT_S.
            key = line if downloading is None else deployment_line(dep_name, dep, available, 0)
            last = shown.get(dep_name)
            if progress and (last is None or last[0] != key or (waiting and now - last[1] >= REPEAT_S)):
                progress(line + (f"  [{now - start:.0f}s]" if last else ""))
                shown[dep_name] = (key, now)
        if timeout_s and now - start > timeout_s:
            pending = [line for name, line in lines.items() if deployments[name].status != DeploymentStatus.HEALTHY]
            raise NotReady(f"not running after {timeout_s:.0f}s: " + ("; ".join(pending) or
                           "applications " + ", ".join(names) + " not deployed yet"))
        time.sleep(POLL_S)


def wait_proxies() -> None:
    """After the apps run: wait until HTTP reaches them (what Serve's blocking deploy did last)."""
    from ray.serve.context import _get_global_client

    _get_global_client().wait_for_proxies_serving(wait_for_applications_running=True)
