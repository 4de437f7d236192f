"""Write the synthetic coloured-shapes dataset (deployments/jobs/synthetic.py).

    python scripts/make_shapes_dataset.py OUT [--n 5000] [--seed 0] [--size 64] [--format folder|parquet]

folder: OUT/images/*.png + OUT/metadata.jsonl (file_name, text, colour, shape);
parquet: OUT/shapes.parquet (image = PNG bytes, text, colour, shape). Either is what
scripts/finetune.py reads. Use another --seed for a held-out set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.jobs.synthetic import write_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--format", choices=["folder", "parquet"], default="folder")
    args = ap.parse_args(argv)
    print(write_dataset(Path(args.out), args.n, args.seed, args.size, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
