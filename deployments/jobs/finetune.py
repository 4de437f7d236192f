"""The fine-tuning job's driver: read the data, start a TorchTrainer, write the result
as a servable folder (Hugging Face layout, or open_clip's for open_clip and OpenAI sources). `python -m deployments finetune` (deployments/tools/finetune.py) is its command line.

Resuming: a run is identified by (storage_path, run_name). Starting the same command
again finds the run's latest Ray Train checkpoint and continues from its epoch and step.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from ..backends.checkpoint import Checkpoint
from ..checkpoint_builder import clip_config_dict, preprocessor_config, write_tokenizer
from .clip_pair import open_source
from .datasets import DataError, PairEncoder, PairSource
from .training import TRAIN_REPORT, TRAIN_STATE, ModelInit, TrainSettings, train_loop_per_worker


def config_presets() -> dict[str, dict[str, Any]]:
    """Model shapes for training from scratch (`--from-config NAME`)."""
    from ..demo import DEMO_SHAPE

    return {
        "tiny": {"hidden_size": 32, "layers": 2, "heads": 2, "image_size": 32, "patch_size": 8, "projection_dim": 16},
        "demo": dict(DEMO_SHAPE),
        "vit-b-32": {"hidden_size": 768, "layers": 12, "heads": 12, "image_size": 224, "patch_size": 32,
                     "projection_dim": 512, "text_hidden_size": 512, "text_layers": 12, "text_heads": 8},
    }


def resolve_config(spec: str) -> dict[str, Any]:
    """A preset name, a CLIPConfig JSON (e.g. a hub config.json), or a JSON of
    checkpoint_builder.clip_config_dict arguments -> a CLIPConfig dict."""
    presets = config_presets()
    if spec in presets:
        return clip_config_dict(**presets[spec])
    path = Path(spec)
    if not path.is_file():
        raise DataError(f"--from-config {spec!r} is neither a preset ({sorted(presets)}) nor a JSON file")
    data = json.loads(path.read_text())
    return data if "vision_config" in data else clip_config_dict(**data)


class FinetuneOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="Image folder with a captions table, a captions CSV/JSONL, or parquet.")
    output: str = Field(description="Where the trained checkpoint folder is written (the source's layout; "
                        "open_clip's for open_clip and OpenAI sources).")
    init: ModelInit
    val_data: str | None = Field(None, description="Held-out pairs; default: a hashed share of `data`.")
    val_fraction: float = Field(0.05, ge=0, lt=1, description="Share of `data` held out when no val_data.")
    val_size: int = Field(1000, ge=0, description="Most held-out pairs evaluated per epoch.")
    captions: str | None = Field(None, description="The captions table of an image folder, if not found by name.")
    image_column: str | None = None
    text_column: str | None = None
    workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel, DDP).")
    cpus_per_worker: float = Field(1, gt=0)
    use_gpu: bool = Field(False, description="One GPU per worker.")
    data_workers: int = Field(1, ge=1, description="Ray Data actors decoding and tokenizing.")
    data_cpus: float = Field(1, gt=0, description="CPUs per decoding actor.")
    run_name: str | None = Field(None, description="Ray Train run name (default: the output folder's name).")
    storage_path: str | None = Field(None, description="Ray Train checkpoints (default: next to the output).")
    train: dict[str, Any] = Field(default_factory=dict, description="TrainSettings fields (epochs, lr, ...).")

    @property
    def resolved_run_name(self) -> str:
        return self.run_name or Path(self.output).name

    @property
    def resolved_storage(self) -> str:
        return self.storage_path or str(Path(self.output).resolve().parent / "ray_train")


@dataclass
class FinetuneResult:
    output: Path
    history: list[dict[str, Any]]
    checkpoint_path: str


def model_assets(init: ModelInit, workdir: Path) -> Checkpoint:
    """The checkpoint whose preprocessing and tokenizer training uses: the source itself,
    or (from a config) CLIP's tokenizer and a preprocessor config written to `workdir`."""
    if init.source:
        return open_source(init.source, init.revision, init.allow_pickle_weights)
    assert init.config is not None
    (workdir / "config.json").write_text(json.dumps(init.config))
    (workdir / "preprocessor_config.json").write_text(
        json.dumps(preprocessor_config(init.config["vision_config"]["image_size"]))
    )
    write_tokenizer(workdir, init.config["text_config"].get("max_position_embeddings", 77))
    return Checkpoint(workdir, "config")


