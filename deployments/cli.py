"""clip-serve-client (`python -m deployments.cli`): talk to a running clip-serve.

  models                                  list the served models
  embed TEXT_OR_IMAGE... [-o out.npy]     embeddings as JSONL (default, stdout) or a .npy matrix
  classify IMAGE... --labels cat,dog      zero-shot probabilities and cosines per image
  rank --query TEXT IMAGE...              images ordered by their similarity to a text

Server errors exit with status 1 and the server's message on stderr; usage errors with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from .client import ClientError, ClipClient, image_item, is_image_path

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TEMPLATE = "a photo of a {}."  # CLIP's own prompt; the playground's default too
PROG = "clip-serve-client"


class UsageError(Exception):
    """Bad arguments or unreadable files: nothing was sent."""


class Progress:
    """`done/total` on stderr while a job needs more than one request."""

    def __init__(self, what: str, total: int, batch_size: int, quiet: bool) -> None:
        self.what, self.total, self.done = what, total, 0
        self.enabled = not quiet and total > batch_size
        self.tty = sys.stderr.isatty()

    def advance(self, count: int) -> None:
        self.done += count
        if self.enabled:
            # On a terminal one line rewritten in place; in a log one line per request.
            start = "\r" if self.tty else ""
            end = "" if self.tty and self.done < self.total else "\n"
            print(f"{start}{self.what} {self.done}/{self.total}", end=end, file=sys.stderr, flush=True)


def batches(values: list[Any], size: int) -> Iterator[tuple[int, list[Any]]]:
    for start in range(0, len(values), size):
        yield start, values[start : start + size]


def image_paths(paths: list[str], hint: str = "") -> list[str]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UsageError(f"no such file: {', '.join(missing)}{hint}")
    return paths


def load_items(paths: list[str]) -> list[dict[str, str]]:
    return [image_item(p) for p in paths]


def resolve_model(client: ClipClient, args: argparse.Namespace) -> str:
    return args.model or client.default_model()


def parse_labels(values: list[str]) -> list[str]:
    return [label.strip() for value in values for label in value.split(",") if label.strip()]


def cmd_models(client: ClipClient, args: argparse.Namespace) -> None:
    served = client.models()
    if args.json:
        for m in served:
            print(json.dumps(m))
        return
    for m in served:
        dims = f"{m.get('embedding_dimension')}-d" if m.get("embedding_dimension") else "?-d"
        print(f"{m['id']}\t{dims}\t{'+'.join(m.get('towers', []))}\t{'ready' if m.get('ready') else 'loading'}")


def cmd_embed(client: ClipClient, args: argparse.Namespace) -> None:
    import numpy as np

    # Inputs naming image files (by extension) are images unless --text; the rest are texts.
    is_image = [not args.text and is_image_path(v) for v in args.inputs]
    image_paths([v for v, image in zip(args.inputs, is_image) if image], " (--text embeds such arguments as text)")
    model = resolve_model(client, args)
    progress = Progress("embedded", len(args.inputs), args.batch_size, args.quiet)
    parts = []
    for start, chunk in batches(args.inputs, args.batch_size):
        items = [image_item(v) if is_image[start + i] else v for i, v in enumerate(chunk)]
        parts.append(client.embed(model, items))
        progress.advance(len(chunk))
    vectors = np.concatenate(parts)
    if args.output and args.output.endswith(".npy"):
        np.save(args.output, vectors)
        return
    out = open(args.output, "w") if args.output else sys.stdout
    try:
        for i, (source, vector) in enumerate(zip(args.inputs, vectors)):
            out.write(json.dumps({"index": i, "input": source, "embedding": vector.tolist()}) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


def cmd_classify(client: ClipClient, args: argparse.Namespace) -> None:
    paths = image_paths(args.images)
    labels = parse_labels(args.labels)
    model = resolve_model(client, args)
    progress = Progress("classified", len(paths), args.batch_size, args.quiet)
    for start, chunk in batches(paths, args.batch_size):
        results = client.classify(model, load_items(chunk), labels, args.template or None, args.top_k)
        progress.advance(len(chunk))
        for result in results:
            path = chunk[result["index"]]
            if args.json:
                print(json.dumps({"input": path, **result, "index": start + result["index"]}))
                continue
            print(f"{path}: {result['prediction']} ({result['score']:.4f})")
            for p in sorted(result["predictions"], key=lambda p: -p["score"]):
                print(f"  {p['score']:.4f}  cos {p['cosine']:+.4f}  {p['label']}")


def cmd_rank(client: ClipClient, args: argparse.Namespace) -> None:
    paths = image_paths(args.images)
    model = resolve_model(client, args)
    progress = Progress("scored", len(paths), args.batch_size, args.quiet)
    scored: list[tuple[float, int]] = []
    # Relevance is a cosine, independent per document: batches merge into one exact ranking.
    for start, chunk in batches(paths, args.batch_size):
        for r in client.rerank(model, args.query, load_items(chunk)):
            scored.append((r["relevance_score"], start + r["index"]))
        progress.advance(len(chunk))
    ranked = sorted(scored, key=lambda s: (-s[0], s[1]))[: args.top_n]
    for rank, (score, index) in enumerate(ranked, 1):
        if args.json:
            print(json.dumps({"rank": rank, "index": index, "input": paths[index], "relevance_score": score}))
        else:
            print(f"{rank}\t{score:.4f}\t{paths[index]}")


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def build_parser() -> argparse.ArgumentParser:
    def connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
        # Given before or after the subcommand; the subcommand's copy only sets what was given.
        d = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
        parser.add_argument("--url", default=d(os.environ.get("CLIP_SERVE_URL", DEFAULT_URL)),
                            help="server base URL (default: $CLIP_SERVE_URL or %s)" % DEFAULT_URL)
        parser.add_argument("--api-key", default=d(os.environ.get("CLIP_SERVE_API_KEY")),
                            help="sent as `Authorization: Bearer KEY` (default: $CLIP_SERVE_API_KEY)")
        parser.add_argument("--model", default=d(os.environ.get("CLIP_SERVE_MODEL")),
                            help="model id or alias (default: $CLIP_SERVE_MODEL or the server's first model)")
        parser.add_argument("--timeout", type=float, default=d(120.0), help="seconds per request (default 120)")

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    connection_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, batch_size: int = 32) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        connection_options(p, defaults=False)
        p.set_defaults(func=func)
        if func is not cmd_models:
            p.add_argument("--batch-size", type=positive_int, default=batch_size, help="inputs per request")
            p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
        return p

    m = command("models", cmd_models, "list the served models (id, dimension, towers, readiness)")
    m.add_argument("--json", action="store_true", help="one JSON object per model")

    e = command("embed", cmd_embed, "embed texts and image files")
    e.add_argument("inputs", nargs="+", metavar="TEXT_OR_IMAGE", help="texts, or image files (by extension)")
    e.add_argument("--text", action="store_true", help="read every input as text, even ones ending in .jpg")
    e.add_argument("-o", "--output", help="out.jsonl (default: JSONL on stdout) or out.npy (float32 matrix)")

    c = command("classify", cmd_classify, "zero-shot classify image files against labels", batch_size=16)
    c.add_argument("images", nargs="+", metavar="IMAGE")
    c.add_argument("--labels", action="append", required=True,
                   help="comma-separated candidate labels (repeatable)")
    c.add_argument("--template", default=DEFAULT_TEMPLATE,
                   help=f"prompt template, {{}} is the label (default: {DEFAULT_TEMPLATE!r}; '' for the label as is)")
    c.add_argument("--top-k", type=positive_int, help="only the k most probable labels")
    c.add_argument("--json", action="store_true", help="one JSON object per image (the API's classification)")

    r = command("rank", cmd_rank, "rank image files by similarity to a text query")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--query", required=True, help="the text to rank the images by")
    r.add_argument("--top-n", type=positive_int, help="only the n best")
    r.add_argument("--json", action="store_true", help="one JSON object per ranked image")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    client = ClipClient(args.url, args.api_key, args.timeout)
    try:
        args.func(client, args)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `... | head`: not an error
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
