"""Write the synthetic coloured-shapes dataset (deployments/jobs/synthetic.py).

    python -m deployments make-shapes-dataset OUT [--n 5000] [--seed 0] [--size 64] [--format folder|parquet]

folder: OUT/images/*.png + OUT/metadata.jsonl (file_name, text, colour, shape);
parquet: OUT/shapes.parquet (image = PNG bytes, text, colour, shape). Either is what
`python -m deployments finetune` reads. Use another --seed for a held-out set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import command_parser


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("make-shapes-dataset", __doc__)
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--format", choices=["folder", "parquet"], default="folder")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..jobs.synthetic import write_dataset

    print(write_dataset(Path(args.out), args.n, args.seed, args.size, args.format))
    return 0
