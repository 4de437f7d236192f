"""Deployment options come from one builder: defaults, recommended resources when a config
names none (catalogue, else the checkpoint's size class), config on top; and what each
tower was granted shows in /v1/models."""

from __future__ import annotations

import json

from deployments.backends.base import TowerInfo
from deployments.config import RouterConfig, VariantConfig
from deployments.serving.deployment_options import recommended_resources
from deployments.serving.encoder import ImageEncoderReplica, TextEncoderReplica
from deployments.serving.router import RouterReplica


def cpus(variant: VariantConfig) -> tuple[float, float]:
    return tuple(cls.get_deployment_options(variant)["ray_actor_options"]["num_cpus"]
                 for cls in (ImageEncoderReplica, TextEncoderReplica))


def test_a_catalogued_variant_without_resources_gets_the_catalogues(tmp_path):
    b32 = VariantConfig(id="openai/clip-vit-base-patch32")
    assert cpus(b32) == (2, 1) and "catalogue" in recommended_resources(b32, "image")[1]
    assert cpus(VariantConfig(id="openai/clip-vit-large-patch14")) == (8, 2)
    tuned = VariantConfig(id="openai/clip-vit-base-patch32", image_deployment={"ray_actor_options": {"num_cpus": 0.5}})
    assert cpus(tuned) == (0.5, 1)  # what the config sets wins
    gpu = VariantConfig(id="openai/clip-vit-base-patch32", device="cuda")
    assert ImageEncoderReplica.get_deployment_options(gpu)["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 1}


def test_other_checkpoints_get_their_size_class(model_dir, tmp_path):
    tiny = VariantConfig(id="local/tiny", source=str(model_dir))
    assert cpus(tiny) == (1, 1) and recommended_resources(tiny, "image")[1] == "size class tiny"
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"vision_config": {"hidden_size": 768, "num_hidden_layers": 12}}))
    assert cpus(VariantConfig(id="local/base", source=str(base))) == (2, 1)
    unknown = VariantConfig(id="someone/not-cached")
    assert cpus(unknown) == (1, 1) and recommended_resources(unknown, "text")[1] == "default"


def test_open_clip_checkpoints_get_the_size_class_of_their_vision_tower(tmp_path):
    """A ResNet outside the catalogue (open_clip layout; timm's config.json beside it names
    no CLIP shape) is classed by its vision tower's parameters."""
    def resnet_folder(name: str, width: int, layers: list[int], image_size: int, embed_dim: int) -> str:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"architecture": "resnet50_clip_gap", "num_classes": 0}))
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {
            "embed_dim": embed_dim, "quick_gelu": True,
            "vision_cfg": {"image_size": image_size, "layers": layers, "width": width, "patch_size": None},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}}))
        return str(folder)

    rn50 = VariantConfig(id="local/rn50", source=resnet_folder("rn50", 64, [3, 4, 6, 3], 224, 1024))
    assert cpus(rn50) == (2, 1) and recommended_resources(rn50, "image")[1] == "size class base"  # 38M
    rn50x64 = VariantConfig(id="local/rn50x64", source=resnet_folder("rn50x64", 128, [3, 15, 36, 10], 448, 1024))
    assert cpus(rn50x64) == (8, 2)  # 420M


def test_defaults_live_in_one_place():
    image, text = ImageEncoderReplica.get_deployment_options(), TextEncoderReplica.get_deployment_options()
    assert image["user_config"]["max_batch_size"] == 32 and text["user_config"]["max_batch_size"] == 64
    assert image["max_queued_requests"] > 0 and image["ray_actor_options"] == {"num_cpus": 1}
    router = RouterReplica.get_deployment_options(RouterConfig(deployment={"ray_actor_options": {"num_gpus": 0}}))
    assert router["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0}
    assert router["max_ongoing_requests"] > RouterConfig().max_concurrent_requests


def test_models_report_what_each_tower_was_granted():
    from deployments.serving.variants import VariantRuntime

    runtime = VariantRuntime(VariantConfig(id="v", towers=["image"]), {"image": object()}, RouterConfig())
    runtime._install(TowerInfo("v", "image", "torch", "cpu", "float32", 16, "f", None, 1,
                               image_spec=None, resources={"CPU": 2.0}))
    assert runtime.describe()["resources"] == {"image": {"CPU": 2.0}}
