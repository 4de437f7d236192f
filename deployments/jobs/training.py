"""The contrastive training loop: one function that runs inside each Ray Train worker
(`train_loop_per_worker`, used by `python -m deployments finetune`) or directly in this process
(`run_training`, used to build the embedded demo model without a cluster).

The model is the checkpoint's two tower modules and its temperature (clip_pair.ClipPair),
for every layout and architecture the server loads; the loss is its family's
(contrastive.objective_for: CLIP's softmax InfoNCE, SigLIP's sigmoid loss). Each epoch ends with a held-out
evaluation and a checkpoint that is at the same time a complete, servable folder (a
Hugging Face folder, or open_clip's layout for open_clip and OpenAI sources) plus
`train_state.pt` (optimizer, schedule, counters) for resuming.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..backends.checkpoint import Checkpoint
from ..backends.torch_pixels import channel_affine, normalize_pixels
from .clip_pair import ClipPair, load_pair, open_source, pair_from_config, save_pair
from .contrastive import (
    freeze_towers,
    objective_for,
    pair_logits,
    parameter_groups,
    retrieval_accuracy,
    select_trained,
    warmup_cosine,
)

logger = logging.getLogger(__name__)
TRAIN_STATE = "train_state.pt"
TRAIN_REPORT = "train_report.json"  # per-epoch metrics, kept in every checkpoint and the export
Batch = dict[str, np.ndarray]  # pixels uint8 (N,H,W,3), ids int32 (N,L), length int32 (N,), group int64 (N,)


class ModelInit(BaseModel):
    """Where the weights start: a servable checkpoint, or a CLIPConfig (from scratch)."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = Field(None, description="Hub id, local folder or OpenAI .pt file of a servable CLIP or SigLIP "
                               "checkpoint (transformers, open_clip or OpenAI layout).")
    revision: str | None = Field(None, description="Hub revision of `source`.")
    allow_pickle_weights: bool = Field(False, description="Read pickle weights (pytorch_model.bin, "
                                       "open_clip_pytorch_model.bin, OpenAI .pt archives); pickle can run code.")
    config: dict[str, Any] | None = Field(None, description="CLIPConfig as a dict, for training from scratch.")


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    init: ModelInit
    epochs: int = Field(3, ge=1, description="Passes over the training data.")
    batch_size: int = Field(64, ge=2, description="Pairs per step on each worker (negatives come from the batch).")
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (AdamW), after a linear warm-up.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay on weight matrices.")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="Share of all steps spent warming up.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping.")
    freeze: list[Literal["image", "text"]] = Field(default_factory=list, description="Towers to keep fixed.")
    train: Literal["all", "projections", "text"] = Field(
        "all", description="What is updated: everything; only the two projections and the temperature (a ResNet's "
        "image projection is its attention pool's output projection, attnpool.c_proj); or the text tower too.")
    steps_per_epoch: int = Field(ge=1, description="For the LR schedule; the driver counts it from the data.")
    seed: int = Field(0, description="Initial weights (from a config), shuffling and the held-out split.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch intra-op threads per worker (default: its CPUs).")
    shuffle_buffer: int = Field(2048, ge=0, description="Rows each worker shuffles locally every epoch.")

    @model_validator(mode="after")
    def _train_and_freeze_agree(self) -> TrainSettings:
        if self.train == "text" and "text" in self.freeze:
            raise ValueError("train 'text' updates the text tower, which freeze ['text'] keeps fixed")
        return self


class PairBatches(Protocol):
    """Training and held-out batches, already preprocessed exactly as serving does."""

    def train(self, epoch: int, batch_size: int) -> Iterable[Batch]: ...

    def val(self, batch_size: int) -> Iterable[Batch]: ...


class Reporter(Protocol):
    world_rank: int

    def restored(self) -> ContextManager[Path | None]:
        """The checkpoint folder to resume from (or None), valid inside the `with`."""
        ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None: ...


