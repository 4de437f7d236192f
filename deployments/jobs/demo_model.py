"""Train the embedded demo model: a small CLIP, from scratch, on the synthetic shapes,
with the same training loop as `python -m deployments finetune`.

It runs in this process, without a Ray cluster: the demo is built before anything else
exists (first `python -m deployments serve`, or the install step), the data is generated
on the fly (every step sees new images, so there is nothing to shard or read), and one
process with every core is the fastest way to train a model this small. The loop,
loss, preprocessing and checkpoint writing are the ones the Ray Train job uses.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..checkpoint_builder import clip_config_dict
from ..config import VariantConfig
from ..preprocess.images import resize_and_crop
from .clip_pair import save_pair
from .datasets import PairEncoder
from .finetune import format_metrics, model_assets
from .model_runner import ModelRunner
from .synthetic import samples, zero_shot_top1
from .training import Batch, ModelInit, TrainSettings, run_training

DEMO_CARD = "demo_card.json"


class SyntheticBatches:
    """Fresh generated pairs for every step (seeded: the same run gives the same data)."""

    def __init__(self, encoder: PairEncoder, seed: int, held_out_seed: int, steps_per_epoch: int,
                 val_pairs: int, image_size: int) -> None:
        self.encoder = encoder
        self.seed, self.held_out_seed = seed, held_out_seed
        self.steps_per_epoch = steps_per_epoch
        self.val_pairs = val_pairs
        self.image_size = image_size

    def _batch(self, seed: int, start: int, stop: int) -> Batch:
        pairs = list(samples(seed, start, stop, self.image_size))
        pixels = [resize_and_crop(p.image, self.encoder.spec) for p in pairs]
        # Captions name colour and shape only ("a red circle"): with 30 distinct captions,
        # every same-class pair in a batch is a positive, which is what lets a model this
        # small learn shapes in minutes. (The written datasets keep the varied captions.)
        return self.encoder.encode(pixels, [p.label for p in pairs])

    def train(self, epoch: int, batch_size: int) -> Iterable[Batch]:
        first = epoch * self.steps_per_epoch * batch_size
        for step in range(self.steps_per_epoch):
            start = first + step * batch_size
            yield self._batch(self.seed, start, start + batch_size)

    def val(self, batch_size: int) -> Iterable[Batch]:
        for start in range(0, self.val_pairs, batch_size):
            yield self._batch(self.held_out_seed, start, min(self.val_pairs, start + batch_size))


class LocalReporter:
    """Ray Train's report/restore, for a single in-process worker that starts fresh."""

    world_rank = 0

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log

    @contextmanager
    def restored(self) -> Iterator[None]:
        yield None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        self.log(format_metrics(metrics))


def evaluate_folder(folder: Path, seed: int, n: int, image_size: int) -> dict[str, Any]:
    """Zero-shot top-1 on generated images, through the serving backend and preprocessing."""
    runner = ModelRunner(VariantConfig(id="demo", source=str(folder), dtype="float32", device="cpu"))

    def embed_images(images):
        return runner.embed_pixels([resize_and_crop(img.convert("RGB"), runner.image_spec) for img in images])

    def embed_texts(texts):
        return runner.embed_sequences([t.ids for t in runner.tokenizer.encode(texts, truncate=True)])

    return zero_shot_top1(embed_images, embed_texts, seed, n, image_size)


def train_demo_model(out_dir: Path, shape: dict[str, Any], training: dict[str, Any], held_out_seed: int,
                     eval_images: int = 600, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train, save a servable checkpoint in `out_dir`, measure held-out zero-shot accuracy
    (written to demo_card.json) and return that card."""
    import tempfile

    started = time.perf_counter()
    init = ModelInit(config=clip_config_dict(**shape))
    with tempfile.TemporaryDirectory(prefix="clip-demo-assets-") as tmp:
        assets = model_assets(init, Path(tmp))
        spec, tokenizer = assets.image_spec(), assets.tokenizer_info()
    settings = TrainSettings.model_validate({**training, "init": init, "device": "cpu"})
    data = SyntheticBatches(PairEncoder(spec.to_dict(), asdict(tokenizer)), settings.seed, held_out_seed,
                            settings.steps_per_epoch, val_pairs=512, image_size=shape["image_size"])
    learner = run_training(settings, data, LocalReporter(log), spec, device="cpu")
    save_pair(learner.model.eval(), out_dir)
    train_seconds = time.perf_counter() - started

    card = {
        "model": "clip-demo",
        "trained_on": "synthetic coloured shapes (deployments/jobs/synthetic.py), captions 'a {colour} {shape}'",
        "shape": shape,
        "training": settings.model_dump(mode="json", exclude={"init"}),
        "train_seconds": round(train_seconds, 1),
        "history": learner.history,
        "zero_shot": {size: evaluate_folder(out_dir, held_out_seed, eval_images, size)
                      for size in (shape["image_size"], 2 * shape["image_size"])},
    }
    (Path(out_dir) / DEMO_CARD).write_text(json.dumps(card, indent=1))
    accuracy = ", ".join(f"{v['top1']:.1%} at {k}px" for k, v in card["zero_shot"].items())
    log(f"demo model trained in {train_seconds:.0f}s; held-out zero-shot top-1 over "
        f"{card['zero_shot'][shape['image_size']]['classes']} classes: {accuracy}")
    return card
