"""`python -m deployments` (also `clip-serve`): one command line whose dispatch stays light,
a benchmark suite whose `--help` lists its scenarios, a GPU scenario that imports without
Ray, and no `sys.path` patching anywhere in the package or scripts/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deployments.__main__ import COMMANDS, command_parser
from deployments.bench import SCENARIOS, scenario_parser

REPO = Path(__file__).resolve().parents[2]
BLOCK_RAY = """
import sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"{name} is blocked: this machine has no Ray")
sys.meta_path.insert(0, NoRay())
"""


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_help_imports_neither_torch_nor_ray():
    proc = python("import sys\nfrom deployments.__main__ import main\ntry:\n    main(['--help'])\n"
                  "except SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
    for name in COMMANDS:
        assert name in proc.stdout


def test_bench_help_lists_every_scenario_in_one_line_each():
    proc = subprocess.run([sys.executable, "-m", "deployments", "bench", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert set(SCENARIOS) == {"served", "model", "backends", "classify", "compile", "gpu", "jobs", "load", "heavy",
                              "router-cpu", "reliability"}
    for name in SCENARIOS:
        assert sum(line.split()[:1] == [name] for line in lines) == 1, name
    unknown = subprocess.run([sys.executable, "-m", "deployments", "bench", "nope"], cwd=REPO, capture_output=True,
                             text=True, timeout=120)
    assert unknown.returncode == 2 and "unknown scenario" in unknown.stderr


def test_the_gpu_scenario_runs_without_ray():
    """The lent GPU machine has torch and transformers but no Ray: the scenario and what
    it imports must not need it (`python3 -m deployments bench gpu` from the repo root)."""
    lazy = ["backends.checkpoint", "backends.torch_backend", "backends.torch_compile", "checkpoint_builder", "demo",
            "preprocess.images", "preprocess.tokenizer", "engine.payloads"]  # what the run imports later
    imports = "".join(f"import deployments.{name}\n" for name in ["bench.gpu", *lazy])
    proc = python(BLOCK_RAY + imports + "from deployments.__main__ import main\n"
                  "try:\n    main(['bench', 'gpu', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
                  "assert 'ray' not in sys.modules\nprint('ok')")
    assert proc.returncode == 0 and proc.stdout.splitlines()[-1] == "ok", proc.stdout + proc.stderr


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_has_a_parser_and_a_main(name):
    parser = scenario_parser(name)
    assert parser.prog == f"python -m deployments bench {name}"
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--help"])
    assert exit_.value.code == 0


@pytest.mark.parametrize("name", sorted(set(COMMANDS) - {"bench"}))
def test_every_command_has_a_parser(name):
    parser = command_parser(name)
    assert parser.prog == f"python -m deployments {name}"


def test_no_sys_path_patching():
    proc = subprocess.run(["grep", "-rn", "sys.path", "scripts", "deployments"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.stdout == "", proc.stdout
