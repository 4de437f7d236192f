"""The Kubernetes manifests: generated from serve_config.yaml + k8s/overlay.yaml (drift
fails CI), valid against the KubeRay CRDs and Kubernetes' own schemas, and shaped as the
operations design says (GPU placement, probes, drain, secrets, autoscaling bounds)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest
import yaml
from support.helpers import REPO
from support.k8s_schemas import KUBERAY_CRDS, errors, load_manifests

from deployments.config import parse_app_config
from deployments.k8s.overlay import load_overlay
from deployments.k8s.serve_config import kubernetes_serve_config
from deployments.launch import load_serve_config

K8S = REPO / "k8s"
RENDER = [sys.executable, "-m", "deployments", "render-k8s"]
MANIFESTS = ["rayservice.yaml", "rayjob-batch-embed.yaml", "rayjob-finetune.yaml", "monitoring.yaml",
             "secrets.example.yaml"]


@pytest.fixture(scope="module")
def rayservice() -> dict:
    (doc,) = load_manifests(K8S / "rayservice.yaml")
    return doc


@pytest.fixture(scope="module")
def overlay():
    return load_overlay(K8S / "overlay.yaml")


def containers(pod_template: dict) -> dict:
    (container,) = pod_template["spec"]["containers"]
    return container


def test_committed_manifests_match_their_sources():
    result = subprocess.run([*RENDER, "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_on_drift_and_rendering_fixes_it(tmp_path):
    shutil.copy(REPO / "serve_config.yaml", tmp_path)
    shutil.copytree(K8S, tmp_path / "k8s")
    config = tmp_path / "serve_config.yaml"
    config.write_text(config.read_text().replace("max_replicas: 8", "max_replicas: 6", 1))
    drift = subprocess.run([*RENDER, "--check", "--root", str(tmp_path)], capture_output=True, text=True)
    assert drift.returncode == 1
    assert "k8s/rayservice.yaml" in drift.stderr and "max_replicas: 6" in drift.stdout
    assert subprocess.run([*RENDER, "--root", str(tmp_path)], capture_output=True).returncode == 0
    assert subprocess.run([*RENDER, "--check", "--root", str(tmp_path)], capture_output=True).returncode == 0
    (doc,) = load_manifests(tmp_path / "k8s" / "rayservice.yaml")
    assert "max_replicas: 6" in doc["spec"]["serveConfigV2"]


def test_overlay_typos_fail(tmp_path):
    shutil.copy(REPO / "serve_config.yaml", tmp_path)
    shutil.copytree(K8S, tmp_path / "k8s")
    overlay = tmp_path / "k8s" / "overlay.yaml"
    overlay.write_text(overlay.read_text().replace('"TextEncoder:*":', '"TxtEncoder:*":'))
    result = subprocess.run([*RENDER, "--root", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and "TxtEncoder:*" in result.stderr


def test_every_manifest_validates_against_its_schema():
    if not KUBERAY_CRDS.exists():
        pytest.fail(f"missing {KUBERAY_CRDS}: the KubeRay CRDs come from ../shared beside the checkout")
    kinds = []
    for name in MANIFESTS:
        for doc in load_manifests(K8S / name):
            kinds.append(doc["kind"])
            assert errors(doc) == [], f"{name} {doc['kind']} {doc['metadata']['name']}"
    assert sorted(kinds) == ["ConfigMap", "PodMonitor", "RayJob", "RayJob", "RayService", "Secret", "Secret", "Secret"]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(minReplica=1), "'minReplica' was unexpected"),
        (lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].update(maxReplicas="4"), "is not of type 'integer'"),
        (lambda d: containers(d["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["template"])["readinessProbe"]
         ["httpGet"].pop("port"), "'port' is a required property"),
        (lambda d: containers(d["spec"]["rayClusterConfig"]["workerGroupSpecs"][1]["template"])["resources"]["limits"]
         .update({"nvidia.com/gpu": "one"}), "does not match"),
        (lambda d: d["metadata"].update(labelz={}), "'labelz' was unexpected"),
        (lambda d: d["spec"].update(managedBy="someone"), "CEL rule"),
    ],
    ids=["unknown-field", "wrong-type", "missing-required", "bad-quantity", "bad-metadata", "cel-guarded"],
)
def test_the_validator_rejects_broken_manifests(rayservice, mutate, expected):
    broken = copy.deepcopy(rayservice)
    mutate(broken)
    assert any(expected in e for e in errors(broken)), errors(broken)


def test_the_validator_rejects_broken_monitoring_and_core_objects():
    monitor, configmap = load_manifests(K8S / "monitoring.yaml")
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    assert any("does not match" in e for e in errors(monitor))
    configmap["data"]["extra"] = 42
    assert any("is not of type" in e for e in errors(configmap))
    assert errors({"apiVersion": "v9", "kind": "Gadget", "metadata": {}}) != []


def test_serve_config_v2_is_serve_config_plus_overlay(rayservice, overlay):
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert embedded == kubernetes_serve_config(load_serve_config(REPO / "serve_config.yaml"), overlay.deployment_overrides,
                                               overlay.args_overrides)
    (app,) = embedded["applications"]
    auth = parse_app_config(app["args"]).auth  # on for Kubernetes, reading the mounted secret
    assert auth.enabled and auth.api_keys_file == overlay.api_keys.file
    variants = parse_app_config(app["args"]).variants
    deployments = {d["name"]: d for d in app["deployments"]}
    assert set(deployments) == {"Router"} | {v.deployment_name(t) for v in variants for t in v.towers}
    router = deployments.pop("Router")["ray_actor_options"]
    assert router["resources"] == {"router_node": 1} and "num_gpus" not in router
    # torch encoders on GPUs; ONNX Runtime encoders are the CPU option and ask for no GPU
    on_cpu = {v.deployment_name(t) for v in variants if v.backend == "onnx" for t in v.towers}
    assert all((d["ray_actor_options"]["num_gpus"] > 0) == (n not in on_cpu) for n, d in deployments.items())
    # every encoder at its minimum fits on the GPU group's minimum, routers on the CPU group's
    gpus_at_min = sum(d["ray_actor_options"]["num_gpus"] * d["autoscaling_config"]["min_replicas"]
                      for d in deployments.values())
    assert gpus_at_min <= overlay.groups.encoders.gpus * overlay.groups.encoders.min_replicas
    assert all(d["user_config"]["max_batch_size"] >= 64 for n, d in deployments.items() if n not in on_cpu)


def test_cluster_layout_probes_drain_and_secrets(rayservice, overlay):
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    routers, encoders = cluster["workerGroupSpecs"]
    assert (routers["minReplicas"], routers["maxReplicas"]) == (1, 4)
    assert json.loads(json.loads(routers["rayStartParams"]["resources"])) == {"router_node": 100}
    gpu_pod = encoders["template"]["spec"]
    assert containers(encoders["template"])["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_pod["tolerations"][0]["key"] == "nvidia.com/gpu" and gpu_pod["nodeSelector"]
    assert "nvidia.com/gpu" not in containers(routers["template"])["resources"]["limits"]
    for group in (routers, encoders):
        container = containers(group["template"])
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "serve"}
        assert "local_raylet_healthz" in container["livenessProbe"]["exec"]["command"][-1]  # liveness is not readiness
        assert "deployments.drain" in container["lifecycle"]["preStop"]["exec"]["command"][-1]
        assert group["template"]["spec"]["terminationGracePeriodSeconds"] > overlay.drain.deadline_s
    hf_token = {e["name"]: e for e in containers(encoders["template"])["env"]}["HF_TOKEN"]
    assert hf_token["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
    redis = cluster["gcsFaultToleranceOptions"]
    assert redis["redisPassword"]["valueFrom"]["secretKeyRef"] == {"name": "redis-password", "key": "password"}
    assert "value" not in redis["redisPassword"]  # never a literal password in the manifest
    # API keys: a secret mounted read-only into router pods only; no key text anywhere
    mounts = {m["name"]: m for m in containers(routers["template"])["volumeMounts"]}
    assert mounts["api-keys"] == {"name": "api-keys", "mountPath": overlay.api_keys.mount_path, "readOnly": True}
    volumes = {v["name"]: v for v in routers["template"]["spec"]["volumes"]}
    assert volumes["api-keys"]["secret"]["secretName"] == overlay.api_keys.name
    assert "api-keys" not in {m["name"] for m in containers(encoders["template"])["volumeMounts"]}
    # every serving pod's proxy sheds in the envelope beyond its cap
    assert overlay.ingress == "proxy"
    for template in (cluster["headGroupSpec"]["template"], routers["template"], encoders["template"]):
        env = {e["name"]: e.get("value") for e in containers(template)["env"]}
        assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "deployments.serving.proxy_admission:middlewares"
        assert int(env["CLIP_SERVE_PROXY_MAX_INFLIGHT"]) == overlay.proxy_max_inflight
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"
        assert_header_limits(env)


def assert_header_limits(env: dict[str, str | None]) -> None:
    """Every serving pod bounds request heads (deployments/http_limits.py) in whichever
    ingress it runs."""
    from deployments.http_limits import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES

    assert float(env["CLIP_SERVE_HEADER_TIMEOUT_S"]) == DEFAULT_HEADER_TIMEOUT_S
    assert int(env["CLIP_SERVE_MAX_HEADER_BYTES"]) == DEFAULT_MAX_HEADER_BYTES
    assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"]  # installs the guard in Serve's HTTP servers
    if env["RAY_SERVE_ENABLE_HA_PROXY"] == "1":
        # the launcher where k8s/Dockerfile copies the package, adding HAProxy's header timeout
        assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == "/home/ray/clip-serve/deployments/haproxy_launcher.sh"
        assert int(env["RAY_SERVE_HAPROXY_TUNE_BUFSIZE"]) > DEFAULT_MAX_HEADER_BYTES


def serving_pod_envs(overlay, **update) -> list[dict[str, str | None]]:
    from deployments.k8s.manifests import rayservice as build

    serve_config = kubernetes_serve_config(load_serve_config(REPO / "serve_config.yaml"), overlay.deployment_overrides)
    doc = build(overlay.model_copy(update=update), serve_config)
    assert not errors(doc)
    cluster = doc["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    return [{e["name"]: e.get("value") for e in containers(template)["env"]} for template in templates]


@pytest.mark.parametrize("proxy_max_inflight", [768, None])
def test_haproxy_ingress_overlay_sets_it_on_every_serving_pod_without_a_proxy_cap(overlay, proxy_max_inflight):
    for env in serving_pod_envs(overlay, ingress="haproxy", proxy_max_inflight=proxy_max_inflight):
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
        # routers shed against their own cap in their own HTTP servers, with or without a
        # proxy cap (that one sizes Python proxies only)
        assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "deployments.serving.proxy_admission:middlewares"
        assert "CLIP_SERVE_PROXY_MAX_INFLIGHT" not in env
        assert_header_limits(env)


def test_python_proxy_without_a_cap_sheds_nothing_but_keeps_the_header_limits(overlay):
    for env in serving_pod_envs(overlay, ingress="proxy", proxy_max_inflight=None):
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
        assert env["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] == "deployments.serving.proxy_admission:guard_only"
        assert "CLIP_SERVE_PROXY_MAX_INFLIGHT" not in env
        assert_header_limits(env)


def test_jobs_and_monitoring(overlay):
    jobs = [doc for name in ("rayjob-batch-embed.yaml", "rayjob-finetune.yaml") for doc in load_manifests(K8S / name)]
    assert {j["metadata"]["name"] for j in jobs} == {"clip-serve-batch-embed", "clip-serve-finetune"}
    for job in jobs:
        assert job["spec"]["shutdownAfterJobFinishes"] is True
        assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    monitor, configmap = load_manifests(K8S / "monitoring.yaml")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": overlay.name}
    board = json.loads((K8S / "grafana-dashboard.json").read_text())
    assert json.loads(configmap["data"]["clip-serve.json"]) == board
