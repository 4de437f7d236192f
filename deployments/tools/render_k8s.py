"""Render the Kubernetes manifests under k8s/ from serve_config.yaml and k8s/overlay.yaml.

    python -m deployments render-k8s            # (re)write the generated files
    python -m deployments render-k8s --check    # exit 1 if any generated file differs (CI)

serve_config.yaml stays the one source of truth for the Serve application; the overlay
adds only what Kubernetes needs (image, pod groups, GPU placement, secrets, jobs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import REPO, command_parser, write_or_check


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("render-k8s", __doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on drift")
    parser.add_argument("--root", type=Path, default=REPO, help="checkout holding serve_config.yaml and k8s/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..k8s.render import render

    return write_or_check(render(args.root), args.root, args.check, "python -m deployments render-k8s")
