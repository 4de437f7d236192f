"""Config validation and the built application's shape, without serving anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deployments.app import build_app
from deployments.config import ConfigError, parse_app_config

REPO = Path(__file__).resolve().parents[2]


def built_deployments(args: dict) -> dict:
    from ray.serve._private.build_app import build_app as serve_build

    built = serve_build(build_app(args), name="clip")
    return {d.name: d for d in built.deployments}


def test_defaults_fill_in():
    cfg = parse_app_config({"variants": [{"id": "openai/clip-vit-base-patch32"}]})
    v = cfg.variants[0]
    assert (v.resolved_source, v.backend, v.dtype, v.device, v.towers) == (
        "openai/clip-vit-base-patch32", "torch", "auto", "auto", ["image", "text"])
    assert v.deployment_name("image") == "ImageEncoder:openai--clip-vit-base-patch32"


@pytest.mark.parametrize(
    "args, field",
    [
        ({"variants": [{"id": "a", "dtyp": "float32"}]}, "variants[0].dtyp"),
        ({"variants": [{"id": "a", "dtype": "float8"}]}, "variants[0].dtype"),
        ({"variants": [{"id": "a", "backend": "tensorrt"}]}, "variants[0].backend"),
        ({"variants": [{"id": "a", "towers": []}]}, "variants[0].towers"),
        ({"variants": [{"id": "a", "towers": ["audio"]}]}, "variants[0].towers[0]"),
        ({"variants": [{"id": "bad id"}]}, "variants[0].id"),
        ({"variants": []}, "variants"),
        ({"variants": [{"id": "a", "image_deployment": {"user_config": {"max_batch_size": 0}}}]},
         "variants[0].image_deployment.user_config.max_batch_size"),
        ({"variants": [{"id": "a"}], "router": {"coalesce_wait_ms": -1}}, "router.coalesce_wait_ms"),
        ({"variants": [{"id": "a"}], "limitz": {}}, "limitz"),
        ({"variants": [{"id": "a"}], "auth": {"enabled": True, "api_keys_env": None}}, "auth"),
        ({"variants": [{"id": "a"}], "image_urls": {"allow_hosts": ["*.10.0.0.1"]}}, "image_urls.allow_hosts"),
        ({"variants": [{"id": "a"}], "image_urls": {"deny_hosts": ["bad host"]}}, "image_urls.deny_hosts"),
        ({"variants": [{"id": "a"}], "image_urls": {"max_redirects": 50}}, "image_urls.max_redirects"),
        ({"variants": [{"id": "a"}], "limits": {"image_formats": ["SVG"]}}, "limits.image_formats"),
        ({"variants": [{"id": "a"}], "router": {"request_timeout_s": 0}}, "router.request_timeout_s"),
        ({"variants": [{"id": "a"}], "auth": {"keys": ["inline keys are not a thing"]}}, "auth.keys"),
    ],
)
def test_bad_config_names_the_field(args, field):
    with pytest.raises(ConfigError) as exc:
        build_app(args)
    assert field in str(exc.value)


def test_duplicate_names_are_rejected():
    with pytest.raises(ConfigError, match="'b' is used by both"):
        parse_app_config({"variants": [{"id": "a", "aliases": ["b"]}, {"id": "b"}]})
    with pytest.raises(ConfigError, match="same deployment names"):
        parse_app_config({"variants": [{"id": "x/y"}, {"id": "x--y"}]})


def test_build_app_names_and_options():
    deployments = built_deployments({
        "variants": [
            {"id": "openai/clip-vit-base-patch32",
             "image_deployment": {"ray_actor_options": {"num_cpus": 2}, "max_ongoing_requests": 7,
                                  "autoscaling_config": {"min_replicas": 1, "max_replicas": 4},
                                  "user_config": {"max_batch_size": 64, "batch_wait_timeout_s": 0.01}}},
            {"id": "local/text-only", "source": "/nonexistent", "towers": ["text"], "device": "cuda"},
        ],
        "router": {"deployment": {"num_replicas": 2}},
    })
    assert set(deployments) == {
        "ImageEncoder:openai--clip-vit-base-patch32", "TextEncoder:openai--clip-vit-base-patch32",
        "TextEncoder:local--text-only", "Router"}
    image = deployments["ImageEncoder:openai--clip-vit-base-patch32"]
    assert image.ray_actor_options["num_cpus"] == 2
    assert image.max_ongoing_requests == 7
    assert image.user_config == {"max_batch_size": 64, "batch_wait_timeout_s": 0.01}
    assert image._deployment_config.autoscaling_config.max_replicas == 4
    text = deployments["TextEncoder:openai--clip-vit-base-patch32"]
    assert text.ray_actor_options["num_cpus"] == 1 and text.max_ongoing_requests == 64
    assert text.user_config == {"max_batch_size": 64, "batch_wait_timeout_s": 0.003}  # the text tower's default
    assert deployments["TextEncoder:local--text-only"].ray_actor_options["num_gpus"] == 1
    assert deployments["Router"].num_replicas == 2


def test_serve_config_yaml_builds_and_names_real_deployments():
    doc = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    (app,) = doc["applications"]
    assert app["import_path"] == "deployments.app:build_app"
    names = set(built_deployments(app["args"]))
    for override in app.get("deployments", []):
        assert override["name"] in names, f"serve_config.yaml tunes unknown deployment {override['name']}"
    ids = {v["id"] for v in app["args"]["variants"]}
    assert {"openai/clip-vit-base-patch32", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
            "patrickjohncyh/fashion-clip", "Xenova/clip-vit-base-patch32"} <= ids
    xenova = parse_app_config(app["args"]).variants[[v["id"] for v in app["args"]["variants"]].index(
        "Xenova/clip-vit-base-patch32")]
    assert xenova.backend == "onnx"


def test_building_the_app_imports_no_model_runtime():
    code = ("import sys; from deployments.app import build_app; "
            "build_app({'variants': [{'id': 'a'}]}); "
            "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_safe_defaults_for_limits_urls_auth_and_overload():
    cfg = parse_app_config({"variants": [{"id": "a"}]})
    assert not cfg.image_urls.enabled and not cfg.image_urls.allow_private_networks
    assert not cfg.auth.enabled and cfg.auth.api_keys_env == "CLIP_SERVE_API_KEYS"
    assert cfg.limits.image_formats == ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]
    deployments = built_deployments({"variants": [{"id": "a"}]})
    router = deployments["Router"]
    # the router sheds in the envelope before Serve's proxy would queue or refuse in plain text
    assert cfg.router.max_concurrent_requests < router.max_ongoing_requests
    assert router._deployment_config.max_queued_requests > 0
    assert router._deployment_config.backpressure_config.retry_after_s >= 1
    for name in ("ImageEncoder:a", "TextEncoder:a"):  # every deployment has a bounded queue
        assert deployments[name]._deployment_config.max_queued_requests > 0
    assert cfg.image_urls.allow_hosts == []  # normalised patterns come out of validation:
    urls = parse_app_config({"variants": [{"id": "a"}], "image_urls": {"allow_hosts": ["*.CDN.example.", "0x7f.1"]}})
    assert urls.image_urls.allow_hosts == [".cdn.example", "127.0.0.1"]


def test_serve_config_yaml_router_deadline_is_below_serves_own_timeout():
    doc = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    (app,) = doc["applications"]
    router = parse_app_config(app["args"]).router
    assert router.request_timeout_s < doc["http_options"]["request_timeout_s"]
