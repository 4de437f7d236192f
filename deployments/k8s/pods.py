"""Pod templates for Ray head and worker pods: container, ports, probes, env, volumes."""

from __future__ import annotations

from typing import Any

from ..ingress import ingress_env
from ..serving.admission import CALLBACK_ENV, GUARD_ONLY, LIMIT_ENV
from .overlay import Overlay, PodShape, SecretKey

HF_HOME = "/home/ray/.cache/huggingface"
APP_DIR = "/home/ray/clip-serve"  # where k8s/Dockerfile copies the package (its WORKDIR)
# Ray's own health endpoints (the ones KubeRay's default probes use): the raylet through the
# dashboard agent, and the GCS through the head's dashboard.
RAYLET_HEALTHY = "wget -T 2 -q -O- http://localhost:52365/api/local_raylet_healthz | grep success"
GCS_HEALTHY = "wget -T 2 -q -O- http://localhost:8265/api/gcs_healthz | grep success"


def labels(overlay: Overlay, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": overlay.name, "app.kubernetes.io/component": component}


def exec_probe(command: str, *, period_s: int, failures: int, delay_s: int = 10) -> dict[str, Any]:
    return {"exec": {"command": ["bash", "-c", command]}, "initialDelaySeconds": delay_s,
            "periodSeconds": period_s, "timeoutSeconds": 5, "failureThreshold": failures}


def http_probe(path: str, port: str, *, period_s: int, failures: int, delay_s: int = 10) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "initialDelaySeconds": delay_s,
            "periodSeconds": period_s, "timeoutSeconds": 5, "failureThreshold": failures}


def secret_env(name: str, secret: SecretKey) -> dict[str, Any]:
    # optional: public checkpoints need no token, and a missing secret must not block the pod
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key, "optional": True}}}


def ingress_pod_env(overlay: Overlay) -> list[dict[str, Any]]:
    """The ingress mode, its header limits, and the shedding in Serve's HTTP servers
    (deployments/serving/admission.py): behind HAProxy always, each router against its
    own cap; in the Python proxies only with a `proxy_max_inflight` to cap them at (without
    one they keep the header limits only)."""
    env = ingress_env(overlay.ingress, app_dir=APP_DIR, head_timeout_s=overlay.header_timeout_s,
                      max_head_bytes=overlay.max_header_bytes)
    if overlay.ingress == "proxy":
        if overlay.proxy_max_inflight:
            env[LIMIT_ENV] = str(overlay.proxy_max_inflight)
        else:
            env[CALLBACK_ENV] = GUARD_ONLY
    return [{"name": name, "value": value} for name, value in env.items()]


def api_keys_mount(overlay: Overlay) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The API keys secret as a read-only folder (kubelet swaps in rotated keys; routers re-read them)."""
    keys = overlay.api_keys
    if keys is None:
        return []
    volume = {"name": "api-keys", "secret": {"secretName": keys.name, "items": [{"key": keys.key, "path": keys.key}]}}
    return [(volume, {"name": "api-keys", "mountPath": keys.mount_path, "readOnly": True})]


def resources(shape: PodShape) -> dict[str, Any]:
    amounts = {"cpu": shape.cpu, "memory": shape.memory}
    limits = {**amounts, **({"nvidia.com/gpu": str(shape.gpus)} if shape.gpus else {})}
    return {"requests": dict(amounts), "limits": limits}


def ports(overlay: Overlay, head: bool, serving: bool) -> list[dict[str, Any]]:
    out = [{"name": "metrics", "containerPort": overlay.metrics_port}]
    if serving:
        out.insert(0, {"name": "serve", "containerPort": overlay.serve_port})
    if head:
        out = [{"name": "gcs-server", "containerPort": 6379}, {"name": "dashboard", "containerPort": 8265},
               {"name": "client", "containerPort": 10001}, *out]
    return out


def head_probes() -> dict[str, Any]:
    healthy = f"{RAYLET_HEALTHY} && {GCS_HEALTHY}"
    return {"readinessProbe": exec_probe(healthy, period_s=5, failures=10),
            "livenessProbe": exec_probe(healthy, period_s=10, failures=12, delay_s=30)}


def worker_probes(serving: bool) -> dict[str, Any]:
    """Liveness: Ray runs on this pod. Readiness of a serving pod: the service answers with
    every model loaded (/ready through this pod's Serve proxy), so Services only send it
    traffic then; a job pod is ready when Ray is."""
    live = exec_probe(RAYLET_HEALTHY, period_s=10, failures=12, delay_s=30)
    ready = http_probe("/ready", "serve", period_s=5, failures=3) if serving else exec_probe(
        RAYLET_HEALTHY, period_s=5, failures=10)
    return {"readinessProbe": ready, "livenessProbe": live}


def drain_hook(overlay: Overlay) -> dict[str, Any]:
    command = f"python -m deployments.drain --deadline-s {overlay.drain.deadline_s}"
    return {"preStop": {"exec": {"command": ["bash", "-c", command]}}}


def pod_template(
    overlay: Overlay,
    shape: PodShape,
    component: str,
    container_name: str,
    *,
    head: bool,
    serving: bool,
    hub_access: bool,
    extra_mounts: list[tuple[dict[str, Any], dict[str, Any]]] = (),
) -> dict[str, Any]:
    """A pod of one Ray node. `serving` pods run Serve (RayService), others run jobs;
    `hub_access` gives the HF token and a model cache; `extra_mounts` are (volume, volumeMount) pairs."""
    volumes = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shape.shm}}]
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    env: list[dict[str, Any]] = []
    if hub_access:
        volumes.append({"name": "hf-cache", "emptyDir": {}})
        mounts.append({"name": "hf-cache", "mountPath": HF_HOME})
        env += [{"name": "HF_HOME", "value": HF_HOME}, secret_env("HF_TOKEN", overlay.hf_token)]
    if serving:
        env += ingress_pod_env(overlay)
    for volume, mount in extra_mounts:
        volumes.append(volume)
        mounts.append(mount)
    container: dict[str, Any] = {
        "name": container_name,
        "image": overlay.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": ports(overlay, head, serving),
        "resources": resources(shape),
        **({"env": env} if env else {}),
        "volumeMounts": mounts,
        **(head_probes() if head else worker_probes(serving)),
    }
    spec: dict[str, Any] = {"containers": [container], "volumes": volumes}
    if serving and not head:  # the head cannot be drained: it is the cluster
        container["lifecycle"] = drain_hook(overlay)
        spec["terminationGracePeriodSeconds"] = overlay.drain.deadline_s + 30
    if shape.node_selector:
        spec["nodeSelector"] = dict(shape.node_selector)
    if shape.tolerations:
        spec["tolerations"] = [dict(t) for t in shape.tolerations]
    return {"metadata": {"labels": labels(overlay, component)}, "spec": spec}
