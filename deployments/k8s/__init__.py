"""Kubernetes (KubeRay) manifests rendered from serve_config.yaml plus k8s/overlay.yaml.

`python -m deployments render-k8s` writes them; `--check` fails when the committed files drift
from what the two inputs produce. Nothing here runs inside the serving path.
"""
