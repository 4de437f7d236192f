#!/usr/bin/env python3
"""Render the Kubernetes manifests under k8s/ from serve_config.yaml and k8s/overlay.yaml.

    python scripts/render_k8s.py            # (re)write the generated files
    python scripts/render_k8s.py --check    # exit 1 if any generated file differs (CI)

serve_config.yaml stays the one source of truth for the Serve application; the overlay
adds only what Kubernetes needs (image, pod groups, GPU placement, secrets, jobs).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deployments.k8s.render import render  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on drift")
    parser.add_argument("--root", type=Path, default=REPO, help="checkout holding serve_config.yaml and k8s/")
    args = parser.parse_args(argv)
    drifted = []
    for rel, text in render(args.root).items():
        path = args.root / rel
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            drifted.append(rel)
            diff = difflib.unified_diff(current.splitlines(True), text.splitlines(True), f"{rel} (committed)",
                                        f"{rel} (rendered)", n=2)
            sys.stdout.writelines(list(diff)[:60])
        else:
            path.write_text(text)
            print(f"wrote {rel}")
    if drifted:
        print(f"\n{len(drifted)} generated file(s) out of date: {', '.join(drifted)}\n"
              "Run `python scripts/render_k8s.py` and commit the result.", file=sys.stderr)
        return 1
    if args.check:
        print("k8s manifests are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
