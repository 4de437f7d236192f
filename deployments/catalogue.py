"""Known CLIP variants: what each checkpoint is and how to serve it.

A variant config whose `id` names an entry gets the entry's backend, aliases and other
defaults; fields the config sets itself win. The architecture fields describe the hub
checkpoint (tests build shrunk fixtures with the same fields); image size and
normalisation are still read from the checkpoint itself when it loads.
Pure data: no torch, no ray.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Architecture:
    embed_dim: int
    image_size: int
    patch_size: int
    context_length: int
    vision: tuple[int, int, int]  # width, layers, heads
    text: tuple[int, int, int]
    hidden_act: str  # as the hub config.json states: quick_gelu (OpenAI layout) or gelu
    # 2 in the original hub configs: transformers then pools the text tower at
    # argmax(input_ids) (the EOS id is the largest) instead of at the first EOS.
    eos_token_id: int = 2

    @property
    def params_millions(self) -> int:
        def tower(width: int, layers: int) -> int:
            return 12 * width * width * layers

        (vw, vl, _), (tw, tl, _) = self.vision, self.text
        patches = (self.image_size // self.patch_size) ** 2 + 1
        total = tower(vw, vl) + tower(tw, tl) + 3 * self.patch_size**2 * vw + patches * vw
        total += 49408 * tw + self.context_length * tw + (vw + tw) * self.embed_dim
        return round(total / 1e6)


@dataclass(frozen=True)
class Resources:
    """Per replica, for CPU serving; a GPU replica needs 1-2 CPUs and a share of a GPU."""

    image_cpus: int
    text_cpus: int
    memory_gib: float  # resident memory of one image replica (fp32 weights + activations)
    gpu: str  # "optional" or "recommended"


    def cpus(self, tower: str) -> int:
        return self.image_cpus if tower == "image" else self.text_cpus


# For checkpoints outside the catalogue, by the vision tower's size (millions of weights,
# 12 x width^2 x layers): the catalogue's CPU counts for towers of that size.
SIZE_CLASSES: tuple[tuple[str, float, Resources], ...] = (
    ("tiny", 30, Resources(1, 1, 0.5, "optional")),
    ("base", 150, Resources(2, 1, 1.0, "optional")),
    ("large", float("inf"), Resources(8, 2, 3.0, "recommended")),
)


def size_class(vision_width: int, vision_layers: int) -> tuple[str, Resources]:
    millions = 12 * vision_width * vision_width * vision_layers / 1e6
    return next((name, res) for name, limit, res in SIZE_CLASSES if millions < limit)


@dataclass(frozen=True)
class CatalogueEntry:
    id: str
    description: str
    arch: Architecture
    resources: Resources
    backend: str = "torch"
    aliases: tuple[str, ...] = ()
    onnx_dtype: str | None = None
    logit_scale: float | None = None  # only where the served files lack it
    source: str | None = None  # hub repository, when it differs from the id

    def variant_defaults(self, data: dict[str, Any]) -> dict[str, Any]:
        """Defaults for a variant config (a dict as written) naming this entry."""
        out: dict[str, Any] = {"backend": self.backend, "aliases": list(self.aliases)}
        if self.source:
            out["source"] = self.source
        if self.logit_scale is not None:
            out["logit_scale"] = self.logit_scale
        out = {k: v for k, v in out.items() if k not in data}
        if self.onnx_dtype and data.get("backend", self.backend) == "onnx" and "onnx_dtype" not in data:
            given = data.get("options")
            if given is None or (isinstance(given, dict) and "onnx_dtype" not in given):
                out["options"] = {**(given or {}), "onnx_dtype": self.onnx_dtype}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "params_millions": self.arch.params_millions}


B32 = Architecture(512, 224, 32, 77, (768, 12, 12), (512, 12, 8), "quick_gelu")
B16 = Architecture(512, 224, 16, 77, (768, 12, 12), (512, 12, 8), "quick_gelu")
L14 = Architecture(768, 224, 14, 77, (1024, 24, 16), (768, 12, 12), "quick_gelu")
L14_336 = Architecture(768, 336, 14, 77, (1024, 24, 16), (768, 12, 12), "quick_gelu")
B32_GELU = Architecture(512, 224, 32, 77, (768, 12, 12), (512, 12, 8), "gelu")

_ENTRIES = [
    CatalogueEntry(
        "openai/clip-vit-base-patch32", "OpenAI CLIP ViT-B/32: the fast, general-purpose default.",
        B32, Resources(2, 1, 1.0, "optional"), aliases=("clip-vit-base-patch32", "ViT-B-32")),
    CatalogueEntry(
        "openai/clip-vit-base-patch16", "OpenAI CLIP ViT-B/16: 4x the image compute of B/32, finer detail.",
        B16, Resources(4, 1, 1.5, "optional"), aliases=("clip-vit-base-patch16", "ViT-B-16")),
    CatalogueEntry(
        "openai/clip-vit-large-patch14", "OpenAI CLIP ViT-L/14: the most accurate OpenAI CLIP at 224 px.",
        L14, Resources(8, 2, 3.0, "recommended"), aliases=("clip-vit-large-patch14", "ViT-L-14")),
    CatalogueEntry(
        "openai/clip-vit-large-patch14-336", "OpenAI CLIP ViT-L/14 at 336 px: 2.3x the image compute of L/14.",
        L14_336, Resources(8, 2, 4.0, "recommended"), aliases=("clip-vit-large-patch14-336", "ViT-L-14-336")),
    CatalogueEntry(
        "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K",
        "OpenCLIP ViT-B/32 trained on DataComp-1B: B/32 cost, markedly better zero-shot accuracy.",
        B32_GELU, Resources(2, 1, 1.0, "optional"), aliases=("datacomp-vit-b-32",)),
    CatalogueEntry(
        "patrickjohncyh/fashion-clip",
        "FashionCLIP 2.0: LAION's ViT-B/32 (laion2B) fine-tuned on 800K fashion products and captions.",
        B32, Resources(2, 1, 1.0, "optional"), aliases=("fashion-clip",)),
    CatalogueEntry(
        "Xenova/clip-vit-base-patch32",
        "OpenAI ViT-B/32 exported to ONNX (Transformers.js layout); served by ONNX Runtime, no torch needed.",
        B32, Resources(2, 1, 1.0, "optional"), backend="onnx", aliases=("xenova-clip-vit-base-patch32",),
        # The split tower graphs lack the learned temperature; OpenAI's B/32 weights hold
        # logit_scale = ln(100), the clamp it was trained against.
        onnx_dtype="fp32", logit_scale=100.0),
]
CATALOGUE: dict[str, CatalogueEntry] = {e.id: e for e in _ENTRIES}


def apply_catalogue(data: Any) -> Any:
    """Fill a variant config dict from the catalogue entry its `id` names, if any."""
    if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"] in CATALOGUE:
        return {**data, **CATALOGUE[data["id"]].variant_defaults(data)}
    return data


def markdown_table() -> str:
    """The catalogue as docs/models.md shows it (a test keeps the two identical)."""
    rows = ["| id | backend | embedding dim | image size | patch | context | params (M) | "
            "CPUs image/text | memory (GiB) | GPU | aliases | what |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in _ENTRIES:
        a, r = e.arch, e.resources
        rows.append(f"| `{e.id}` | {e.backend} | {a.embed_dim} | {a.image_size} | {a.patch_size} | "
                    f"{a.context_length} | {a.params_millions} | {r.image_cpus}/{r.text_cpus} | {r.memory_gib:g} | "
                    f"{r.gpu} | {', '.join(f'`{x}`' for x in e.aliases)} | {e.description} |")
    return "\n".join(rows)

