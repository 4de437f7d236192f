"""k8s/overlay.yaml: what only Kubernetes needs on top of serve_config.yaml (image, pod
groups, GPU placement, secrets, fault tolerance, jobs). Validated like the app config:
unknown keys are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..http_limits import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecretKey(Strict):
    name: str = Field(description="Secret name.")
    key: str = Field(description="Key inside the secret.")


class PodShape(Strict):
    cpu: str = Field(description="CPU request and limit, e.g. '4'.")
    memory: str = Field(description="Memory request and limit, e.g. '16Gi'.")
    gpus: int = Field(0, ge=0, description="nvidia.com/gpu limit per pod.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    shm: str = Field("2Gi", description="Size of the in-memory /dev/shm volume (Ray's object store).")


class WorkerGroup(PodShape):
    name: str = Field(description="KubeRay groupName.")
    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    replicas: int = Field(ge=0, description="Pods at creation; the autoscaler moves it within [min, max].")
    ray_resources: dict[str, int] = Field(
        default_factory=dict, description="Custom Ray resources each pod advertises (rayStartParams.resources)."
    )


class Groups(Strict):
    routers: WorkerGroup = Field(description="CPU pods for the Router deployment.")
    encoders: WorkerGroup = Field(description="GPU pods for ImageEncoder/TextEncoder deployments.")


class FaultTolerance(Strict):
    enabled: bool = Field(True, description="GCS fault tolerance with an external Redis.")
    redis_address: str = Field(description="host:port of the Redis the head writes GCS state to.")
    redis_password: SecretKey


class Autoscaler(Strict):
    idle_timeout_s: int = Field(120, ge=0, description="How long a worker pod idles before it is removed.")
    upscaling_mode: str = Field("Default", pattern="^(Default|Aggressive|Conservative)$")


class Drain(Strict):
    deadline_s: int = Field(60, ge=5, description="How long preStop waits for Serve replicas to leave the node.")


class ApiKeys(SecretKey):
    mount_path: str = Field("/etc/clip-serve/api-keys", description="Where router pods see the secret (a folder).")

    @property
    def file(self) -> str:
        return f"{self.mount_path}/{self.key}"


class Job(Strict):
    entrypoint: str = Field(description="Command the job's driver runs (inside the image).")
    workers: WorkerGroup


class Jobs(Strict):
    data_claim: str = Field(description="ReadWriteMany PVC mounted at /data on every job pod.")
    ttl_seconds_after_finished: int = Field(600, ge=0)
    active_deadline_seconds: int = Field(86400, ge=60)
    specs: dict[str, Job] = Field(description="RayJob name suffix -> job.")


class Overlay(Strict):
    name: str = Field(description="RayService name; pods and monitors derive their names from it.")
    namespace: str = Field(description="Namespace the commands of docs/operations.md install into.")
    image: str = Field(description="Container image built from k8s/Dockerfile.")
    ray_version: str
    head: PodShape
    groups: Groups
    deployment_overrides: dict[str, dict[str, Any]] = Field(
        description="fnmatch pattern of a Serve deployment name -> options merged over serve_config.yaml's."
    )
    hf_token: SecretKey
    args_overrides: dict[str, Any] = Field(
        default_factory=dict, description="Deep-merged over serve_config.yaml's app args (e.g. auth on Kubernetes)."
    )
    api_keys: ApiKeys | None = Field(None, description="Secret with the API keys, mounted into router pods.")
    ingress: Literal["proxy", "haproxy"] = Field(
        "proxy", description="How HTTP reaches the routers (deployments/ingress.py): Serve's Python proxy on "
        "every pod (Ray's default, with proxy_max_inflight), or HAProxy in front of routers serving HTTP "
        "themselves on ports 30000-31000, which must be reachable between pods."
    )
    proxy_max_inflight: int | None = Field(
        None, ge=1, description="Requests each Serve HTTP proxy forwards at once; beyond it a 503 envelope "
        "without a router hop (deployments/serving/proxy_admission.py). None: off. Python proxy only: behind "
        "HAProxy each router sheds at its own max_concurrent_requests either way."
    )
    header_timeout_s: float = Field(
        DEFAULT_HEADER_TIMEOUT_S, gt=0, description="Seconds a client has to send a request's line and headers, "
        "in either ingress; then 408 and the connection is closed (deployments/http_limits.py)."
    )
    max_header_bytes: int = Field(
        DEFAULT_MAX_HEADER_BYTES, ge=1024, description="Most bytes of a request's line and headers, in either "
        "ingress; larger heads get 431 (Python proxy) or 400 (HAProxy) and the connection is closed."
    )
    gcs_fault_tolerance: FaultTolerance
    autoscaler: Autoscaler = Field(default_factory=Autoscaler)
    drain: Drain = Field(default_factory=Drain)
    metrics_port: int = Field(8080, description="Ray's Prometheus endpoint on every pod.")
    serve_port: int = Field(8000)
    jobs: Jobs


def load_overlay(path: Path) -> Overlay:
    return Overlay.model_validate(yaml.safe_load(Path(path).read_text()))
