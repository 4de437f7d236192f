"""SigLIP through ONNX: the tiny SigLIP exported (split towers and the combined graph),
onnxruntime's outputs against SiglipModel on the same weights, and the onnx backend
serving the export with fixed-length padding and the sigmoid score (logit_bias from the
graphs' metadata); a graph without its bias, or weights without one, are refused."""

from __future__ import annotations

import io
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image
from support.helpers import encode, natural_image
from support.onnx_fixtures import copy_metadata

from deployments.backends.checkpoint import Checkpoint, CheckpointError

pytest.importorskip("sentencepiece")

TEXTS = ["a photo of a cat", "A RED circle!", "a dog", "an extremely long caption about a small dog " * 6]
IMAGES = [encode(natural_image(40 + 11 * i, 60 - 7 * i, seed=40 + i), "PNG") for i in range(3)]


@pytest.fixture(scope="module")
def siglip_onnx(siglip_model_dir, tmp_path_factory):
    from deployments.export.onnx_export import export_onnx

    out = tmp_path_factory.mktemp("siglip-onnx") / "tiny-siglip-onnx"
    report = export_onnx(siglip_model_dir, out, combined=True)
    return out, report


@pytest.fixture(scope="module")
def siglip_reference(siglip_model_dir):
    import torch
    from transformers import AutoProcessor, SiglipModel

    model = SiglipModel.from_pretrained(siglip_model_dir, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(siglip_model_dir)
    with torch.no_grad():
        enc = processor(text=TEXTS, images=[Image.open(io.BytesIO(d)) for d in IMAGES], padding="max_length",
                        truncation=True, return_tensors="pt")
        out = model(**enc)
    return {"model": model, "enc": enc, "image": out.image_embeds.numpy(), "text": out.text_embeds.numpy(),
            "scores": out.logits_per_image.sigmoid().numpy()}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_matches_siglip_model(siglip_onnx, siglip_reference):
    out, report = siglip_onnx
    assert report.files == ["onnx/model.onnx", "onnx/text_model.onnx", "onnx/vision_model.onnx"]
    assert min(report.cosines.values()) >= 0.9999
    assert {"config.json", "spiece.model", "tokenizer_config.json", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()}
    model, enc = siglip_reference["model"], siglip_reference["enc"]
    for name in ("vision_model", "text_model", "model"):
        meta = session(out / "onnx" / f"{name}.onnx").get_modelmeta().custom_metadata_map
        assert float(meta["clip_serve.logit_scale"]) == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
        assert float(meta["clip_serve.logit_bias"]) == pytest.approx(float(model.logit_bias.detach()), rel=1e-6)
    vision, text = session(out / "onnx" / "vision_model.onnx"), session(out / "onnx" / "text_model.onnx")
    assert [i.name for i in text.get_inputs()] == ["input_ids"]  # SigLIP's text tower takes no mask
    (images,) = vision.run(["image_embeds"], {"pixel_values": enc.pixel_values.numpy()})
    (texts,) = text.run(["text_embeds"], {"input_ids": enc.input_ids.numpy()})
    assert ((unit(images) * siglip_reference["image"]).sum(-1)).min() >= 0.9999
    assert ((unit(texts) * siglip_reference["text"]).sum(-1)).min() >= 0.9999
    combined = session(out / "onnx" / "model.onnx")
    assert [i.name for i in combined.get_inputs()] == ["input_ids", "pixel_values"]
    (logits,) = combined.run(["logits_per_image"], {"input_ids": enc.input_ids.numpy(),
                                                    "pixel_values": enc.pixel_values.numpy()})
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), siglip_reference["scores"], atol=2e-5)


@pytest.mark.parametrize("graphs", ["split", "combined"])
def test_onnx_backend_serves_the_export_with_the_sigmoid_score(siglip_onnx, siglip_reference, graphs, tmp_path):
    from deployments.backends.onnx_backend import OnnxBackend
    from deployments.engine.payloads import pack_tokens
    from deployments.preprocess.images import ImageLimits, prepare_image
    from deployments.serving.scoring import Scorer, cosine_matrix

    folder, _ = siglip_onnx
    if graphs == "combined":  # only onnx/model.onnx: each tower is cut out at load time
        folder = copy_metadata(folder, tmp_path / "combined-only")
        (folder / "onnx").mkdir()
        shutil.copyfile(siglip_onnx[0] / "onnx" / "model.onnx", folder / "onnx" / "model.onnx")
    ckpt = Checkpoint.open(str(folder))
    image, text = (OnnxBackend.load(ckpt, tower, device="cpu") for tower in ("image", "text"))
    assert text.graph.combined is (graphs == "combined")
    model = siglip_reference["model"]
    info = text.info()
    assert (info.family, info.score_function, info.tokenizer.padding) == ("siglip", "sigmoid", "max_length")
    assert info.logit_bias == pytest.approx(float(model.logit_bias.detach()), rel=1e-6)
    assert info.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()), rel=1e-6)
    assert image.info().logit_bias == info.logit_bias and image.info().extra["family"] == "siglip"

    pixels = np.stack([prepare_image(d, ckpt.image_spec(), ImageLimits()) for d in IMAGES])
    images = image.embed_images(pixels)
    tok = info.tokenizer.tokenizer()
    packed = pack_tokens([e.ids for e in tok.encode(TEXTS, truncate=True)])
    texts = text.embed_texts(packed.ids, packed.lengths)
    assert ((images * siglip_reference["image"]).sum(-1)).min() >= 0.9999
    assert ((texts * siglip_reference["text"]).sum(-1)).min() >= 0.9999
    # Packed as the router packs, shorter than the context: the backend pads with the pad id.
    short = pack_tokens([e.ids for e in tok.encode(TEXTS[:3], truncate=True)])
    assert short.ids.shape[1] < info.tokenizer.context_length
    assert ((text.embed_texts(short.ids, short.lengths) * siglip_reference["text"][:3]).sum(-1)).min() >= 0.9999
    scores = Scorer(info.score_function, info.logit_scale, info.logit_bias)(cosine_matrix(images, texts))
    np.testing.assert_allclose(scores, siglip_reference["scores"], atol=2e-5)


def test_a_siglip_graph_without_its_bias_is_refused(siglip_onnx, tmp_path):
    from deployments.backends.onnx_backend import OnnxBackend

    folder = copy_metadata(siglip_onnx[0], tmp_path / "no-bias")
    (folder / "onnx").mkdir()
    graph = onnx.load(str(siglip_onnx[0] / "onnx" / "text_model.onnx"))
    kept = [(p.key, p.value) for p in graph.metadata_props if p.key != "clip_serve.logit_bias"]
    del graph.metadata_props[:]
    for key, value in kept:
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(folder / "onnx" / "text_model.onnx"))
    with pytest.raises(CheckpointError, match=r"without its logit_bias.*export-onnx"):
        OnnxBackend.load(Checkpoint.open(str(folder)), "text", device="cpu")


def test_export_refuses_siglip_weights_without_a_bias(siglip_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from deployments.export.onnx_export import ExportError, export_onnx

    folder = copy_metadata(siglip_model_dir, tmp_path / "no-bias")
    weights = load_file(siglip_model_dir / "model.safetensors")
    del weights["logit_bias"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ExportError, match="no logit_scale and logit_bias"):
        export_onnx(folder, tmp_path / "out", towers=("image",))
