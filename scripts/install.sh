#!/usr/bin/env bash
# Install clip-serve and its test tools into the current Python environment.
# torch goes first and pinned: on machines with a local CPU wheel this takes it, and it
# keeps pip from resolving torch on its own (which pulls several GB of CUDA packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install --quiet "torch==2.13.0"
"$PYTHON" -m pip install --quiet -e ".[test]"
# OpenAI's CLIP code, the tests' reference model (tests/support/openai_clip.py loads only its
# clip/model.py). --no-deps: its dependencies include torchvision, which would replace torch.
"$PYTHON" -m pip install --quiet --no-deps "clip-anytorch==2.6.0"
"$PYTHON" -c "import deployments, torch, ray; print('installed clip-serve', deployments.__version__, '| torch', torch.__version__, '| ray', ray.__version__)"
