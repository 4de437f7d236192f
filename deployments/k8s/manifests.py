"""The Kubernetes objects: RayService, RayJobs, PodMonitor, dashboard ConfigMap, secret templates."""

from __future__ import annotations

import json
from typing import Any

from .overlay import Overlay, WorkerGroup
from .pods import api_keys_mount, labels, pod_template
from .serve_config import serve_config_text

RAY_API = "ray.io/v1"


def _ray_start_params(group: WorkerGroup) -> dict[str, str]:
    if not group.ray_resources:
        return {}
    # KubeRay passes this to `ray start --resources`, and tells the autoscaler about it
    return {"resources": json.dumps(json.dumps(group.ray_resources, sort_keys=True))}


def _worker_group(overlay: Overlay, group: WorkerGroup, component: str, *, serving: bool, hub_access: bool,
                  extra_mounts=()) -> dict[str, Any]:
    return {
        "groupName": group.name,
        "replicas": group.replicas,
        "minReplicas": group.min_replicas,
        "maxReplicas": group.max_replicas,
        "rayStartParams": _ray_start_params(group),
        "template": pod_template(overlay, group, component, "ray-worker", head=False, serving=serving,
                                 hub_access=hub_access, extra_mounts=extra_mounts),
    }


def _head_group(overlay: Overlay, *, serving: bool, hub_access: bool, extra_mounts=()) -> dict[str, Any]:
    return {
        # no CPUs for Ray tasks on the head: it runs the GCS, the Serve controller and a proxy only
        "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0",
                           "metrics-export-port": str(overlay.metrics_port)},
        "template": pod_template(overlay, overlay.head, "head", "ray-head", head=True, serving=serving,
                                 hub_access=hub_access, extra_mounts=extra_mounts),
    }


def _autoscaler(overlay: Overlay) -> dict[str, Any]:
    return {"upscalingMode": overlay.autoscaler.upscaling_mode, "idleTimeoutSeconds": overlay.autoscaler.idle_timeout_s}


def rayservice(overlay: Overlay, serve_config: dict[str, Any]) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "rayVersion": overlay.ray_version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": _autoscaler(overlay),
        "headGroupSpec": _head_group(overlay, serving=True, hub_access=False),
        "workerGroupSpecs": [
            _worker_group(overlay, overlay.groups.routers, "routers", serving=True, hub_access=False,
                          extra_mounts=api_keys_mount(overlay)),
            _worker_group(overlay, overlay.groups.encoders, "encoders", serving=True, hub_access=True),
        ],
    }
    ft = overlay.gcs_fault_tolerance
    if ft.enabled:
        secret = {"name": ft.redis_password.name, "key": ft.redis_password.key}
        cluster["gcsFaultToleranceOptions"] = {"redisAddress": ft.redis_address,
                                               "redisPassword": {"valueFrom": {"secretKeyRef": secret}}}
    return {
        "apiVersion": RAY_API,
        "kind": "RayService",
        "metadata": {"name": overlay.name, "labels": {"app.kubernetes.io/name": overlay.name}},
        "spec": {
            "serveConfigV2": serve_config_text(serve_config),
            "upgradeStrategy": {"type": "NewCluster"},  # zero-downtime: a new cluster takes over when ready
            "excludeHeadPodFromServeSvc": True,  # traffic goes to worker pods' proxies, not the head's
            "rayClusterConfig": cluster,
        },
    }


def rayjobs(overlay: Overlay) -> list[dict[str, Any]]:
    data = ({"name": "data", "persistentVolumeClaim": {"claimName": overlay.jobs.data_claim}},
            {"name": "data", "mountPath": "/data"})
    out = []
    for suffix, job in overlay.jobs.specs.items():
        name = f"{overlay.name}-{suffix}"
        out.append({
            "apiVersion": RAY_API,
            "kind": "RayJob",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": overlay.name,
                                                  "app.kubernetes.io/component": suffix}},
            "spec": {
                "entrypoint": job.entrypoint,
                "submissionMode": "K8sJobMode",
                "shutdownAfterJobFinishes": True,
                "ttlSecondsAfterFinished": overlay.jobs.ttl_seconds_after_finished,
                "activeDeadlineSeconds": overlay.jobs.active_deadline_seconds,
                "rayClusterSpec": {
                    "rayVersion": overlay.ray_version,
                    "enableInTreeAutoscaling": True,
                    "autoscalerOptions": _autoscaler(overlay),
                    "headGroupSpec": _head_group(overlay, serving=False, hub_access=True, extra_mounts=[data]),
                    "workerGroupSpecs": [_worker_group(overlay, job.workers, suffix, serving=False, hub_access=True,
                                                       extra_mounts=[data])],
                },
            },
        })
    return out


def podmonitor(overlay: Overlay) -> dict[str, Any]:
    """Prometheus Operator scrapes Ray's metrics port on every pod of the service."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": overlay.name, "labels": {"app.kubernetes.io/name": overlay.name}},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": overlay.name}},
            "namespaceSelector": {"matchNames": [overlay.namespace]},
            "podMetricsEndpoints": [{
                "port": "metrics",
                "path": "/metrics",
                "interval": "15s",
                "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                                 "targetLabel": "component"}],
            }],
        },
    }


def dashboard_configmap(overlay: Overlay, dashboard: dict[str, Any]) -> dict[str, Any]:
    """For Grafana's dashboard sidecar (kube-prometheus-stack loads ConfigMaps labelled grafana_dashboard=1)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{overlay.name}-dashboard", "labels": {"grafana_dashboard": "1", **labels(overlay, "monitoring")}},
        "data": {f"{overlay.name}.json": json.dumps(dashboard, indent=2)},
    }


def secret_templates(overlay: Overlay) -> list[dict[str, Any]]:
    """Secrets the manifests reference, with placeholder values (or create them with kubectl)."""
    pairs = [(overlay.hf_token, "hf_...your Hugging Face token...")]
    if overlay.api_keys is not None:
        pairs.append((overlay.api_keys, "...one API key per line, at least 16 characters each...\n"))
    if overlay.gcs_fault_tolerance.enabled:
        pairs.append((overlay.gcs_fault_tolerance.redis_password, "...the Redis password..."))
    return [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": ref.name, "labels": {"app.kubernetes.io/name": overlay.name}},
             "stringData": {ref.key: placeholder}} for ref, placeholder in pairs]
