"""The ONNX export: Xenova's file layout and graph signatures, dynamic axes, both exporters,
the command-line script, and the same safe-loading rules as serving."""

from __future__ import annotations

import math
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from support.helpers import cosine

from deployments.backends.checkpoint import CheckpointError
from deployments.export.onnx_export import export_onnx

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
