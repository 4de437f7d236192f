"""The batch embedding job: a Ray Data pipeline over numbered shards of the input.

Each shard is embedded by one actor of a pool (the model loads once per actor) and
written as its own file; the shard's summary (`part-NNNNN.json`) is written last and
marks it done, so an interrupted job's rerun skips finished shards and redoes only the
missing ones. Bad items (unreadable images, empty texts, invalid batch requests) are
reported in the summaries and in `_report.json`, never fatal.

Output: `part-NNNNN.parquet` with columns id, modality, embedding, model, dtype (the
folder reads as one parquet dataset); or, for OpenAI batch input, `output.jsonl`, joined
from per-shard parts at the end. Summaries and parts live in `_shards/`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..config import VariantConfig
from ..preprocess.images import ImageError, ImageLimits, prepare_image
from ..engine.threads import DECODE_THREAD, named_pool
from .datasets import DataError, image_bytes
from .embed_inputs import InputFormat, ShardPlan, plan_shards, read_lines
from .model_runner import ModelRunner

JOB_FILE = "_job.json"
REPORT_FILE = "_report.json"
OPENAI_OUTPUT = "output.jsonl"
# Shard summaries (and batch-output parts) live here: readers of the output folder as a
# parquet dataset (pandas, pyarrow, Ray Data) skip `_`-prefixed names.
SHARDS_DIR = "_shards"


class EmbedJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="Image folder, CSV/JSONL/parquet table, or OpenAI batch JSONL.")
    output: str = Field(description="Output folder (shards, report, and output.jsonl for batch files).")
    variant: VariantConfig = Field(description="The model, as a served variant is configured.")
    input_format: InputFormat = "auto"
    id_column: str | None = None
    text_column: str | None = None
    image_column: str | None = None
    shard_size: int = Field(1000, ge=1, description="Items (or batch lines) per shard: the unit of resuming.")
    batch_size: int = Field(32, ge=1, description="Items per forward pass.")
    workers: int = Field(1, ge=1, description="Actors, each with its own copy of the model.")
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    decode_threads: int = Field(2, ge=1, description="Image decoding threads per actor.")
    overwrite: bool = Field(False, description="Discard an output folder that holds a different job.")


def part_name(index: int, suffix: str) -> str:
    return f"part-{index:05d}{suffix}"


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)  # a shard file is whole or absent, never half-written


class ShardEmbedder:
    """A Ray Data actor: one shard in, its output file and summary written, a summary row out."""

    def __init__(self, job: dict[str, Any], plan_format: str) -> None:
        self.job = EmbedJob.model_validate(job)
        self.format = plan_format
        self.out = Path(self.job.output)
        threads = max(1, int(self.job.cpus_per_worker))
        self.runner = ModelRunner(self.job.variant, threads=threads, batch_size=self.job.batch_size)
        self.pool = named_pool(self.job.decode_threads, DECODE_THREAD)
        self.limits = ImageLimits()
        self._batch_requests: Any = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        summaries = []
        for raw in batch["shard"]:
            shard = json.loads(raw)
            started = time.perf_counter()
            summary = self._openai_shard(shard) if self.format == "openai" else self._item_shard(shard)
            summary.update(shard=shard["index"], seconds=time.perf_counter() - started, pid=os.getpid())
            text = json.dumps(summary)
            _write_atomic(self.out / SHARDS_DIR / part_name(shard["index"], ".json"), lambda p: p.write_text(text))
            summaries.append(text)
        return {"summary": summaries}

    # -- folders and tables: one parquet row per good item
    def _load_pixels(self, item: dict[str, Any], spec: Any) -> np.ndarray:
        return prepare_image(image_bytes(item["image"], None), spec, self.limits)

    def _item_shard(self, shard: dict[str, Any]) -> dict[str, Any]:
        ids: list[str] = []
        modalities: list[str] = []
        vectors: list[np.ndarray] = []
        bad: list[dict[str, Any]] = []
        images = [it for it in shard["items"] if "image" in it]
        texts = [it for it in shard["items"] if "text" in it]
        if images:
            # Decoding runs ahead in threads while the model embeds earlier batches.
            spec = self.runner.image_spec  # loads the image tower once, before the threads need it
            futures = [self.pool.submit(self._load_pixels, it, spec) for it in images]
            good: list[tuple[str, np.ndarray]] = []
            for it, future in zip(images, futures):
                try:
                    good.append((it["id"], future.result()))
                except (ImageError, OSError) as exc:
                    bad.append({"id": it["id"], "error": str(exc)})
            if good:
                ids += [i for i, _ in good]
                modalities += ["image"] * len(good)
                vectors.append(self.runner.embed_pixels([p for _, p in good]))
        if texts:
            usable = [isinstance(it["text"], str) and bool(it["text"].strip()) for it in texts]
            ok = [it for it, use in zip(texts, usable) if use]
            bad += [{"id": it["id"], "error": "empty or missing text"} for it, use in zip(texts, usable) if not use]
            if ok:
                tokens = [t.ids for t in self.runner.tokenizer.encode([it["text"] for it in ok], truncate=True)]
                ids += [it["id"] for it in ok]
                modalities += ["text"] * len(ok)
                vectors.append(self.runner.embed_sequences(tokens))
        self._write_parquet(shard["index"], ids, modalities, vectors)
        return {"ok": len(ids), "bad": bad}

    def _write_parquet(self, index: int, ids: list[str], modalities: list[str], vectors: list[np.ndarray]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        dim = self.runner.info().embed_dim
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, dim), dtype=np.float32)
        table = pa.table({
            "id": pa.array(ids, pa.string()),
            "modality": pa.array(modalities, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(matrix.astype(np.float32).ravel()), dim),
            "model": pa.array([self.job.variant.id] * len(ids), pa.string()),
            "dtype": pa.array([self.runner.dtype] * len(ids), pa.string()),
        })
        _write_atomic(self.out / part_name(index, ".parquet"), lambda p: pq.write_table(table, p))

    # -- OpenAI batch files: one response line per request line
    def _openai_shard(self, shard: dict[str, Any]) -> dict[str, Any]:
        import orjson

        from .openai_batch import BatchRequestRunner

        if self._batch_requests is None:
            self._batch_requests = BatchRequestRunner(self.runner)
        lines = read_lines(Path(self.job.input), shard)

        async def run_all():
            # Concurrent requests share forward passes, as concurrent API requests do.
            return await asyncio.gather(*(self._batch_requests.process(line, n) for n, line in lines))

        results = asyncio.run(run_all())
        body = b"".join(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for record, _ in results)
        _write_atomic(self.out / SHARDS_DIR / part_name(shard["index"], ".jsonl"), lambda p: p.write_bytes(body))
        bad = [{"line": n, "error": problem} for (n, _), (_, problem) in zip(lines, results) if problem]
        return {"ok": len(lines) - len(bad), "bad": bad}


# ---------------------------------------------------------------- driver


def _job_record(job: EmbedJob, plan: ShardPlan) -> dict[str, Any]:
    v = job.variant
    return {"input": str(Path(job.input).resolve()), "format": plan.format, "items": plan.n_items,
            "digest": plan.digest, "shard_size": job.shard_size, "model": v.id, "source": v.resolved_source,
            "revision": v.revision, "backend": v.backend, "dtype": v.dtype, "device": v.device}


def prepare_output(job: EmbedJob, plan: ShardPlan) -> Path:
    """Create the output folder, or check that it holds this same job (resume)."""
    out = Path(job.output)
    record = _job_record(job, plan)
    existing = out / JOB_FILE
    if existing.is_file():
        previous = json.loads(existing.read_text())
        if previous != record:
            changed = sorted(k for k in set(record) | set(previous) if record.get(k) != previous.get(k))
            if not job.overwrite:
                raise DataError(f"{out} holds the output of a different job (differs in {changed}); "
                                "choose another --output, or --overwrite to discard it")
            shutil.rmtree(out)
    elif out.exists() and any(out.iterdir()) and not job.overwrite:
        raise DataError(f"{out} is not empty and holds no embedding job; choose another --output or --overwrite")
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    (out / JOB_FILE).write_text(json.dumps(record, indent=1))
    return out


def _merge_openai_parts(out: Path, n_shards: int) -> Path:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            for index in range(n_shards):
                with (out / SHARDS_DIR / part_name(index, ".jsonl")).open("rb") as part:
                    shutil.copyfileobj(part, f)

    _write_atomic(out / OPENAI_OUTPUT, write)
    return out / OPENAI_OUTPUT


def run_embedding_job(job: EmbedJob, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Embed every shard not done yet; returns (and writes to _report.json) the totals."""
    import ray.data

    plan = plan_shards(Path(job.input), job.input_format, job.shard_size, id_column=job.id_column,
                       text_column=job.text_column, image_column=job.image_column)
    out = prepare_output(job, plan)
    done = {s["index"] for s in plan.shards if (out / SHARDS_DIR / part_name(s["index"], ".json")).is_file()}
    todo = [s for s in plan.shards if s["index"] not in done]
    log(f"embedding {plan.n_items} {plan.format} items with {job.variant.id} in {len(plan.shards)} shards: "
        f"{len(done)} already done, {len(todo)} to run on {job.workers} worker(s)")

    started = time.perf_counter()
    items_this_run = 0
    if todo:
        ds = ray.data.from_items([{"shard": json.dumps(s)} for s in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(
            ShardEmbedder,
            fn_constructor_kwargs={"job": job.model_dump(mode="json"), "plan_format": plan.format},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=job.workers),
            num_cpus=job.cpus_per_worker,
            **({"num_gpus": job.gpus_per_worker} if job.gpus_per_worker else {}),
        )
        for k, row in enumerate(ds.iter_rows(), start=1):
            summary = json.loads(row["summary"])
            items_this_run += summary["ok"] + len(summary["bad"])
            rate = items_this_run / max(time.perf_counter() - started, 1e-9)
            left = sum(len(s.get("items", ())) or job.shard_size for s in todo) - items_this_run
            log(f"shard {summary['shard']} done ({len(done) + k}/{len(plan.shards)}): {summary['ok']} ok, "
                f"{len(summary['bad'])} bad; {rate:.1f} items/s, ~{max(left, 0) / rate if rate else 0:.0f}s left")
    seconds = time.perf_counter() - started

    summaries = [json.loads((out / SHARDS_DIR / part_name(s["index"], ".json")).read_text()) for s in plan.shards]
    if plan.format == "openai":
        _merge_openai_parts(out, len(plan.shards))
    bad = [b for s in summaries for b in s["bad"]]
    report = {
        "model": job.variant.id, "format": plan.format, "output": str(out),
        "shards_total": len(plan.shards), "shards_skipped": len(done), "shards_processed": len(todo),
        "processed_shards": sorted(s["index"] for s in todo),
        "items_total": plan.n_items, "items_ok": sum(s["ok"] for s in summaries), "items_bad": len(bad),
        "bad_items": bad, "seconds": seconds, "items_per_s_this_run": items_this_run / seconds if seconds else 0.0,
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
    for b in bad[:20]:
        log(f"bad item {b.get('id', b.get('line'))}: {b['error']}")
    if len(bad) > 20:
        log(f"... and {len(bad) - 20} more bad items (see {out / REPORT_FILE})")
    log(f"done: {report['items_ok']} embedded, {len(bad)} bad, {len(todo)} shards this run in {seconds:.1f}s "
        f"-> {out}")
    return report


def variant_for(model: str, config_path: str | None = None, allow_pickle_weights: bool = False,
                **overrides: Any) -> VariantConfig:
    """The variant named `model` (id or alias) in a serve config, or a variant whose source
    is `model` itself (a hub id, a checkpoint folder or an OpenAI .pt archive); `overrides`
    (dtype, device, ...) that are not None replace its fields."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    variant = _named_variant(model, config_path, changes)
    if allow_pickle_weights:  # consent given on the command line, for this job only
        data = variant.model_dump(exclude_unset=True)
        data["options"] = {**variant.options.model_dump(), "allow_pickle_weights": True}
        variant = VariantConfig.model_validate(data)
    return variant


def _named_variant(model: str, config_path: str | None, changes: dict[str, Any]) -> VariantConfig:
    if config_path is None:
        path = Path(model).expanduser()
        if path.is_dir() or (path.is_file() and path.suffix == ".pt"):
            # A checkpoint folder or archive: named after it, as a variant would be.
            return VariantConfig.model_validate({"id": path.resolve().stem if path.is_file() else path.resolve().name,
                                                 "source": str(path.resolve()), **changes})
        return VariantConfig.model_validate({"id": model, **changes})
    from ..config import parse_app_config
    from ..launch import load_serve_config

    for app in load_serve_config(Path(config_path))["applications"]:
        for variant in parse_app_config(app.get("args") or {}).variants:
            if model in variant.names():
                return variant.model_copy(update=changes)
    raise DataError(f"{config_path} serves no model named {model!r}")