def load_initial_model(init: ModelInit, seed: int) -> tuple[ClipPair, Path | None]:
    """The model to start from, and the folder whose tokenizer/preprocessor files the
    trained checkpoints keep (None: a model from a config gets CLIP's own)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    if init.source:
        ckpt = open_source(init.source, init.revision, init.allow_pickle_weights)
        return load_pair(ckpt, init.allow_pickle_weights), ckpt.path
    if init.config is None:
        raise ValueError("the initial model needs a checkpoint `source` or a `config`")
    return pair_from_config(init.config, seed), None


class ContrastiveLearner:
    """A ClipPair, its optimizer and schedule, and the step/epoch counters."""

    def __init__(self, model: ClipPair, settings: TrainSettings, device: torch.device, image_spec: Any,
                 wrap: Callable[[Any], Any] = lambda m: m) -> None:
        self.settings = settings
        self.device = device
        self.model = model.to(device)
        self.objective = objective_for(model.family.score_function)  # the loss follows the family
        self.frozen = select_trained(self.model, settings.train) + freeze_towers(self.model, settings.freeze)
        self.forward_model = wrap(self.model)  # DDP under Ray Train with several workers
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, settings.weight_decay), lr=settings.lr, betas=(0.9, 0.98), eps=1e-6
        )
        total = settings.epochs * settings.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, max(1, int(settings.warmup_fraction * total)))
        )
        self.scale, self.bias = channel_affine(image_spec, device)
        self.step = 0
        self.epochs_done = 0
        self.history: list[dict[str, Any]] = []

    def _inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Rows are padded to the context length in storage; the text tower gets them as
        # serving pads them (CLIP: the batch's longest text; SigLIP: the context length).
        pixels = normalize_pixels(torch.as_tensor(batch["pixels"]).to(self.device), self.scale, self.bias, torch.float32)
        ids = torch.as_tensor(self.model.pad_texts(batch["ids"], batch["length"])).to(self.device).long()
        groups = torch.as_tensor(batch["group"]).to(self.device)
        return pixels, ids, groups

    def train_batch(self, batch: Batch) -> float:
        self.forward_model.train()
        pixels, ids, groups = self._inputs(batch)
        loss = self.objective.loss(pair_logits(self.forward_model, pixels, ids), groups)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], self.settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.objective.clamp(self.model)
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Held-out contrastive loss and retrieval top-1 over all held-out pairs together."""
        self.model.eval()
        images, texts, groups, losses = [], [], [], []
        for batch in batches:
            pixels, ids, group = self._inputs(batch)
            out = self.model(input_ids=ids, pixel_values=pixels)
            losses.append(float(self.objective.loss(out.logits_per_image, group)) * len(group))
            images.append(out.image_embeds)
            texts.append(out.text_embeds)
            groups.append(group)
        if not groups:
            return {}
        n = sum(len(g) for g in groups)
        metrics = retrieval_accuracy(torch.cat(images), torch.cat(texts), torch.cat(groups))
        metrics["retrieval_top1"] = (metrics["i2t_top1"] + metrics["t2i_top1"]) / 2
        metrics["val_loss"] = sum(losses) / n
        metrics["val_pairs"] = n
        return metrics

    def save(self, out_dir: Path, assets_from: Path | None) -> Path:
        """A servable folder plus the state needed to resume."""
        save_pair(self.model, out_dir, assets_from)
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
             "step": self.step, "epochs_done": self.epochs_done, "trained": self._trained_names()},
            Path(out_dir) / TRAIN_STATE,
        )
        report = {"history": self.history, "settings": self.settings.model_dump(mode="json")}
        (Path(out_dir) / TRAIN_REPORT).write_text(json.dumps(report, indent=1))
        return Path(out_dir)

    def _trained_names(self) -> list[str]:
        return [name for name, p in self.model.named_parameters() if p.requires_grad]

    def load_state(self, folder: Path) -> None:
        state = torch.load(Path(folder) / TRAIN_STATE, map_location=self.device, weights_only=True)
        # The optimizer's state is matched to parameters by position only: a run resumed with
        # other --train/--freeze settings (or saved by an older version of this job) would
        # get another parameter's moments, or fail halfway through a step.
        if state.get("trained") != self._trained_names():
            raise RuntimeError(f"the run's checkpoint {folder} trained other parameters than these settings do "
                               "(--train, --freeze) or was written by an older version of this job; resume it "
                               "with its own settings, or start a new run (--run-name)")
        # The checkpoint is a servable folder: read it as serving would, in either layout.
        # Strict: every weight, and a ResNet's BatchNorm statistics, come from the checkpoint.
        self.model.load_state_dict(load_pair(Checkpoint.open(str(folder))).state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.epochs_done = int(state["epochs_done"])
        self.history = json.loads((Path(folder) / TRAIN_REPORT).read_text())["history"]


def run_training(settings: TrainSettings, data: PairBatches, reporter: Reporter, image_spec: Any,
                 wrap: Callable[[Any], Any] = lambda m: m, device: str | torch.device | None = None) -> ContrastiveLearner:
    """Train for `settings.epochs` epochs (resuming if the reporter has a checkpoint):
    train, evaluate on held-out pairs, report metrics with a checkpoint, every epoch."""
    from ..backends.devices import resolve_device

    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    model, assets_from = load_initial_model(settings.init, settings.seed)
    learner = ContrastiveLearner(model, settings, torch.device(device or resolve_device(settings.device)),
                                 image_spec, wrap)
    with reporter.restored() as resume_dir:
        if resume_dir is not None:
            learner.load_state(resume_dir)
            logger.info("resumed from %s at step %d (epoch %d)", resume_dir, learner.step, learner.epochs_done)

    for epoch in range(learner.epochs_done, settings.epochs):
        started, losses, pairs = time.perf_counter(), [], 0
        for batch in data.train(epoch, settings.batch_size):
            losses.append(learner.train_batch(batch))
            pairs += len(batch["group"])
        elapsed = time.perf_counter() - started
        learner.epochs_done = epoch + 1
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": learner.step,
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "first_batch_loss": losses[0] if losses else math.nan,
            "last_batch_loss": losses[-1] if losses else math.nan,
            "logit_scale": float(learner.model.logit_scale.detach().exp()),
            **({"logit_bias": float(learner.model.logit_bias.detach())}
               if learner.model.logit_bias is not None else {}),
            "lr": float(learner.scheduler.get_last_lr()[0]),
            "epoch_seconds": elapsed,
            "pairs_per_s": pairs / elapsed if elapsed > 0 else 0.0,
        }
        if reporter.world_rank == 0:
            metrics.update(learner.evaluate(data.val(settings.batch_size)))
            learner.history.append(metrics)
            logger.info("epoch %d: %s", epoch + 1, json.dumps(metrics))
            with tempfile.TemporaryDirectory(prefix="clip-ckpt-") as tmp:
                reporter.report(metrics, learner.save(Path(tmp), assets_from))
        else:
            reporter.report(metrics, None)
    return learner


