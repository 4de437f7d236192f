"""Kubernetes (KubeRay) manifests rendered from serve_config.yaml plus k8s/overlay.yaml.

`python scripts/render_k8s.py` writes them; `--check` fails when the committed files drift
from what the two inputs produce. Nothing here runs inside the serving path.
"""