def export_checkpoint(folder: Path, output: Path) -> Path:
    """Copy a Ray Train checkpoint's servable files to `output`, replacing it atomically."""
    output = output.resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        for item in folder.iterdir():
            if item.name != TRAIN_STATE and item.is_file():
                shutil.copyfile(item, staging / item.name)
        if output.exists():
            retired = output.with_name(f".{output.name}.old-{os.getpid()}")
            output.rename(retired)
            staging.rename(output)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def _prepared(ds: Any, encoder_kwargs: dict[str, Any], opts: FinetuneOptions) -> Any:
    import ray.data

    return ds.map_batches(PairEncoder, fn_constructor_kwargs=encoder_kwargs, batch_size=256,
                          compute=ray.data.ActorPoolStrategy(size=opts.data_workers), num_cpus=opts.data_cpus)


def run_finetune(opts: FinetuneOptions, log: Callable[[str], None] = print) -> FinetuneResult:
    from ray.train import CheckpointConfig, DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    source = PairSource(Path(opts.data), opts.image_column, opts.text_column, Path(opts.captions) if opts.captions else None)
    with tempfile.TemporaryDirectory(prefix="clip-assets-") as tmp:
        assets = model_assets(opts.init, Path(tmp))
        image_spec, tokenizer = assets.image_spec(), assets.tokenizer_info()
    encoder_kwargs = {"image_spec": image_spec.to_dict(), "tokenizer": asdict(tokenizer), "base_dir": str(source.base_dir)}

    total = source.count()
    if opts.val_data:
        val_source = PairSource(Path(opts.val_data), opts.image_column, opts.text_column)
        train_ds = _prepared(source.dataset(), encoder_kwargs, opts)
        val_ds = _prepared(val_source.dataset(), {**encoder_kwargs, "base_dir": str(val_source.base_dir)}, opts)
        train_rows = total
    else:
        seed = int(opts.train.get("seed", 0))
        train_ds = _prepared(source.dataset(), {**encoder_kwargs, "held_out": (opts.val_fraction, seed, False)}, opts)
        val_ds = _prepared(source.dataset(), {**encoder_kwargs, "held_out": (opts.val_fraction, seed, True)}, opts)
        train_rows = int(total * (1 - opts.val_fraction))
    per_step = int(opts.train.get("batch_size", TrainSettings.model_fields["batch_size"].default)) * opts.workers
    if train_rows < per_step:
        raise DataError(f"{total} pairs in {opts.data} ({train_rows} for training) are fewer than one step "
                        f"({per_step} = batch size x workers); lower --batch-size")
    settings = TrainSettings.model_validate({**opts.train, "init": opts.init, "steps_per_epoch": train_rows // per_step})
    datasets = {"train": train_ds}
    if opts.val_size:
        datasets["val"] = val_ds.limit(opts.val_size)

    log(f"fine-tuning {'from ' + opts.init.source if opts.init.source else 'from a config (scratch)'} "
        f"(train {settings.train}{', freeze ' + '+'.join(settings.freeze) if settings.freeze else ''}) on {total} "
        f"pairs, {settings.epochs} epochs x ~{settings.steps_per_epoch} steps, {opts.workers} worker(s); "
        f"run {opts.resolved_run_name!r} in {opts.resolved_storage}")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"settings": settings.model_dump(mode="json"), "image_spec": image_spec.to_dict(),
                           "has_val": "val" in datasets},
        scaling_config=ScalingConfig(num_workers=opts.workers, use_gpu=opts.use_gpu,
                                     resources_per_worker={"CPU": opts.cpus_per_worker}),
        run_config=RunConfig(name=opts.resolved_run_name, storage_path=opts.resolved_storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training ended without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        history = json.loads((Path(folder) / TRAIN_REPORT).read_text())["history"]
        output = export_checkpoint(Path(folder), Path(opts.output))
    for m in history:
        log(format_metrics(m))
    log(f"wrote {output} (serve it with a variant whose source is this folder)")
    return FinetuneResult(output, history, result.checkpoint.path)


def format_metrics(m: dict[str, Any]) -> str:
    line = f"epoch {m['epoch']} step {m['step']}: train loss {m['train_loss']:.4f}"
    if "retrieval_top1" in m:
        line += (f", held-out loss {m['val_loss']:.4f}, retrieval top-1 {m['retrieval_top1']:.3f} "
                 f"(image->text {m['i2t_top1']:.3f}, text->image {m['t2i_top1']:.3f}, {m['val_pairs']} pairs)")
    bias = f", bias {m['logit_bias']:.2f}" if "logit_bias" in m else ""
    return line + f", temperature 1/{m['logit_scale']:.1f}{bias}, {m['pairs_per_s']:.1f} pairs/s"
