"""Embed a dataset offline with a served variant's model, on Ray Data.

    python -m deployments embed INPUT --output OUT --model MODEL [--config serve_config.yaml] [options]
    ray job submit --working-dir . -- python -m deployments embed INPUT --output OUT --model MODEL ...

INPUT: a folder of images; a CSV/JSONL/parquet table with a text column or an image-path
column (--text-column / --image-column, optional --id-column); or an OpenAI batch JSONL
file of /v1/embeddings requests. OUT gets part-NNNNN.parquet (id, modality, embedding,
model, dtype) or, for batch files, output.jsonl in OpenAI's batch output format, and
_report.json (counts, bad items). MODEL is a variant id or alias from --config, or a hub
id, a local checkpoint folder or an OpenAI .pt archive (with --allow-pickle-weights).
Rerunning the same command after an interruption embeds only the shards that are missing.
"""

from __future__ import annotations

import argparse

from . import command_parser


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("embed", __doc__)
    ap.add_argument("input")
    ap.add_argument("--output", required=True, help="output folder")
    ap.add_argument("--model", required=True, help="variant id/alias in --config, or a hub id / checkpoint folder")
    ap.add_argument("--config", help="serve_config.yaml whose variant settings (source, backend, dtype) to use")
    ap.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="override the variant's")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the variant's")
    ap.add_argument("--backend", help="override the variant's")
    ap.add_argument("--allow-pickle-weights", action="store_true",
                    help="read pickle or TorchScript weights (pytorch_model.bin, OpenAI's .pt archives): they can run code")
    ap.add_argument("--format", choices=["auto", "images", "table", "openai"], default="auto")
    ap.add_argument("--id-column")
    ap.add_argument("--text-column")
    ap.add_argument("--image-column", help="a column of image paths (relative to the table's folder)")
    ap.add_argument("--shard-size", type=int, default=1000, help="items per shard (the unit of resuming)")
    ap.add_argument("--batch-size", type=int, default=32, help="items per forward pass")
    ap.add_argument("--workers", type=int, default=1, help="actors, each with a copy of the model")
    ap.add_argument("--cpus-per-worker", type=float, default=1)
    ap.add_argument("--gpus-per-worker", type=float, default=0)
    ap.add_argument("--decode-threads", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true", help="replace an output folder of a different job")
    ap.add_argument("--address", help="Ray cluster address (default: the job's cluster, or a new local one)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..jobs.cluster import init_ray
    from ..jobs.embedding import EmbedJob, run_embedding_job, variant_for

    variant = variant_for(args.model, args.config, allow_pickle_weights=args.allow_pickle_weights, dtype=args.dtype,
                          device=args.device, backend=args.backend)
    job = EmbedJob(
        input=args.input, output=args.output, variant=variant, input_format=args.format, id_column=args.id_column,
        text_column=args.text_column, image_column=args.image_column, shard_size=args.shard_size,
        batch_size=args.batch_size, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker, decode_threads=args.decode_threads, overwrite=args.overwrite,
    )
    init_ray(args.address)
    run_embedding_job(job)
    return 0

