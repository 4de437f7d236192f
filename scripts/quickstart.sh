#!/usr/bin/env bash
# One command on a fresh machine: install, build the embedded demo model (offline), serve
# it on http://127.0.0.1:8000. Extra arguments go to `python -m deployments serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec "${PYTHON:-python3}" -m deployments serve "$@"
