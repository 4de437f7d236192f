"""The engine layer on its own, without Ray: packing, the device batcher and the tower
runtime over a tiny real checkpoint, the variant protocol both adapters implement, and the
request code (EmbeddingService) run on an in-process variant."""

from __future__ import annotations

import asyncio
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.helpers import cosine, encode, natural_image

import deployments.engine
from deployments.config import BatchingConfig, LimitsConfig, RouterConfig, VariantConfig
from deployments.engine.batching import BatchHooks
from deployments.engine.payloads import TokenBatch, forward, pack_images, pack_tokens, packer, unpack_payload
from deployments.engine.tower import TowerHooks, TowerRuntime
from deployments.engine.variant import EmbeddingVariant
from deployments.preprocess.images import ImageLimits, prepare_image
from deployments.protocol.inputs import ImageItem, TextItem

REPO = Path(__file__).resolve().parents[2]
ENGINE_MODULES = sorted(f"deployments.engine.{m.name}" for m in pkgutil.iter_modules(deployments.engine.__path__))


def test_no_engine_module_imports_ray():
    code = "import sys\n" + "".join(f"import {m}\n" for m in ENGINE_MODULES) + "print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert len(ENGINE_MODULES) >= 6 and out.stdout.strip() == "False"


def test_packing_is_chosen_per_tower_and_round_trips():
    assert packer("image") is pack_images and packer("text") is pack_tokens
    seqs = [np.array([1, 5, 2], np.int32), np.array([1, 2], np.int32)]
    batch = pack_tokens(seqs)
    assert batch.ids.shape == (2, 3) and batch.lengths.tolist() == [3, 2]
    assert [s.tolist() for s in unpack_payload(batch)] == [[1, 5, 2], [1, 2]]
    images = pack_images([np.zeros((4, 4, 3), np.uint8)] * 3)
    assert images.shape == (3, 4, 4, 3) and len(unpack_payload(images)) == 3


def test_forward_dispatches_on_the_payload_type():
    class Recorder:
        def embed_images(self, pixels):
            return ("images", len(pixels))

        def embed_texts(self, ids, lengths):
            return ("texts", ids.shape, lengths.tolist())

    assert forward(Recorder(), np.zeros((2, 4, 4, 3), np.uint8)) == ("images", 2)
    assert forward(Recorder(), TokenBatch(np.zeros((1, 3), np.int32), np.array([3], np.int32))) == (
        "texts", (1, 3), [3])


@pytest.fixture(scope="module")
def variant(model_dir) -> VariantConfig:
    return VariantConfig(id="tiny", source=str(model_dir), device="cpu", dtype="float32", cpu_threads=2)


def pixels(n: int, seed: int, spec) -> list[np.ndarray]:
    return [prepare_image(encode(natural_image(50, 40, seed=seed + i)), spec, ImageLimits()) for i in range(n)]


def test_tower_runtime_batches_calls_into_few_forwards_and_matches_transformers(variant, reference):
    from deployments.preprocess.image_spec import ImageSpec

    sizes: list[int] = []
    encoded: list[int] = []
    hooks = TowerHooks(batch=BatchHooks(size=sizes.append), encoded=encoded.append)
    runtime = TowerRuntime.for_replica(variant, "image", hooks=hooks)
    assert (runtime.info.variant_id, runtime.info.tower, runtime.info.backend) == ("tiny", "image", "torch")
    assert runtime.batches_in_flight == 2  # torch with two threads: two forwards of one thread each
    spec = ImageSpec.from_dict(runtime.info.image_spec)
    calls = [pixels(3, 10 * k, spec) for k in range(4)]

    async def main():
        runtime.reconfigure(BatchingConfig(max_batch_size=32, batch_wait_timeout_s=0.05))
        return await asyncio.gather(*(runtime.embed(pack_images(c)) for c in calls))

    outs = asyncio.run(main())
    for k, out in enumerate(outs):
        expected = np.stack([reference.image(encode(natural_image(50, 40, seed=10 * k + i))) for i in range(3)])
        assert out.shape == (3, 16) and cosine(out, expected).min() >= 0.9999
    assert runtime.forwards < len(calls) and sum(sizes) == sum(encoded) == 12 == runtime.items
    assert runtime.stats()["max_batch_size"] == 32


