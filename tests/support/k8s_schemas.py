"""Schema validation of the Kubernetes manifests, the way the API server checks them.

- KubeRay kinds (RayService, RayJob): the CRD's openAPIV3Schema from ../shared/data/kuberay-crds,
  validated with jsonschema. Like `kubectl apply --validate=strict`, unknown fields are errors:
  every object schema that lists properties gets `additionalProperties: false` unless it
  carries `x-kubernetes-preserve-unknown-fields`. CEL rules (`x-kubernetes-validations`)
  are not evaluated here, so a manifest that sets a field guarded by one fails instead.
- Core kinds (Secret, ConfigMap) and every object's metadata: kubernetes-validate's bundled
  Kubernetes JSON schemas, strict.
- PodMonitor: k8s/schemas/podmonitor.schema.json, a strict subset of the Prometheus Operator
  CRD written for the fields we use (that project's CRD is not vendored here).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from .helpers import REPO

KUBERAY_CRDS = REPO.parent / "shared" / "data" / "kuberay-crds"
CRD_FILES = {"RayService": "ray.io_rayservices.yaml", "RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
PODMONITOR_SCHEMA = REPO / "k8s" / "schemas" / "podmonitor.schema.json"
KUBERNETES_VERSION = "1.37"


class MissingSchemas(RuntimeError):
    pass


def _strict(node: Any, path: tuple, cel_paths: list[tuple]) -> Any:
    """A structural schema made strict; records where CEL rules apply (property paths)."""
    if isinstance(node, list):
        return [_strict(item, path, cel_paths) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: _strict(sub, path + (name,), cel_paths) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _strict(value, path + ("*",), cel_paths)
        elif key in ("allOf", "anyOf", "oneOf", "not"):
            out[key] = _strict(value, path, cel_paths)
        else:
            out[key] = value
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    if "properties" in node and "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if any("oldSelf" not in rule["rule"] for rule in node.get("x-kubernetes-validations", [])):
        cel_paths.append(path)
    return out


def _values_at(doc: Any, path: tuple) -> list[Any]:
    if not path:
        return [doc]
    head, rest = path[0], path[1:]
    if head == "*":
        children = doc if isinstance(doc, list) else list(doc.values()) if isinstance(doc, dict) else []
        return [v for child in children for v in _values_at(child, rest)]
    return _values_at(doc[head], rest) if isinstance(doc, dict) and head in doc else []


@lru_cache(maxsize=None)
def crd_schema(kind: str) -> tuple[dict, tuple]:
    path = KUBERAY_CRDS / CRD_FILES[kind]
    if not path.exists():
        raise MissingSchemas(f"KubeRay CRD {path} is missing: the tests expect ../shared/data/kuberay-crds "
                             "beside the checkout (CI provides it)")
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # ~1 MB each
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    cel_paths: list[tuple] = []
    schema = _strict(version["schema"]["openAPIV3Schema"], (), cel_paths)
    return schema, tuple(cel_paths)


def metadata_errors(doc: dict) -> list[str]:
    """ObjectMeta as Kubernetes defines it (checked as the metadata of a ConfigMap)."""
    return core_errors({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})})


def core_errors(doc: dict) -> list[str]:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path)) or '(root)'}: {exc.message}"]
    return []


def _jsonschema_errors(schema: dict, doc: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def crd_errors(doc: dict) -> list[str]:
    schema, cel_paths = crd_schema(doc["kind"])
    errors = _jsonschema_errors(schema, doc) + metadata_errors(doc)
    for path in cel_paths:
        if _values_at(doc, path):
            errors.append(f"{'.'.join(path)}: guarded by a CEL rule this validator does not evaluate")
    return errors


def podmonitor_errors(doc: dict) -> list[str]:
    return _jsonschema_errors(json.loads(PODMONITOR_SCHEMA.read_text()), doc) + metadata_errors(doc)


def errors(doc: dict) -> list[str]:
    """Every schema violation of one manifest; an unknown kind is itself an error."""
    doc = copy.deepcopy(doc)
    if doc.get("apiVersion") == "ray.io/v1" and doc.get("kind") in CRD_FILES:
        return crd_errors(doc)
    if doc.get("apiVersion") == "monitoring.coreos.com/v1" and doc.get("kind") == "PodMonitor":
        return podmonitor_errors(doc)
    if doc.get("apiVersion") == "v1":
        return core_errors(doc)
    return [f"no schema for {doc.get('apiVersion')} {doc.get('kind')}"]


def load_manifests(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
