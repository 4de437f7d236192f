"""Safe loading: safetensors first; pickle weights and a repository's own code only when the
variant config says so, with an error naming the flag otherwise."""

from __future__ import annotations

import json
import shutil
from fnmatch import fnmatch

import numpy as np
import pytest
from support.helpers import cosine, encode, natural_image
from test_export import pickle_only

from deployments.backends.checkpoint import Checkpoint, CheckpointError
from deployments.backends.torch_backend import TorchBackend
from deployments.config import parse_app_config
from deployments.preprocess.images import ImageLimits, prepare_image

# Stands in for a repository's own model code: it flips the image embedding, so a test can
# tell that this file, not transformers' CLIPModel, produced the vectors.
CUSTOM_CODE = '''
from transformers import CLIPModel


class FlippedCLIPModel(CLIPModel):
    def get_image_features(self, pixel_values=None, **kwargs):
        return -super().get_image_features(pixel_values=pixel_values, **kwargs).pooler_output
'''


def image_vectors(backend, reference, seeds=(1, 2)):
    datas = [encode(natural_image(70, 50, seed=s)) for s in seeds]
    ours = backend.embed_images(np.stack([prepare_image(d, backend.image_spec, ImageLimits()) for d in datas]))
    return ours, np.stack([reference.image(d) for d in datas])


def test_pickle_weights_need_the_flag(model_dir, tmp_path, reference):
    ckpt = Checkpoint.open(str(pickle_only(model_dir, tmp_path / "pickled")))
    with pytest.raises(CheckpointError, match="allow_pickle_weights: true"):
        TorchBackend.load(ckpt, "image", device="cpu", dtype="float32")
    backend = TorchBackend.load(ckpt, "image", device="cpu", dtype="float32", allow_pickle_weights=True)
    ours, ref = image_vectors(backend, reference)
    assert cosine(ours, ref).min() >= 0.9999
    assert backend.info().logit_scale == pytest.approx(float(reference.model.logit_scale.detach().exp()), rel=1e-6)


def test_safetensors_win_over_pickle(model_dir, tmp_path):
    folder = shutil.copytree(model_dir, tmp_path / "both")
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle: must never be opened")
    backend = TorchBackend.load(Checkpoint.open(str(folder)), "text", device="cpu", dtype="float32",
                                allow_pickle_weights=True)
    assert backend.info().param_count > 0


def test_remote_code_needs_the_flag(model_dir, tmp_path, reference):
    folder = shutil.copytree(model_dir, tmp_path / "custom")
    (folder / "flipped_clip.py").write_text(CUSTOM_CODE)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "flipped_clip.FlippedCLIPModel"}
    (folder / "config.json").write_text(json.dumps(config))
    ckpt = Checkpoint.open(str(folder))
    with pytest.raises(CheckpointError, match="trust_remote_code: true"):
        TorchBackend.load(ckpt, "image", device="cpu", dtype="float32")
    backend = TorchBackend.load(ckpt, "image", device="cpu", dtype="float32", trust_remote_code=True)
    ours, ref = image_vectors(backend, reference)
    assert cosine(ours, -ref).min() >= 0.9999  # the repository's code ran


def test_flags_reach_the_backend_and_the_download():
    cfg = parse_app_config({"variants": [
        {"id": "a", "allow_pickle_weights": True, "trust_remote_code": True},
        {"id": "b"},
        {"id": "c", "backend": "onnx", "onnx_dtype": "quantized"},
    ]})
    a, b, c = cfg.variants
    assert a.backend_options() == {"allow_pickle_weights": True, "trust_remote_code": True, "torch_compile": False}
    assert c.backend_options() == {"onnx_dtype": "q8"}

    def fetches(variant, name):
        return any(fnmatch(name, p) for p in TorchBackend.serving_files("image", **variant.backend_options()))

    assert fetches(a, "pytorch_model.bin") and fetches(a, "modeling_custom.py")
    assert not fetches(b, "pytorch_model.bin") and not fetches(b, "modeling_custom.py")
    assert fetches(b, "model.safetensors")
    with pytest.raises(ValueError, match="allow_pickle_weights applies to backend 'torch'"):
        parse_app_config({"variants": [{"id": "d", "backend": "onnx", "allow_pickle_weights": True}]})
