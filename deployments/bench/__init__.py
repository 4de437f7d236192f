"""The benchmark suite: `python -m deployments bench <scenario> [options]`, one module per
scenario (`python -m deployments bench <scenario> --help` for its options). common.py holds
what they share and imports nothing heavier than numpy, so the `gpu` scenario runs on a
machine with torch and transformers but no Ray. Results are appended to docs/benchmarks.md
with `--record docs/benchmarks.md`.
"""

from __future__ import annotations

import sys
from importlib import import_module

# scenario -> module, one line
SCENARIOS = {
    "served": ("served", "model-only against served throughput on a local cluster, one table (the headline figures)"),
    "model": ("model", "model-only throughput: the backend called in this process, no serving (the ceiling)"),
    "backends": ("backends", "ONNX Runtime (fp32, int8) against the torch backend (fp32, bf16)"),
    "classify": ("classify", "/v1/classify with cached labels against /v1/embeddings, per image"),
    "compile": ("compile", "eager against `torch_compile: true`, model-only, side by side"),
    "gpu": ("gpu", "GPU figures and parity checks (torch + transformers only, no Ray; --device cpu --quick anywhere)"),
    "jobs": ("jobs", "batch embedding job throughput next to the served path and the model alone"),
    "load": ("load", "closed-loop HTTP load on a running server (--url): N clients, one request each in flight"),
    "router-cpu": ("router_cpu", "router CPU per image before any model runs (parse, decode, resize)"),
    "heavy": ("heavy", "small requests' latency alone and beside heavy requests at the limits (--url, JSON report)"),
    "reliability": ("reliability", "overload, soak and chaos on a local multi-node Ray cluster (JSON report)"),
}


def usage() -> str:
    width = max(map(len, SCENARIOS))
    lines = [f"  {name:{width}}  {line}" for name, (_, line) in SCENARIOS.items()]
    return ("usage: python -m deployments bench <scenario> [options]\n\n"
            "Scenarios (`python -m deployments bench <scenario> --help` for options):\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[2:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0
    if argv[0] not in SCENARIOS:
        print(f"unknown scenario {argv[0]!r}\n\n{usage()}", end="", file=sys.stderr)
        return 2
    return import_module(f"{__name__}.{SCENARIOS[argv[0]][0]}").main(argv[1:]) or 0


def build_parser():
    """A parser listing the scenarios (each scenario module builds its own: `scenario_parser`)."""
    from ..tools import command_parser

    parser = command_parser("bench", usage())
    parser.add_argument("scenario", choices=list(SCENARIOS))
    return parser



def scenario_parser(name: str):
    """The parser of one scenario, built without running it (the docs check reads its flags)."""
    return import_module(f"{__name__}.{SCENARIOS[name][0]}").build_parser()
