"""`python -m deployments bench gpu`, the GPU benchmark a session runs when a GPU machine is lent: its
quick mode on this CPU, so the script works the day one is, and its checks failing a
tower that does not match the reference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployments.backends.checkpoint import Checkpoint
from deployments.backends.torch_backend import TorchBackend
from deployments.backends.torch_compile import cpu_compiler_available
from deployments.checkpoint_builder import build_clip_checkpoint
from deployments.preprocess.images import ImageLimits, prepare_image

from deployments.bench.common import photo_jpeg
from deployments.bench.gpu_checks import CpuReference, dtype_checks
from deployments.bench.model import tokenize

REPO = Path(__file__).resolve().parents[2]


QUICK = [sys.executable, "-m", "deployments", "bench", "gpu", "--device", "cpu", "--quick", "--seconds", "0.05"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The three quick runs the tests below read, started together: each keeps about one
    core busy (the tiny models' figures are mostly Python), so side by side they take little
    longer than one. From the repo root, as on a lent GPU machine (a copied tree, nothing
    installed). `no-compiler`: inductor pointed at a compiler that does not exist, with a
    cache of its own, so nothing compiled by the other run is reused. One torch thread each:
    three processes spinning two threads each on a small machine would mostly wait on each other."""
    tmp = tmp_path_factory.mktemp("bench-gpu")
    plans = {
        "vit": ([], {}),
        "no-compiler": ([], {"CXX": str(tmp / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp / "ind")}),
        "rn50": (["--arch", "rn50", "--no-compile"], {}),
    }
    started = {}
    for name, (args, env) in plans.items():
        out = tmp / f"{name}.json"
        started[name] = (subprocess.Popen([*QUICK, *args, "--json", str(out)], stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True, cwd=REPO,
                                          env={**os.environ, "OMP_NUM_THREADS": "1", **env}), out)
    done = {}
    for name, (proc, out) in started.items():
        stdout, stderr = proc.communicate(timeout=540)
        done[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out)
    return done


def test_quick_run_on_cpu_checks_and_measures(runs):
    proc, out = runs["vit"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    names = {c["name"] for c in result["checks"]}
    assert {"image tower, float32", "text tower, bfloat16", "image tower, bfloat16, 2 forwards at once"} <= names
    assert all(c["ok"] for c in result["checks"])
    assert {(r["tower"], r["how"]) for r in result["figures"]} >= {
        ("image", "compute"), ("image", "from host, 2 in flight"), ("text", "from host, 1 in flight")}
    assert all(r["items_per_s"] > 0 for r in result["figures"])
    assert result["router"]["per_core"] > 0 and result["router"]["all_cores"] > 0
    assert "end-to-end bound" in result["summary"]


def test_checks_fail_a_tower_with_other_weights(model_dir, tmp_path):
    """Same shapes, other weights: every check must say no."""
    other = build_clip_checkpoint(tmp_path / "other", seed=5)
    spec = Checkpoint.open(str(model_dir)).image_spec()
    pixels = np.stack([prepare_image(photo_jpeg(s, 64, 48), spec, ImageLimits()) for s in range(4)])
    texts = ["a photo of a cat", "a red square on a table"]
    reference = CpuReference(model_dir)

    def load(tower, dtype, **options):
        return TorchBackend.load(Checkpoint.open(str(other)), tower, device="cpu", dtype=dtype, **options)

    tokens = tokenize(load("text", "float32"), texts)
    checks = dtype_checks(load, reference.images(pixels), reference.texts(texts), pixels, tokens, ["float32"])
    assert len(checks) == 3 and not any(c.ok for c in checks), checks


@pytest.mark.skipif(not cpu_compiler_available(),
                    reason="without a C++ compiler the script skips compiling instead of trying")
def test_a_mode_that_fails_to_compile_fails_the_run_but_not_the_other_figures(runs):
    """Inductor pointed at a compiler that does not exist: the run exits 1, says what
    failed, and still reports the eager figures and the router bound."""
    proc, out = runs["no-compiler"]
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    failed = [c for c in result["checks"] if not c["ok"]]
    assert failed and all("torch_compile" in c["name"] for c in failed)
    assert "torch_compile" in result["summary"]["failed steps"]
    assert any(r["mode"] == "eager" for r in result["figures"]) and result["router"]["all_cores"] > 0


def test_quick_run_of_a_resnet_on_cpu(runs):
    """`--arch rn50`: a ResNet CLIP in open_clip's layout, checked against the float32 CPU
    backend (transformers has no ResNet CLIP to compare with) and measured."""
    proc, out = runs["rn50"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"image tower, float32", "image tower, bfloat16"} <= {c["name"] for c in result["checks"]}
    assert all(c["ok"] for c in result["checks"])
    assert {r["tower"] for r in result["figures"]} == {"image", "text"} and all(
        r["items_per_s"] > 0 for r in result["figures"])
