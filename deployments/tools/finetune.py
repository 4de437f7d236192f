"""Contrastive fine-tuning of a CLIP or SigLIP checkpoint (or training a CLIP from a config) on Ray Train.

    python -m deployments finetune DATA --output OUT (--from-checkpoint SRC | --from-config NAME|FILE) [options]
    ray job submit --working-dir . -- python -m deployments finetune DATA --output OUT ...

DATA: an image folder with metadata.jsonl / metadata.csv (file_name, text), a captions
CSV/JSONL, or parquet (image bytes or paths + text). SRC: a transformers or open_clip
checkpoint (folder or hub id) or an OpenAI .pt archive, ViT or ResNet, or a SigLIP
checkpoint (transformers layout). The loss is the model family's: CLIP's softmax InfoNCE,
SigLIP's sigmoid loss with its learned bias. OUT becomes a complete checkpoint folder that
a variant's `source` can point to: a Hugging Face folder, or open_clip's layout when SRC is
an open_clip or OpenAI checkpoint. Running the same command again resumes the run (same
--run-name and --storage-path) from its last epoch.
"""

from __future__ import annotations

import argparse

from . import command_parser


def build_parser() -> argparse.ArgumentParser:
    from ..jobs.finetune import config_presets

    ap = command_parser("finetune", __doc__)
    ap.add_argument("data", help="training pairs: image folder + captions table, CSV/JSONL, or parquet")
    ap.add_argument("--output", required=True, help="folder for the trained checkpoint (Hugging Face layout; "
                                                     "open_clip's for open_clip and OpenAI sources)")
    start = ap.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-checkpoint", metavar="SRC",
                       help="hub id, local folder or OpenAI .pt file of a servable CLIP or SigLIP checkpoint")
    start.add_argument("--from-config", metavar="NAME|FILE",
                       help=f"train from scratch: a preset {sorted(config_presets())} or a config JSON")
    ap.add_argument("--revision", help="hub revision of --from-checkpoint")
    ap.add_argument("--allow-pickle-weights", action="store_true",
                    help="read pickle weights (pytorch_model.bin, open_clip_pytorch_model.bin, OpenAI .pt archives) "
                         "when the checkpoint has no safetensors (pickle can run code)")
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
    ap.add_argument("--train", choices=["all", "projections", "text"], default="all",
                    help="what is updated: all (default); projections: only the image and text projections and the "
                         "temperature (a ResNet's image projection is its attention pool's output projection, "
                         "attnpool.c_proj; SigLIP's are its two heads, and its logit_bias trains too); text: the text "
                         "tower as well")
    ap.add_argument("--freeze", action="append", choices=["image", "text"], default=[],
                    help="keep a tower fixed, its projection included")
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

    init = (ModelInit(source=args.from_checkpoint, revision=args.revision,
                      allow_pickle_weights=args.allow_pickle_weights) if args.from_checkpoint
            else ModelInit(config=resolve_config(args.from_config)))
    train = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
             "warmup_fraction": args.warmup, "train": args.train, "freeze": args.freeze, "seed": args.seed,
             "device": "cuda" if args.gpu else "cpu", "threads": args.threads}
    return FinetuneOptions(
        data=args.data, output=args.output, init=init, val_data=args.val_data, val_fraction=args.val_fraction,
        val_size=args.val_size, captions=args.captions, image_column=args.image_column, text_column=args.text_column,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, use_gpu=args.gpu, data_workers=args.data_workers,
        data_cpus=args.data_cpus, run_name=args.run_name, storage_path=args.storage_path, train=train,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.train == "text" and "text" in args.freeze:
        parser.error("--train text updates the text tower, which --freeze text keeps fixed")
    options = options_from_args(args)
    from ..jobs.cluster import init_ray
    from ..jobs.finetune import run_finetune

    init_ray(args.address)
    run_finetune(options)
    return 0

