"""The batch embedding job.

Submitted with JobSubmissionClient to a `ray start --head` cluster of its own (code
shipped by the job's working_dir): it is stopped mid-way, rerun, and must then embed only
the missing shards, report the corrupt image, and match the API's vectors. Texts and
OpenAI batch files run in-process on the session cluster and must match the API too.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.cluster import app_args
from support.helpers import HUB_ID, REPO, b64, data_uri, encode, natural_image
from support.job_cluster import ray_head

from deployments.jobs.embedding import EmbedJob, run_embedding_job, variant_for
from deployments.jobs.synthetic import write_dataset

N_IMAGES = 240
SHARD = 4
N_SHARDS = (N_IMAGES + 1 + SHARD - 1) // SHARD  # + the corrupt file
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def api_vectors(client, inputs: list, model: str = HUB_ID) -> np.ndarray:
    out = []
    for i in range(0, len(inputs), 50):
        r = client.post("/v1/embeddings", json={"model": model, "input": inputs[i : i + 50]})
        assert r.status_code == 200, r.text
        out += [d["embedding"] for d in r.json()["data"]]
    return np.asarray(out, dtype=np.float32)


def wait_status(jobs, job_id: str, wanted: set[str], timeout_s: float = 300) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        status = str(jobs.get_job_status(job_id).value)
        if status in wanted:
            return status
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} still {status}: {jobs.get_job_logs(job_id)[-3000:]}")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = write_dataset(tmp_path_factory.mktemp("embed-data"), N_IMAGES, seed=5, image_size=64) / "images"
    (folder / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing an image needs")
    return folder


@pytest.fixture(scope="module")
def interrupted_then_resumed(images, model_dir, tmp_path_factory):
    """Run 1 is stopped once a few shards are written; run 2 is the same command."""
    from ray.job_submission import JobSubmissionClient

    out = tmp_path_factory.mktemp("embed-out") / "vectors"
    entrypoint = (f"{sys.executable} -m deployments embed {images} --output {out} --model {model_dir} "
                  f"--dtype float32 --device cpu --shard-size {SHARD} --batch-size 8 --workers 1")
    runtime_env = {"working_dir": str(REPO), "excludes": ["/tests/", ".git", "__pycache__", "*.egg-info"]}
    with ray_head() as (address, _):
        jobs = JobSubmissionClient(address)
        first = jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        deadline = time.time() + 300
        while len(list((out / "_shards").glob("part-*.json"))) < 3:
            assert str(jobs.get_job_status(first).value) not in TERMINAL, jobs.get_job_logs(first)[-3000:]
            assert time.time() < deadline, jobs.get_job_logs(first)[-3000:]
            time.sleep(0.05)
        jobs.stop_job(first)
        assert wait_status(jobs, first, TERMINAL) == "STOPPED"
        time.sleep(2)  # nothing of the stopped job may still be writing
        before = {p.name: p.stat().st_mtime_ns for p in (out / "_shards").glob("part-*.json")}

        second = jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
        status = wait_status(jobs, second, TERMINAL)
        logs = jobs.get_job_logs(second)
        assert status == "SUCCEEDED", logs[-4000:]
    return out, before, json.loads((out / "_report.json").read_text()), logs


def test_rerun_after_interruption_embeds_only_the_missing_shards(interrupted_then_resumed):
    out, before, report, logs = interrupted_then_resumed
    assert 0 < len(before) < N_SHARDS, f"the first run was not interrupted mid-way ({len(before)}/{N_SHARDS} shards)"
    done_first = {int(name[5:10]) for name in before}
    assert report["shards_total"] == N_SHARDS
    assert report["shards_skipped"] == len(before) and report["shards_processed"] == N_SHARDS - len(before)
    assert set(report["processed_shards"]) == set(range(N_SHARDS)) - done_first
    for name, mtime in before.items():  # finished shards were left alone
        assert (out / "_shards" / name).stat().st_mtime_ns == mtime
    assert f"{len(before)} already done, {N_SHARDS - len(before)} to run" in logs


def test_corrupt_image_is_reported_not_fatal(interrupted_then_resumed):
    _, _, report, logs = interrupted_then_resumed
    assert report["items_ok"] == N_IMAGES and report["items_bad"] == 1
    (bad,) = report["bad_items"]
    assert bad["id"] == "zz-broken.png" and "could not be decoded" in bad["error"]
    assert "bad item zz-broken.png" in logs


def test_job_vectors_equal_the_api_vectors(interrupted_then_resumed, images, client, model_dir):
    import pandas as pd

    out, _, _, _ = interrupted_then_resumed
    table = pd.read_parquet(out).sort_values("id")
    names = sorted(p.name for p in images.glob("0*.png"))
    assert table["id"].tolist() == names
    assert set(table["modality"]) == {"image"} and set(table["dtype"]) == {"float32"}
    assert set(table["model"]) == {model_dir.name}
    job = np.stack(table["embedding"].to_numpy()).astype(np.float32)
    api = api_vectors(client, [{"image": b64((images / n).read_bytes())} for n in names])
    assert job.shape == api.shape
    np.testing.assert_allclose(job, api, rtol=0, atol=2e-6)


def serve_config(tmp_path: Path, wide_model_dir: Path) -> Path:
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump({"applications": [{"name": "clip", "import_path": "deployments.app:build_app",
                                                      "args": app_args(wide_model_dir)}]}))
    return path


def test_texts_from_a_table_match_the_api(ray_session, client, tmp_path, wide_model_dir):
    texts = ["a photo of a cat", "a red circle", "", "a diagram of a bicycle " * 20]
    (tmp_path / "texts.csv").write_text("id,text\n" + "".join(f"t{i},{t}\n" for i, t in enumerate(texts)))
    variant = variant_for("clip-b32", str(serve_config(tmp_path, wide_model_dir)))
    assert variant.id == HUB_ID and variant.dtype == "float32"
    report = run_embedding_job(EmbedJob(input=str(tmp_path / "texts.csv"), output=str(tmp_path / "out"),
                                        variant=variant, shard_size=2))
    assert report["items_ok"] == 3 and [b["id"] for b in report["bad_items"]] == ["t2"]
    import pandas as pd

    table = pd.read_parquet(tmp_path / "out").sort_values("id")
    assert table["id"].tolist() == ["t0", "t1", "t3"] and set(table["modality"]) == {"text"}
    job = np.stack(table["embedding"].to_numpy())
    np.testing.assert_allclose(job, api_vectors(client, [texts[0], texts[1], texts[3]]), rtol=0, atol=2e-6)


def test_openai_batch_file_answers_like_the_api(ray_session, client, tmp_path, wide_model_dir):
    png = encode(natural_image(70, 50, seed=8))
    bodies = {
        "mixed": {"model": HUB_ID, "input": ["a cat", {"image": data_uri(png)}, [320, 1125]]},
        "b64": {"model": "clip-b32", "encoding_format": "base64", "input": [{"image": b64(png)}]},
        "bad-image": {"model": HUB_ID, "input": [{"image": "not an image"}]},
        "unknown-model": {"model": "nope", "input": "x"},
        "bad-dimensions": {"model": HUB_ID, "input": "x", "dimensions": 3},
        "bad-type": {"model": HUB_ID, "input": 5},
    }
    lines = [json.dumps({"custom_id": k, "method": "POST", "url": "/v1/embeddings", "body": b}) for k, b in bodies.items()]
    lines.insert(2, "{not json")
    (tmp_path / "batch.jsonl").write_text("\n".join(lines) + "\n")
    variant = variant_for("clip-b32", str(serve_config(tmp_path, wide_model_dir)))
    report = run_embedding_job(EmbedJob(input=str(tmp_path / "batch.jsonl"), output=str(tmp_path / "out"),
                                        variant=variant, shard_size=3))
    assert report["format"] == "openai" and report["items_ok"] == 2 and report["items_bad"] == 5
    records = [json.loads(line) for line in (tmp_path / "out" / "output.jsonl").read_text().splitlines()]
    assert [r["custom_id"] for r in records] == ["mixed", "b64", None, "bad-image", "unknown-model",
                                                 "bad-dimensions", "bad-type"]
    assert records[2]["response"] is None and records[2]["error"]["code"] == "invalid_request_line"
    for record in records:
        if record["custom_id"] is None:
            continue
        api = client.post("/v1/embeddings", json=bodies[record["custom_id"]])
        response = record["response"]
        assert record["error"] is None and response["status_code"] == api.status_code
        expected, got = api.json(), response["body"]
        if api.status_code != 200:
            assert got == expected
            continue
        assert got["usage"] == expected["usage"] and got["model"] == expected["model"] == HUB_ID

        def vectors(body):
            return np.asarray([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") if isinstance(d["embedding"], str)
                               else d["embedding"] for d in body["data"]], dtype=np.float32)

        np.testing.assert_allclose(vectors(got), vectors(expected), rtol=0, atol=2e-6)


@pytest.mark.parametrize("layout", ["open_clip", "openai"])
def test_resnet_clip_embeds_like_openai_code(ray_session, tmp_path, layout):
    """The batch job on a ResNet CLIP, from open_clip's layout and from an OpenAI archive
    (pickle consent given as `embed --allow-pickle-weights` gives it)."""
    import pandas as pd
    from support.openai_clip import TINY_RESNET, reference_embeddings, save_open_clip, save_openai_archive, tiny_openai_clip

    from deployments.backends.checkpoint import Checkpoint
    from deployments.preprocess.images import ImageLimits, prepare_image

    model = tiny_openai_clip(TINY_RESNET, seed=9, fp16_weights=True)
    source = (save_open_clip(model, TINY_RESNET, tmp_path / "rn") if layout == "open_clip"
              else save_openai_archive(model, tmp_path / "RN50.pt"))
    images = write_dataset(tmp_path / "data", 6, seed=2, image_size=48) / "images"
    variant = variant_for(str(source), allow_pickle_weights=layout == "openai", dtype="float32", device="cpu")
    report = run_embedding_job(EmbedJob(input=str(images), output=str(tmp_path / "out"), variant=variant, shard_size=4))
    assert report["items_ok"] == 6 and report["items_bad"] == 0
    table = pd.read_parquet(tmp_path / "out").sort_values("id")
    ckpt = Checkpoint.open(str(source))
    ckpt.load_weights(allow_pickle=True)
    spec = ckpt.image_spec()
    pixels = np.stack([prepare_image((images / name).read_bytes(), spec, ImageLimits()) for name in table["id"]])
    expected = reference_embeddings(model, "image", pixels, spec)
    assert ((np.stack(table["embedding"].to_numpy()) * expected).sum(-1)).min() >= 0.9999
