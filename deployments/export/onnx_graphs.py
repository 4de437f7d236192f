"""torch -> ONNX for CLIP towers, with the input/output names of the Xenova/optimum exports:

    vision_model.onnx  pixel_values -> image_embeds, last_hidden_state
    text_model.onnx    input_ids (int64) -> text_embeds, last_hidden_state
    model.onnx         input_ids, pixel_values, attention_mask ->
                       logits_per_image, logits_per_text, text_embeds, image_embeds

A ResNet image tower (OpenAI's ModifiedResNet) has no token sequence to give as
last_hidden_state: its vision_model.onnx outputs image_embeds alone, which is all serving
reads. The combined graph is built from the two tower modules for every layout (transformers'
CLIPModel holds no ResNet), computing what CLIPModel's forward does.

SigLIP's towers (SiglipVisionModel with its attention-pooling head, SiglipTextModel) export
the same way: `image_embeds`/`text_embeds` are their heads' outputs (get_image_features /
get_text_features). Its text graph is traced on rows padded to the context length with the
pad id, as the family feeds it, and takes no attention mask (SigLIP uses none); its combined
graph takes `input_ids` and `pixel_values` and computes SiglipModel's logits,
logit_scale * cosine + logit_bias.

Batch (and sequence) axes are dynamic. torch is imported inside the functions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXPORTERS = ("auto", "torchscript", "dynamo")


@dataclass
class GraphSpec:
    """One graph to export: the module, example inputs and the names Xenova repos use."""

    module: Any
    inputs: dict[str, Any]  # name -> example tensor
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]]


def _native_resnet(model: Any) -> bool:
    from ..backends.openai_resnet import ModifiedResNet

    return isinstance(model, ModifiedResNet)


def _tower_module(model: Any, tower: str) -> Any:
    import torch

    from ..backends.clip_towers import embeddings_of

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x):
            out = self.model(pixel_values=x) if tower == "image" else self.model(input_ids=x)
            if torch.is_tensor(out):  # the native ResNet returns the embeddings alone
                return (out,)
            return embeddings_of(out, tower), out.last_hidden_state

    return Tower().eval()


def example_tokens(batch: int = 2, length: int = 8, bos: int = 49406, eos: int = 49407) -> Any:
    """Token ids shaped like real ones: BOS ... EOS, the second row shorter (right padding)."""
    import torch

    ids = torch.randint(1000, 40000, (batch, length), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = bos
    ids[:, -1] = eos
    if batch > 1:
        ids[1, length // 2] = eos
        ids[1, length // 2 + 1 :] = 0
    return ids


def tower_spec(model: Any, tower: str, image_hw: tuple[int, int] | None, example_ids: Any = None) -> GraphSpec:
    """`example_ids`: the token rows the text graph is traced and checked on (default:
    CLIP-shaped ones, example_tokens())."""
    import torch

    if tower == "image":
        pixels = torch.randn(2, 3, *image_hw, generator=torch.Generator().manual_seed(0))
        outputs = ["image_embeds"] if _native_resnet(model) else ["image_embeds", "last_hidden_state"]
        return GraphSpec(_tower_module(model, tower), {"pixel_values": pixels}, outputs,
                         {"pixel_values": {0: "batch_size"}, **{name: {0: "batch_size"} for name in outputs}})
    ids = example_tokens() if example_ids is None else example_ids
    return GraphSpec(_tower_module(model, tower), {"input_ids": ids}, ["text_embeds", "last_hidden_state"],
                     {"input_ids": {0: "batch_size", 1: "sequence_length"}, "text_embeds": {0: "batch_size"},
                      "last_hidden_state": {0: "batch_size", 1: "sequence_length"}})


def combined_spec(image_model: Any, text_model: Any, logit_scale: float, image_hw: tuple[int, int],
                  logit_bias: float | None = None, example_ids: Any = None) -> GraphSpec:
    """Both towers in one graph: CLIPModel's forward (normalised embeddings, logits at the
    temperature `logit_scale`), over tower modules of any layout and architecture; with
    `logit_bias` (a sigmoid-scored family), SiglipModel's (logits + logit_bias, no mask)."""
    if logit_bias is not None:
        return _sigmoid_combined_spec(image_model, text_model, logit_scale, logit_bias, image_hw, example_ids)
    import math

    import torch
    import torch.nn.functional as F

    from ..backends.clip_towers import tower_embeddings

    class Combined(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision, self.text = image_model, text_model
            # A parameter, as in CLIPModel: the graph then multiplies by Exp(scale), which
            # is where readers of graphs without our metadata find the temperature.
            self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(logit_scale)))

        def forward(self, input_ids, pixel_values, attention_mask):
            image = F.normalize(tower_embeddings(self.vision, "image", pixel_values), dim=-1)
            text = F.normalize(self.text(input_ids=input_ids, attention_mask=attention_mask).text_embeds, dim=-1)
            logits_per_text = text @ image.t() * self.logit_scale.exp()
            return logits_per_text.t(), logits_per_text, text, image

    ids = example_tokens() if example_ids is None else example_ids
    # A padded example row keeps the attention mask a real input of the traced graph.
    mask = (ids != 0).long()
    pixels = torch.randn(3, 3, *image_hw, generator=torch.Generator().manual_seed(0))
    return GraphSpec(Combined().eval(), {"input_ids": ids, "pixel_values": pixels, "attention_mask": mask},
                     ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"],
                     {"input_ids": {0: "text_batch_size", 1: "sequence_length"},
                      "attention_mask": {0: "text_batch_size", 1: "sequence_length"},
                      "pixel_values": {0: "image_batch_size"},
                      "logits_per_image": {0: "image_batch_size", 1: "text_batch_size"},
                      "logits_per_text": {0: "text_batch_size", 1: "image_batch_size"},
                      "text_embeds": {0: "text_batch_size"}, "image_embeds": {0: "image_batch_size"}})