def test_a_bad_call_fails_alone_in_a_shared_batch(variant):
    from deployments.preprocess.image_spec import ImageSpec

    failures: list[BaseException] = []
    runtime = TowerRuntime.for_replica(variant, "image", hooks=TowerHooks(failed=failures.append),
                                       batching=BatchingConfig(max_batch_size=32, batch_wait_timeout_s=0.05))
    spec = ImageSpec.from_dict(runtime.info.image_spec)
    good = pack_images(pixels(2, 0, spec))
    bad = np.zeros((2, 7, 7, 3), np.uint8)  # the wrong input size: its forward raises

    async def main():
        return await asyncio.gather(runtime.embed(good), runtime.embed(bad), return_exceptions=True)

    ok, err = asyncio.run(main())
    assert isinstance(err, Exception) and ok.shape == (2, 16)
    assert failures  # the shared batch failed once, then each call ran on its own


def test_text_tower_probe_and_tokenizer_builder(variant, reference):
    runtime = TowerRuntime.for_replica(variant, "text")
    tokenizer = runtime.info.tokenizer.tokenizer()
    ids = [e.ids for e in tokenizer.encode(["a photo of a cat", "a dog"], truncate=True)]
    out = runtime.forward_items(ids)
    assert cosine(out, reference.texts(["a photo of a cat", "a dog"])).min() >= 0.9999
    asyncio.run(runtime.probe(timeout_s=30))
    assert runtime.forwards == 0  # the probe is not traffic


def test_config_logit_scale_applies_only_when_the_checkpoint_has_none(variant):
    runtime = TowerRuntime.for_replica(variant.model_copy(update={"logit_scale": 7.0}), "text")
    assert runtime.info.logit_scale != 7.0  # the tiny checkpoint carries its own


def test_both_variants_implement_the_protocol(model_dir):
    from deployments.jobs.model_runner import LocalVariant, ModelRunner
    from deployments.serving.variants import VariantRuntime

    config = VariantConfig(id="tiny", source=str(model_dir), device="cpu", dtype="float32")
    served = VariantRuntime(config, {"image": object(), "text": object()}, RouterConfig())
    local = LocalVariant(ModelRunner(config))
    members = [name for name, _ in inspect.getmembers(EmbeddingVariant) if not name.startswith("_")]
    assert {"id", "towers", "serves", "wait_ready", "image_spec", "tokenizer", "submit"} <= set(members)
    for impl in (served, local):
        assert isinstance(impl, EmbeddingVariant)
        for name in ("serves", "wait_ready", "submit"):
            assert (inspect.signature(getattr(impl, name)).parameters.keys()
                    == inspect.signature(getattr(EmbeddingVariant, name)).parameters.keys() - {"self"}), name
        assert impl.towers == ["image", "text"] and impl.id == "tiny"


def test_the_request_code_runs_on_an_in_process_variant(model_dir, reference):
    from deployments.engine.embedding_service import EmbeddingService
    from deployments.jobs.model_runner import LocalVariant, ModelRunner

    runner = ModelRunner(VariantConfig(id="tiny", source=str(model_dir), device="cpu", dtype="float32"), batch_size=4)
    local = LocalVariant(runner)
    service = EmbeddingService(LimitsConfig(), RouterConfig())
    image = encode(natural_image(50, 40, seed=3))
    import base64

    items = [TextItem("a red circle", "input[0]"), ImageItem(base64.b64encode(image).decode(), "input[1]"),
             TextItem("a blue square", "input[2]")]
    result = asyncio.run(service.embed(local, items, truncate=True))
    assert result.vectors.shape == (3, 16) and result.images == 1
    assert cosine(result.vectors[[0, 2]], reference.texts(["a red circle", "a blue square"])).min() >= 0.9999
    assert cosine(result.vectors[1:2], reference.image(image)[None]).min() >= 0.9999