# ---------------------------------------------------------------- Ray Train glue


class RayDataBatches:
    """Batches from the Ray Data shards Ray Train hands this worker."""

    def __init__(self, seed: int, shuffle_buffer: int, has_val: bool) -> None:
        import ray.train

        self._train = ray.train.get_dataset_shard("train")
        self._val = ray.train.get_dataset_shard("val") if has_val else None
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer

    def train(self, epoch: int, batch_size: int) -> Iterable[Batch]:
        return self._train.iter_batches(
            batch_size=batch_size, batch_format="numpy", drop_last=True,
            local_shuffle_buffer_size=self.shuffle_buffer or None,
            local_shuffle_seed=(self.seed + epoch) if self.shuffle_buffer else None,
        )

    def val(self, batch_size: int) -> Iterable[Batch]:
        return [] if self._val is None else self._val.iter_batches(batch_size=batch_size, batch_format="numpy")


class RayTrainReporter:
    def __init__(self) -> None:
        import ray.train

        self.world_rank = ray.train.get_context().get_world_rank()

    @contextmanager
    def restored(self) -> Iterator[Path | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()  # set when a run with this name/storage resumes
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """TorchTrainer entry point: config = {"settings": TrainSettings, "image_spec", "has_val"}."""
    import ray.train.torch

    from ..preprocess.image_spec import ImageSpec

    image_spec = ImageSpec.from_dict(config["image_spec"])
    settings = TrainSettings.model_validate(config["settings"])
    if settings.threads is None:
        # Ray sets OMP_NUM_THREADS to the worker's CPUs; torch must use them all.
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    run_training(
        settings,
        RayDataBatches(settings.seed, settings.shuffle_buffer, bool(config.get("has_val"))),
        RayTrainReporter(),
        image_spec,
        wrap=ray.train.torch.prepare_model,
        device=ray.train.torch.get_device(),
    )
