"""The ONNX export: Xenova's file layout and graph signatures, dynamic axes, both exporters,
the command-line script, the same safe-loading rules as serving, and open_clip/OpenAI
checkpoints (ResNet and ViT) exported and served by the onnx backend at the export's bars."""

from __future__ import annotations

import math
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support.helpers import cosine, encode, natural_image
from support.onnx_fixtures import copy_metadata
from support.openai_clip import (TINY_RESNET, TINY_VIT, reference_embeddings, save_open_clip, save_openai_archive,
                                 tiny_openai_clip)

from deployments.backends.checkpoint import Checkpoint, CheckpointError
from deployments.backends.onnx_backend import OnnxBackend
from deployments.export.onnx_export import MIN_COSINE, export_onnx
from deployments.preprocess.images import ImageLimits, prepare_image

XENOVA_SIGNATURES = {
    # file: (inputs with element types, outputs) as in Xenova/clip-vit-base-patch32
    "vision_model": ({"pixel_values": "tensor(float)"}, ["image_embeds", "last_hidden_state"]),
    "text_model": ({"input_ids": "tensor(int64)"}, ["text_embeds", "last_hidden_state"]),
    "model": ({"input_ids": "tensor(int64)", "pixel_values": "tensor(float)", "attention_mask": "tensor(int64)"},
              ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"]),
}


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_writes_the_xenova_layout(onnx_dir, reference):
    assert {"config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in onnx_dir.iterdir()}
    for stem, (inputs, outputs) in XENOVA_SIGNATURES.items():
        for suffix in ("", "_quantized", "_fp16"):
            s = session(onnx_dir / "onnx" / f"{stem}{suffix}.onnx")
            assert {i.name: i.type for i in s.get_inputs()} == inputs, (stem, suffix)
            assert [o.name for o in s.get_outputs()] == outputs, (stem, suffix)
            scale = float(s.get_modelmeta().custom_metadata_map["clip_serve.logit_scale"])
            assert scale == pytest.approx(float(reference.model.logit_scale.detach().exp()), rel=1e-6)
    # The quantized graphs really hold int8 weights (dynamic quantization: MatMulInteger).
    ops = {n.op_type for n in onnx.load(str(onnx_dir / "onnx" / "vision_model_quantized.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops


def test_graphs_take_any_batch_and_sequence_length(onnx_dir, reference):
    rng = np.random.default_rng(0)
    vision, text = session(onnx_dir / "onnx" / "vision_model.onnx"), session(onnx_dir / "onnx" / "text_model.onnx")
    for n in (1, 5):
        pixels = rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
        (ours,) = vision.run(["image_embeds"], {"pixel_values": pixels})
        with reference.torch.no_grad():
            ref = reference.model.get_image_features(pixel_values=reference.torch.from_numpy(pixels)).pooler_output
        assert cosine(ours, ref.numpy()).min() >= 0.9999
    for texts in (["a"], ["a photo of a cat", "a much longer caption about a dog " * 5, "x"]):
        enc = reference.processor.tokenizer(texts, padding=True, return_tensors="np")
        (ours,) = text.run(["text_embeds"], {"input_ids": enc.input_ids.astype(np.int64)})
        assert cosine(ours, reference.texts(texts)).min() >= 0.9999


def test_dynamo_exporter_gives_the_same_graph_signature(model_dir, tmp_path, reference):
    report = export_onnx(model_dir, tmp_path / "dyn", towers=("text",), exporter="dynamo")
    assert report.exporter == "dynamo" and report.files == ["onnx/text_model.onnx"]
    s = session(tmp_path / "dyn" / "onnx" / "text_model.onnx")
    assert [i.name for i in s.get_inputs()] == ["input_ids"] and s.get_outputs()[0].name == "text_embeds"
    texts = ["a photo of a cat", "a diagram of a bicycle with labels"]
    enc = reference.processor.tokenizer(texts, padding=True, return_tensors="np")
    (ours,) = s.run(["text_embeds"], {"input_ids": enc.input_ids.astype(np.int64)})
    assert cosine(ours, reference.texts(texts)).min() >= 0.9999


def pickle_only(model_dir, folder):
    import torch
    from transformers import CLIPModel

    shutil.copytree(model_dir, folder)
    (folder / "model.safetensors").unlink()
    torch.save(CLIPModel.from_pretrained(model_dir).state_dict(), folder / "pytorch_model.bin")
    return folder


def test_export_refuses_pickle_weights_unless_allowed(model_dir, tmp_path, reference, capsys):
    src = pickle_only(model_dir, tmp_path / "pickled")
    with pytest.raises(CheckpointError, match="allow_pickle_weights"):
        export_onnx(src, tmp_path / "out", towers=("image",))
    # The command line, with the flag: `python -m deployments export-onnx`'s own entry point
    # (in this process: a fresh interpreter would only add its start-up).
    from deployments.__main__ import main

    assert main(["export-onnx", str(src), str(tmp_path / "out"), "--towers", "image", "--quantize",
                 "--allow-pickle-weights"]) == 0
    assert "onnx/vision_model_quantized.onnx" in capsys.readouterr().out
    meta = session(tmp_path / "out" / "onnx" / "vision_model.onnx").get_modelmeta().custom_metadata_map
    expected = float(reference.model.logit_scale.detach().exp())
    assert math.isclose(float(meta["clip_serve.logit_scale"]), expected, rel_tol=1e-6)


def test_export_rejects_unknown_towers(model_dir, tmp_path):
    with pytest.raises(ValueError, match="towers"):
        export_onnx(model_dir, tmp_path / "x", towers=("audio",))


# --- open_clip and OpenAI checkpoints --------------------------------------------------

# A transform other than OpenAI's default, so that the export has to carry it over.
RESNET_PREPROCESS = {"mean": [0.5, 0.45, 0.4], "std": [0.3, 0.25, 0.2], "interpolation": "bilinear",
                     "resize_mode": "squash"}
FAMILY_TEXTS = ["a photo of a cat", "A DIAGRAM of a Network, drawn in 1999!", "x"]
FAMILY_IMAGES = [encode(natural_image(w, h, seed=i), "PNG") for i, (w, h) in enumerate([(80, 60), (50, 130), (97, 97)])]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """name -> (OpenAI's model, source, export): a ResNet in open_clip's layout exported with
    every variant (fp16, q8, combined), and a ViT OpenAI archive (fp32 and q8)."""
    root = tmp_path_factory.mktemp("clip-family")
    resnet = tiny_openai_clip(TINY_RESNET, seed=0)
    resnet_src = save_open_clip(resnet, TINY_RESNET, root / "resnet", **RESNET_PREPROCESS)
    export_onnx(resnet_src, root / "resnet-onnx", quantize=True, fp16=True, combined=True)
    vit = tiny_openai_clip(TINY_VIT, seed=1, fp16_weights=True)
    vit_src = save_openai_archive(vit, root / "ViT-B-32.pt")
    export_onnx(vit_src, root / "vit-onnx", quantize=True, allow_pickle_weights=True)
    return {"resnet": (resnet, resnet_src, root / "resnet-onnx"), "vit": (vit, vit_src, root / "vit-onnx")}


def family_inputs(image: OnnxBackend, text: OnnxBackend) -> tuple[np.ndarray, np.ndarray]:
    """Images through the router's decode/resize/crop; token ids padded with 0 as OpenAI's."""
    pixels = np.stack([prepare_image(data, image.image_spec, ImageLimits()) for data in FAMILY_IMAGES])
    seqs = [t.ids for t in text.tokenizer_info.tokenizer().encode(FAMILY_TEXTS, truncate=False)]
    ids = np.zeros((len(seqs), max(map(len, seqs))), dtype=np.int32)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
    return pixels, ids


@pytest.mark.parametrize("name, onnx_dtype", [("resnet", "fp32"), ("resnet", "fp16"), ("resnet", "q8"),
                                              ("vit", "fp32"), ("vit", "q8")])
def test_open_clip_and_openai_exports_match_openai_code(family, name, onnx_dtype):
    model, _, export = family[name]
    ckpt = Checkpoint.open(str(export))
    image, text = (OnnxBackend.load(ckpt, tower, onnx_dtype=onnx_dtype) for tower in ("image", "text"))
    pixels, ids = family_inputs(image, text)
    bar = MIN_COSINE[onnx_dtype]
    expected = reference_embeddings(model, "image", pixels, image.image_spec)
    assert cosine(image.embed_images(pixels), expected).min() >= bar
    assert cosine(text.embed_texts(ids, (ids != 0).sum(1)), reference_embeddings(model, "text", ids)).min() >= bar
    info = image.info()
    assert (info.extra["architecture"], info.embed_dim) == (name, 32)
    assert info.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-3)


def test_resnet_graphs(family):
    model, _, export = family["resnet"]
    # No token sequence in a ResNet: the image graph gives the embeddings alone.
    for suffix in ("", "_fp16", "_quantized"):
        s = session(export / "onnx" / f"vision_model{suffix}.onnx")
        assert [i.name for i in s.get_inputs()] == ["pixel_values"]
        assert [o.name for o in s.get_outputs()] == ["image_embeds"]
    # Dynamic quantization reaches the attention pool's projections; the convolutions stay float.
    ops = {n.op_type for n in onnx.load(str(export / "onnx" / "vision_model_quantized.onnx")).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"} and "Conv" in ops and "ConvInteger" not in ops
    # The combined graph: CLIPModel's outputs, and the onnx backend cuts the ResNet tower out of it.
    inputs, outputs = XENOVA_SIGNATURES["model"]
    s = session(export / "onnx" / "model.onnx")
    assert {i.name: i.type for i in s.get_inputs()} == inputs and [o.name for o in s.get_outputs()] == outputs
    combined = copy_metadata(export, export.parent / "resnet-combined-only")
    (combined / "onnx").mkdir(exist_ok=True)
    shutil.copyfile(export / "onnx" / "model.onnx", combined / "onnx" / "model.onnx")
    ckpt = Checkpoint.open(str(combined))
    image, text = OnnxBackend.load(ckpt, "image"), OnnxBackend.load(ckpt, "text")
    assert image.graph.combined
    pixels, ids = family_inputs(image, text)
    img, txt = image.embed_images(pixels), text.embed_texts(ids, (ids != 0).sum(1))
    assert cosine(img, reference_embeddings(model, "image", pixels, image.image_spec)).min() >= MIN_COSINE["fp32"]
    assert cosine(txt, reference_embeddings(model, "text", ids)).min() >= MIN_COSINE["fp32"]
    scale, bias = (np.reshape(v, (1, 3, 1, 1)) for v in image.image_spec.channel_affine())
    x = (pixels.transpose(0, 3, 1, 2) * scale + bias).astype(np.float32)
    logits_per_image, = s.run(["logits_per_image"], {"input_ids": ids.astype(np.int64), "pixel_values": x,
                                                     "attention_mask": (ids != 0).astype(np.int64)})
    temperature = float(model.logit_scale.detach().exp())
    assert np.allclose(logits_per_image, temperature * img @ txt.T, atol=1e-3 * temperature)


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_the_export_describes_the_source(family, name):
    _, source, export = family[name]
    src = Checkpoint.open(str(source))
    src.load_weights(allow_pickle=True)  # an archive's architecture comes from its weights
    ckpt = Checkpoint.open(str(export))
    assert ckpt.layout == "transformers" and ckpt.config == src.config and ckpt.architecture == name
    assert ckpt.image_spec() == src.image_spec() and ckpt.tokenizer_info() == src.tokenizer_info()
    if name == "resnet":  # open_clip's own transform came over, not OpenAI's default
        spec = ckpt.image_spec()
        assert (spec.resize_hw, spec.crop_hw, spec.resample, spec.mean) == ((64, 64), None, 2, (0.5, 0.45, 0.4))
    assert not (export / "open_clip_config.json").exists()  # it describes weights the export lacks


def test_openai_archives_need_allow_pickle_weights(family, tmp_path):
    _, archive, _ = family["vit"]
    with pytest.raises(CheckpointError, match=r"ViT-B-32\.pt.*allow_pickle_weights"):
        export_onnx(archive, tmp_path / "out", towers=("text",))
    assert not (tmp_path / "out").exists()  # refused before anything is written