def _sigmoid_combined_spec(image_model: Any, text_model: Any, logit_scale: float, logit_bias: float,
                           image_hw: tuple[int, int], example_ids: Any) -> GraphSpec:
    import math

    import torch
    import torch.nn.functional as F

    from ..backends.clip_towers import tower_embeddings

    class Combined(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision, self.text = image_model, text_model
            self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(logit_scale)))
            self.logit_bias = torch.nn.Parameter(torch.tensor(float(logit_bias)))

        def forward(self, input_ids, pixel_values):
            image = F.normalize(tower_embeddings(self.vision, "image", pixel_values), dim=-1)
            text = F.normalize(tower_embeddings(self.text, "text", input_ids), dim=-1)
            logits_per_text = text @ image.t() * self.logit_scale.exp() + self.logit_bias
            return logits_per_text.t(), logits_per_text, text, image

    pixels = torch.randn(3, 3, *image_hw, generator=torch.Generator().manual_seed(0))
    return GraphSpec(Combined().eval(), {"input_ids": example_ids, "pixel_values": pixels},
                     ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"],
                     {"input_ids": {0: "text_batch_size", 1: "sequence_length"},
                      "pixel_values": {0: "image_batch_size"},
                      "logits_per_image": {0: "image_batch_size", 1: "text_batch_size"},
                      "logits_per_text": {0: "text_batch_size", 1: "image_batch_size"},
                      "text_embeds": {0: "text_batch_size"}, "image_embeds": {0: "image_batch_size"}})


def export_graph(spec: GraphSpec, path: Path, *, opset: int, exporter: str) -> str:
    """Write `spec` to `path` (weights inline or beside it); returns the exporter used.

    `auto` tries the TorchScript exporter first: for CLIP it is exact and much faster than
    the dynamo exporter, which stays the fallback once torch drops the other."""
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; known: {list(EXPORTERS)}")
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    errors = []
    for name in order:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer and deprecation chatter
                torch.onnx.export(
                    spec.module, tuple(spec.inputs.values()), str(path), input_names=list(spec.inputs),
                    output_names=spec.outputs, dynamic_axes=spec.dynamic_axes, opset_version=opset,
                    dynamo=name == "dynamo", **({"verbose": False} if name == "dynamo" else {}),
                )
            return name
        except Exception as exc:  # the next exporter may cope
            errors.append(f"{name}: {exc}")
    raise RuntimeError("ONNX export failed: " + " | ".join(errors))


def torch_outputs(spec: GraphSpec) -> list[Any]:
    import torch

    with torch.no_grad():
        return [t.float().numpy() for t in spec.module(*spec.inputs.values())]
