"""The onnx backend on its own: parity with the torch backend on the same inputs, file
variant selection, the combined-graph fallback, errors that name the missing piece, and
no torch in the process."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from support.helpers import REPO, cosine, encode, natural_image
from support.onnx_fixtures import copy_metadata

from deployments.backends.checkpoint import Checkpoint, CheckpointError
from deployments.backends.onnx_backend import OnnxBackend
from deployments.backends.onnx_layout import TOWER_GRAPH, graph_file, graph_patterns, tower_candidates
from deployments.backends.torch_backend import TorchBackend
from deployments.preprocess.images import ImageLimits, prepare_image
from deployments.preprocess.tokenizer import ClipTokenizer
from deployments.engine.payloads import pack_tokens

TEXTS = ["a photo of a cat", "a diagram", "an extremely long caption " * 20, "x"]


@pytest.fixture(scope="module")
def torch_towers(model_dir):
    ckpt = Checkpoint.open(str(model_dir))
    return {t: TorchBackend.load(ckpt, t, device="cpu", dtype="float32") for t in ("image", "text")}


def onnx_towers(folder, onnx_dtype="fp32", **kw):
    ckpt = Checkpoint.open(str(folder))
    return {t: OnnxBackend.load(ckpt, t, onnx_dtype=onnx_dtype, **kw) for t in ("image", "text")}


@pytest.fixture(scope="module")
def inputs(torch_towers):
    spec = torch_towers["image"].image_spec
    pixels = np.stack([prepare_image(encode(natural_image(90, 60, seed=s), fmt), spec, ImageLimits())
                       for s, fmt in ((1, "PNG"), (2, "JPEG"), (3, "WEBP"), (4, "PNG"))])
    t = torch_towers["text"].tokenizer_info
    tokens = pack_tokens([e.ids for e in ClipTokenizer(t.json, t.context_length, t.bos_id, t.eos_id, t.vocab_size)
                          .encode(TEXTS, truncate=True)])
    return pixels, tokens


def embed(towers, inputs):
    pixels, tokens = inputs
    return towers["image"].embed_images(pixels), towers["text"].embed_texts(tokens.ids, tokens.lengths)


@pytest.mark.parametrize("folder, onnx_dtype, bar", [
    ("onnx_dir", "fp32", 0.9999), ("onnx_dir", "quantized", 0.99), ("onnx_dir", "fp16", 0.999),
    ("combined_only_dir", "fp32", 0.9999), ("combined_only_dir", "q8", 0.99),
])
def test_embeddings_match_the_torch_backend(request, folder, onnx_dtype, bar, torch_towers, inputs):
    towers = onnx_towers(request.getfixturevalue(folder), onnx_dtype)
    for ours, theirs in zip(embed(towers, inputs), embed(torch_towers, inputs)):
        assert ours.dtype == np.float32 and ours.shape == theirs.shape
        assert np.allclose(np.linalg.norm(ours, axis=-1), 1.0, atol=1e-5)
        assert cosine(ours, theirs).min() >= bar


def test_info_matches_the_torch_backend(onnx_dir, torch_towers):
    towers = onnx_towers(onnx_dir, "quantized")
    for tower in ("image", "text"):
        ours, theirs = towers[tower].info(), torch_towers[tower].info()
        assert (ours.backend, ours.device, ours.dtype, ours.embed_dim) == ("onnx", "cpu", "q8", theirs.embed_dim)
        # Preprocessing and tokenizer come from the same files through the same code.
        assert ours.image_spec == theirs.image_spec and ours.tokenizer == theirs.tokenizer
        assert ours.logit_scale == pytest.approx(theirs.logit_scale, rel=1e-6)
        assert ours.extra["graph"] == f"onnx/{TOWER_GRAPH[tower]}_quantized.onnx"
        # Only this tower's weights are in the session (int8 graphs add scales and zero points).
        assert 0.9 * theirs.param_count < ours.param_count < 1.1 * theirs.param_count


def test_combined_graph_is_cut_to_one_tower(combined_only_dir, onnx_dir, tmp_path, reference):
    towers = onnx_towers(combined_only_dir)
    split = onnx_towers(onnx_dir)
    image, text = towers["image"], towers["text"]
    assert image.info().extra["combined_graph"] and image.info().extra["graph"] == "onnx/model.onnx"
    assert [i.name for i in image.session.get_inputs()] == ["pixel_values"]
    assert [i.name for i in text.session.get_inputs()] == ["input_ids", "attention_mask"]
    assert image.param_count == split["image"].param_count and text.param_count == split["text"].param_count
    # Graphs from other exporters lack our metadata: the scale is read from the graph itself.
    bare = copy_metadata(combined_only_dir, tmp_path / "bare")
    (bare / "onnx").mkdir()
    model = onnx.load(str(combined_only_dir / "onnx" / "model.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(bare / "onnx" / "model.onnx"))
    scale = OnnxBackend.load(Checkpoint.open(str(bare)), "image").info().logit_scale
    assert scale == pytest.approx(float(reference.model.logit_scale.detach().exp()), rel=1e-5)


def test_missing_pieces_are_named(onnx_dir, tmp_path):
    empty = copy_metadata(onnx_dir, tmp_path / "no-graphs")
    with pytest.raises(CheckpointError) as exc:
        OnnxBackend.load(Checkpoint.open(str(empty)), "image")
    assert "onnx/vision_model.onnx" in str(exc.value) and "onnx/model.onnx" in str(exc.value)
    assert "python -m deployments export-onnx" in str(exc.value)
    with pytest.raises(CheckpointError) as exc:
        OnnxBackend.load(Checkpoint.open(str(onnx_dir)), "text", onnx_dtype="q4")
    assert "onnx/text_model_q4.onnx" in str(exc.value) and "onnx/text_model_quantized.onnx" in str(exc.value)

    no_tokenizer = shutil.copytree(onnx_dir, tmp_path / "no-tokenizer")
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (no_tokenizer / name).unlink()
    OnnxBackend.load(Checkpoint.open(str(no_tokenizer)), "image")  # the image tower needs no tokenizer
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        OnnxBackend.load(Checkpoint.open(str(no_tokenizer)), "text")

    # Weights kept beside the graph (>2 GB exports): found when present, named when not.
    external = copy_metadata(onnx_dir, tmp_path / "external")
    (external / "onnx").mkdir()
    model = onnx.load(str(onnx_dir / "onnx" / "text_model.onnx"))
    onnx.save(model, str(external / "onnx" / "text_model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="text_model.onnx_data", size_threshold=0)
    assert OnnxBackend.load(Checkpoint.open(str(external)), "text").param_count > 0
    (external / "onnx" / "text_model.onnx_data").unlink()
    with pytest.raises(CheckpointError, match="text_model.onnx_data"):
        OnnxBackend.load(Checkpoint.open(str(external)), "text")


def test_hub_downloads_fetch_only_the_tower_and_variant():
    from fnmatch import fnmatch

    xenova = [f"onnx/{stem}{sfx}.onnx" for stem in ("model", "vision_model", "text_model")
              for sfx in ("", "_quantized", "_fp16", "_int8", "_uint8", "_q4", "_q4f16", "_bnb4")]
    xenova += ["onnx/vision_model.onnx_data", "onnx/vision_model_fp16.onnx_data", "model.safetensors", "config.json"]

    def fetched(patterns):
        return sorted(f for f in xenova if any(fnmatch(f, p) for p in patterns))

    assert fetched(OnnxBackend.serving_files("image")) == ["config.json", "onnx/vision_model.onnx",
                                                           "onnx/vision_model.onnx_data"]
    assert fetched(OnnxBackend.serving_files("text", onnx_dtype="quantized")) == [
        "config.json", "onnx/text_model_quantized.onnx"]
    assert fetched(graph_patterns(tower_candidates("image", "q4f16")[1])) == ["onnx/model_q4f16.onnx"]
    assert graph_file("vision_model", "bnb4") == "onnx/vision_model_bnb4.onnx"


def test_threads_follow_the_config_or_the_replica_allotment(onnx_dir, monkeypatch):
    ckpt = Checkpoint.open(str(onnx_dir))
    assert OnnxBackend.load(ckpt, "image", threads=1).info().extra["threads"] == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what Ray sets for an actor with num_cpus=3
    assert OnnxBackend.load(ckpt, "image").info().extra["threads"] == 3
    with pytest.raises(ValueError, match="onnx_dtype"):
        OnnxBackend.load(ckpt, "image", dtype="bfloat16")


def test_cuda_request_without_a_cuda_provider_is_an_error(onnx_dir):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(RuntimeError, match="CUDAExecutionProvider"):
        OnnxBackend.load(Checkpoint.open(str(onnx_dir)), "image", device="cuda")


def test_the_backend_never_imports_torch(onnx_dir):
    code = (
        "import sys, numpy as np\n"
        "from deployments.backends.checkpoint import Checkpoint\n"
        "from deployments.backends.registry import get_backend\n"
        f"ckpt = Checkpoint.open({str(onnx_dir)!r})\n"
        "backend = get_backend('onnx')\n"
        "img = backend.load(ckpt, 'image', onnx_dtype='q8').embed_images(np.zeros((2, 32, 32, 3), np.uint8))\n"
        "txt = backend.load(ckpt, 'text').embed_texts(np.array([[49406, 320, 49407]], np.int32), np.array([3]))\n"
        "print(img.shape, txt.shape, sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(2, 16) (1, 16) []"
