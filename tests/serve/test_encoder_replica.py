"""An encoder deployment on real Ray Serve, called through its handle: batching across
calls, splitting of oversized calls, failure isolation in a batch, live batching changes."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from support.cluster import app_args, deploy
from support.helpers import cosine, encode, natural_image

from deployments.preprocess.image_spec import ImageSpec
from deployments.preprocess.images import ImageLimits, prepare_image

IMAGE_ENCODER = "ImageEncoder:openai--clip-vit-base-patch32"


@pytest.fixture(scope="module")
def encoder(server):
    from ray import serve

    return serve.get_deployment_handle(IMAGE_ENCODER, app_name="clip")


def pixels(n: int, seed: int, spec: ImageSpec) -> np.ndarray:
    return np.stack([prepare_image(encode(natural_image(50, 40, seed=seed + i)), spec, ImageLimits()) for i in range(n)])


def test_calls_are_batched_split_and_isolated(encoder, reference):
    spec = ImageSpec.from_dict(encoder.info.remote().result()["image_spec"])
    good_a, good_b = pixels(3, 0, spec), pixels(40, 10, spec)  # 40 > max_batch_size 32: split
    bad = np.zeros((2, 7, 7, 3), dtype=np.uint8)  # wrong size: its forward raises

    async def main():
        calls = [encoder.embed.remote(p) for p in (good_a, bad, good_b)]
        return await asyncio.gather(*calls, return_exceptions=True)

    out_a, out_bad, out_b = asyncio.run(main())
    assert isinstance(out_bad, Exception)
    assert out_a.shape == (3, 16) and out_b.shape == (40, 16)
    expected = np.stack([reference.image(encode(natural_image(50, 40, seed=s))) for s in (0, 1, 2)])
    assert cosine(out_a, expected).min() >= 0.9999
    expected_b = np.stack([reference.image(encode(natural_image(50, 40, seed=10 + i))) for i in (0, 39)])
    assert cosine(out_b[[0, 39]], expected_b).min() >= 0.9999


def test_batching_knobs_change_live(encoder, server_port, wide_model_dir):
    before = encoder.stats.remote().result()
    tuned = [{"name": IMAGE_ENCODER, "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.0}}]
    try:
        deploy(server_port, app_args(wide_model_dir), tuned)
        after = encoder.stats.remote().result()
        assert after["pid"] == before["pid"]  # reconfigured in place, not restarted
        assert (after["max_batch_size"], after["batch_wait_timeout_s"]) == (4, 0.0)
        spec = ImageSpec.from_dict(encoder.info.remote().result()["image_spec"])
        assert encoder.embed.remote(pixels(9, 0, spec)).result().shape == (9, 16)
        assert encoder.stats.remote().result()["forwards"] - after["forwards"] == 3  # 4 + 4 + 1
    finally:
        deploy(server_port, app_args(wide_model_dir))
    assert encoder.stats.remote().result()["max_batch_size"] == 32


def test_two_batches_in_flight_keep_working_while_one_forward_is_busy(ray_session, model_dir, reference):
    """`batches_in_flight: 2` (the GPU default: one batch's copy overlaps the other's
    compute) runs forwards on two threads: with one thread held busy, calls still go
    through the other, and every call gets its own rows in order. Observable without a GPU."""
    import time

    from ray import serve

    from deployments.app import ImageEncoder

    variant = {"id": "overlap", "source": str(model_dir), "device": "cpu", "dtype": "float32", "batches_in_flight": 2}
    actor = {"num_cpus": 0.25, "runtime_env": {"env_vars": {"CLIP_SERVE_TEST_HOOKS": "1"}}}
    handle = serve.run(ImageEncoder.options(name="OverlapEncoder", ray_actor_options=actor,
                                            user_config={"max_batch_size": 4, "batch_wait_timeout_s": 0.0})
                       .bind(variant), name="overlap", route_prefix=None)
    try:
        spec = ImageSpec.from_dict(handle.info.remote().result()["image_spec"])
        handle.debug_stall_forward.remote(30).result()  # one forward thread is now busy for 30 s
        calls = [pixels(3, 7 * k, spec) for k in range(4)]
        started = time.perf_counter()

        async def main():
            return await asyncio.gather(*(handle.embed.remote(c) for c in calls))

        outs = asyncio.run(main())
        assert time.perf_counter() - started < 20  # served by the other thread, not after the stall
        for k, out in enumerate(outs):
            expected = np.stack([reference.image(encode(natural_image(50, 40, seed=7 * k + i))) for i in range(3)])
            assert cosine(out, expected).min() >= 0.9999
        assert handle.stats.remote().result()["batches_in_flight"] == 2
    finally:
        serve.delete("overlap")


def test_batches_in_flight_policy():
    from deployments.engine.tower import cpu_batches_in_flight

    assert cpu_batches_in_flight("auto", "torch", 2) == 2  # two forwards of one thread each
    assert cpu_batches_in_flight("auto", "torch", 1) == 1
    assert cpu_batches_in_flight("auto", "onnx", 8) == 1  # one session thread pool
    assert cpu_batches_in_flight(1, "torch", 8) == 1


def test_knobs_left_out_keep_the_towers_own_defaults(ray_session, model_dir):
    """A user_config that sets only the wait keeps max_batch_size at the tower's default
    (64 for text, 32 for images), both at build time and when retuned live."""
    from deployments.config import VariantConfig
    from deployments.app import TextEncoder

    options = VariantConfig(id="t", text_deployment={"user_config": {"batch_wait_timeout_s": 0.0}}).deployment_options("text")
    assert options.to_options()["user_config"] == {"batch_wait_timeout_s": 0.0}
    replica = TextEncoder.func_or_class({"id": "t", "source": str(model_dir), "device": "cpu", "towers": ["text"]})
    replica.reconfigure({"batch_wait_timeout_s": 0.0})
    stats = asyncio.run(replica.stats())
    assert (stats["max_batch_size"], stats["batch_wait_timeout_s"]) == (64, 0.0)
