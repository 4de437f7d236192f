"""Fine-tuning with Ray Train (TorchTrainer, 2 DDP workers) on the session cluster: the
loss goes down, the output is a servable checkpoint, and a rerun resumes where it stopped.
What each `--train` mode updates on every architecture and layout (ResNet in open_clip's
layout from the command line's options included) is tested without Ray in
tests/unit/test_contrastive.py: the job runs the same learner and export."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from support.cluster import extra_app
from support.helpers import Reference, b64, cosine, encode, natural_image, wait_ready

from deployments.jobs.datasets import DataError, PairEncoder, PairSource
from deployments.jobs.finetune import FinetuneOptions, run_finetune
from deployments.jobs.synthetic import write_dataset
from deployments.jobs.training import TRAIN_REPORT, TRAIN_STATE, ModelInit

PAIRS = 120
BATCH = 16
WORKERS = 2


@pytest.fixture(scope="module")
def shapes_parquet(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("shapes"), PAIRS, seed=11, image_size=48, fmt="parquet")


def options(model_dir, data, tmp, epochs: int) -> FinetuneOptions:
    return FinetuneOptions(
        data=str(data), output=str(tmp / "tuned"), init=ModelInit(source=str(model_dir)),
        val_fraction=0.2, val_size=64, workers=WORKERS, run_name="tiny-run", storage_path=str(tmp / "ray_train"),
        train={"epochs": epochs, "batch_size": BATCH, "lr": 3e-3, "warmup_fraction": 0.1, "seed": 0,
               "device": "cpu", "threads": 1, "shuffle_buffer": 64},
    )


@pytest.fixture(scope="module")
def first_run(ray_session, model_dir, shapes_parquet, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    return tmp, run_finetune(options(model_dir, shapes_parquet, tmp, epochs=2), log=print)


def test_loss_goes_down_and_held_out_retrieval_is_reported(first_run):
    _, result = first_run
    history = result.history
    assert [h["epoch"] for h in history] == [1, 2]
    steps = history[0]["step"]
    assert steps >= 2 and history[1]["step"] == 2 * steps
    assert history[1]["train_loss"] < history[0]["train_loss"]
    assert history[1]["last_batch_loss"] < history[0]["first_batch_loss"]
    for h in history:
        assert 0 <= h["i2t_top1"] <= 1 and 0 <= h["t2i_top1"] <= 1 and h["val_pairs"] > 0
        assert 1 <= h["logit_scale"] <= 100


def test_output_is_a_complete_servable_checkpoint(first_run, model_dir, reference):
    tmp, result = first_run
    out = result.output
    assert out == (tmp / "tuned").resolve()
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "vocab.json", "merges.txt",
            "preprocessor_config.json", TRAIN_REPORT} <= names
    assert TRAIN_STATE not in names and not list(out.glob("*.bin"))
    # The source checkpoint's own tokenizer and preprocessing travel with it, unchanged.
    for name in ("tokenizer.json", "preprocessor_config.json", "vocab.json"):
        assert (out / name).read_bytes() == (model_dir / name).read_bytes()
    tuned = Reference(out)
    png = encode(natural_image(40, 30, seed=4))
    assert cosine(tuned.image(png), reference.image(png)) < 0.9999  # the weights did change
    assert json.loads((out / TRAIN_REPORT).read_text())["history"] == result.history


def test_fine_tuned_checkpoint_serves_through_the_api(first_run, server_port, wide_model_dir):
    _, result = first_run
    small = {"ray_actor_options": {"num_cpus": 0.5}}
    args = {"variants": [{"id": "local/tuned", "source": str(result.output), "dtype": "float32", "cpu_threads": 1,
                          "image_deployment": small, "text_deployment": small}], "router": {"deployment": small}}
    tuned = Reference(result.output)
    png = encode(natural_image(50, 44, seed=5))
    with extra_app(server_port, wide_model_dir, "tuned", "/tuned", args) as base:
        wait_ready(base)
        r = httpx.post(f"{base}/v1/embeddings", timeout=60,
                       json={"model": "local/tuned", "input": [{"image": b64(png)}, "a red circle"]})
    assert r.status_code == 200, r.text
    image, text = (np.asarray(d["embedding"]) for d in r.json()["data"])
    assert cosine(image, tuned.image(png)) >= 0.9999
    assert cosine(text, tuned.texts(["a red circle"])[0]) >= 0.9999


def test_rerun_resumes_from_the_saved_epoch_and_step(first_run, model_dir, shapes_parquet):
    tmp, first = first_run
    resumed = run_finetune(options(model_dir, shapes_parquet, tmp, epochs=3), log=print)
    history = resumed.history
    # Epochs 1-2 come from the checkpoint (same records, timings included), not retraining.
    assert history[:2] == first.history
    steps = first.history[0]["step"]
    assert history[2]["epoch"] == 3 and history[2]["step"] == 3 * steps
    assert resumed.checkpoint_path != first.checkpoint_path


def test_pair_sources_and_encoder_skip_bad_rows(tmp_path, reference, model_dir):
    folder = write_dataset(tmp_path / "folder", 6, seed=2, image_size=32)
    table = PairSource(folder).table()
    assert table.column_names == ["image", "text"] and table.num_rows == 6
    (tmp_path / "pairs.csv").write_text("path,caption\nfolder/images/0000000.png,a red star\n")
    assert PairSource(tmp_path / "pairs.csv").table().to_pylist()[0]["text"] == "a red star"
    with pytest.raises(DataError, match="captions table"):
        PairSource(tmp_path / "folder" / "images").table()

    from dataclasses import asdict

    from deployments.backends.checkpoint import Checkpoint

    ckpt = Checkpoint.open(str(model_dir))
    enc = PairEncoder(ckpt.image_spec().to_dict(), asdict(ckpt.tokenizer_info()), str(folder))
    rows = table.to_pylist()
    batch = enc({"image": np.asarray([r["image"] for r in rows] + [b"junk"], dtype=object),
                 "text": np.asarray([r["text"] for r in rows] + ["a blue cross"], dtype=object)})
    assert batch["pixels"].shape == (6, 32, 32, 3) and batch["pixels"].dtype == np.uint8 and enc.skipped == 1
    assert batch["ids"][0, : batch["length"][0]].tolist() == reference.token_ids(rows[0]["text"])
