"""Contrastive fine-tuning of a CLIP checkpoint (or training one from a config) on Ray Train.

    python -m deployments finetune DATA --output OUT (--from-checkpoint SRC | --from-config NAME|FILE) [options]
    ray job submit --working-dir . -- python -m deployments finetune DATA --output OUT ...

DATA: an image folder with metadata.jsonl / metadata.csv (file_name, text), a captions
CSV/JSONL, or parquet (image bytes or paths + text). OUT becomes a complete Hugging Face
checkpoint folder that a variant's `source` can point to. Running the same command again
resumes the run (same --run-name and --storage-path) from its last epoch.
"""

from __future__ import annotations

import argparse

from . import command_parser


def build_parser() -> argparse.ArgumentParser:
    from ..jobs.finetune import config_presets

    ap = command_parser("finetune", __doc__)
    ap.add_argument("data", help="training pairs: image folder + captions table, CSV/JSONL, or parquet")
    ap.add_argument("--output", required=True, help="folder for the trained Hugging Face checkpoint")
    start = ap.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-checkpoint", metavar="SRC", help="hub id or local folder of a servable CLIP checkpoint")
    start.add_argument("--from-config", metavar="NAME|FILE",
                       help=f"train from scratch: a preset {sorted(config_presets())} or a config JSON")
    ap.add_argument("--revision", help="hub revision of --from-checkpoint")
    ap.add_argument("--val-data", help="held-out pairs (default: --val-fraction of DATA, split by image hash)")
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--val-size", type=int, default=1000, help="most held-out pairs evaluated per epoch")
    ap.add_argument("--captions", help="captions table of an image folder, if not metadata.*/captions.*")
    ap.add_argument("--image-column")
    ap.add_argument("--text-column")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64, help="pairs per step per worker")
    ap.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (1e-3 suits training from scratch)")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup", type=float, default=0.05, help="share of steps spent warming up")
    ap.add_argument("--freeze", action="append", choices=["image", "text"], default=[], help="keep a tower fixed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP)")
    ap.add_argument("--cpus-per-worker", type=float, default=1)
    ap.add_argument("--gpu", action="store_true", help="one GPU per worker")
    ap.add_argument("--threads", type=int, help="torch threads per worker (default: its CPUs)")
    ap.add_argument("--data-workers", type=int, default=1, help="Ray Data actors decoding images")
    ap.add_argument("--data-cpus", type=float, default=1, help="CPUs per decoding actor")
    ap.add_argument("--run-name", help="Ray Train run name (default: the output folder's name)")
    ap.add_argument("--storage-path", help="Ray Train checkpoints; shared storage on multi-node clusters "
                                           "(default: OUTPUT/../ray_train)")
    ap.add_argument("--address", help="Ray cluster address (default: the job's cluster, or a new local one)")
    return ap


def options_from_args(args: argparse.Namespace):
    from ..jobs.finetune import FinetuneOptions, resolve_config
    from ..jobs.training import ModelInit

    init = (ModelInit(source=args.from_checkpoint, revision=args.revision) if args.from_checkpoint
            else ModelInit(config=resolve_config(args.from_config)))
    train = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
             "warmup_fraction": args.warmup, "freeze": args.freeze, "seed": args.seed,
             "device": "cuda" if args.gpu else "cpu", "threads": args.threads}
    return FinetuneOptions(
        data=args.data, output=args.output, init=init, val_data=args.val_data, val_fraction=args.val_fraction,
        val_size=args.val_size, captions=args.captions, image_column=args.image_column, text_column=args.text_column,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, use_gpu=args.gpu, data_workers=args.data_workers,
        data_cpus=args.data_cpus, run_name=args.run_name, storage_path=args.storage_path, train=train,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = options_from_args(args)
    from ..jobs.cluster import init_ray
    from ..jobs.finetune import run_finetune

    init_ray(args.address)
    run_finetune(options)
    return 0

