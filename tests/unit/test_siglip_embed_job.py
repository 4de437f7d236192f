"""The batch embedding job on a SigLIP checkpoint, without Ray: the job's own shard actor
(ShardEmbedder, what each Ray Data actor runs) over a folder of images, a captions table
and an OpenAI batch file, checked against SiglipModel's get_image_features and
get_text_features with the processor's fixed-length padding."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from support.helpers import encode, natural_image

pytest.importorskip("sentencepiece")

TEXTS = ["a photo of a cat", "A RED circle!", "an extremely long caption about a small dog " * 6, "x"]


def run_shards(input_path, out, variant, **job):
    """What run_embedding_job does around its Ray Data pipeline: plan, prepare the output,
    then every shard through the job's actor class, here in this process."""
    from deployments.jobs.embed_inputs import plan_shards
    from deployments.jobs.embedding import EmbedJob, ShardEmbedder, prepare_output

    spec = EmbedJob(input=str(input_path), output=str(out), variant=variant, **job)
    plan = plan_shards(input_path, spec.input_format, spec.shard_size, id_column=spec.id_column,
                       text_column=spec.text_column, image_column=spec.image_column)
    prepare_output(spec, plan)
    actor = ShardEmbedder(spec.model_dump(mode="json"), plan.format)
    return [json.loads(s) for s in actor({"shard": [json.dumps(s) for s in plan.shards]})["summary"]]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_siglip_embeds_like_get_image_and_text_features(siglip_model_dir, tmp_path):
    import pandas as pd
    import torch
    from transformers import AutoProcessor, SiglipModel

    from deployments.jobs.embedding import variant_for

    images = tmp_path / "images"
    images.mkdir()
    pngs = {f"{i}.png": encode(natural_image(30 + 9 * i, 50 - 4 * i, seed=20 + i), "PNG") for i in range(5)}
    for name, data in pngs.items():
        (images / name).write_bytes(data)
    (tmp_path / "texts.csv").write_text("id,text\n" + "".join(f"t{i},{t}\n" for i, t in enumerate(TEXTS)))
    batch_body = {"model": "tiny-siglip", "input": TEXTS[:2]}
    (tmp_path / "batch.jsonl").write_text(json.dumps({"custom_id": "r1", "method": "POST", "url": "/v1/embeddings",
                                                      "body": batch_body}) + "\n")
    # As `python -m deployments embed FOLDER --model CHECKPOINT --dtype float32 --device cpu` builds it.
    variant = variant_for(str(siglip_model_dir), dtype="float32", device="cpu")
    variant = variant.model_copy(update={"id": "tiny-siglip"})
    run_shards(images, tmp_path / "out-images", variant, shard_size=3, batch_size=2)
    run_shards(tmp_path / "texts.csv", tmp_path / "out-texts", variant, shard_size=3, batch_size=3)
    (summary,) = run_shards(tmp_path / "batch.jsonl", tmp_path / "out-batch", variant)
    assert summary["bad"] == []

    model = SiglipModel.from_pretrained(siglip_model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(siglip_model_dir)
    table = pd.read_parquet(tmp_path / "out-images").sort_values("id")
    assert table["id"].tolist() == sorted(pngs) and set(table["model"]) == {"tiny-siglip"}
    with torch.no_grad():
        pixels = processor(images=[Image.open(io.BytesIO(pngs[n])) for n in table["id"]], return_tensors="pt")
        expected = unit(model.get_image_features(**pixels).pooler_output.numpy())
        ids = processor(text=TEXTS, padding="max_length", truncation=True, return_tensors="pt").input_ids
        expected_texts = unit(model.get_text_features(input_ids=ids).pooler_output.numpy())
    got = np.stack(table["embedding"].to_numpy())
    assert (got * expected).sum(-1).min() >= 0.9999

    texts = pd.read_parquet(tmp_path / "out-texts").sort_values("id")
    assert texts["id"].tolist() == [f"t{i}" for i in range(len(TEXTS))]
    got_texts = np.stack(texts["embedding"].to_numpy())
    assert (got_texts * expected_texts).sum(-1).min() >= 0.9999
    # Shards of 3 and 1 texts: the fixed-length padding does not depend on the batch.
    assert (got_texts[:, None] * expected_texts[None]).sum(-1).argmax(-1).tolist() == list(range(len(TEXTS)))

    (line,) = (tmp_path / "out-batch" / "_shards" / "part-00000.jsonl").read_text().splitlines()
    body = json.loads(line)["response"]["body"]
    vectors = np.asarray([d["embedding"] for d in body["data"]], dtype=np.float32)
    assert (vectors * expected_texts[:2]).sum(-1).min() >= 0.9999
