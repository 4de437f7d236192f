"""Known CLIP variants: what each checkpoint is and how to serve it.

A variant config whose `id` names an entry gets the entry's backend, aliases and other
defaults; fields the config sets itself win. The architecture fields describe the hub
checkpoint (tests build shrunk fixtures of the CLIP ViTs with the same fields, and check each
entry's parameter count against OpenAI's model code, and those of the other model families
against transformers' model built from the repository's published config.json); image size
and normalisation are still read from the checkpoint itself when it loads.
Pure data: no torch, no ray.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


def _block_params(width: int, mlp: int | None = None) -> int:
    """One pre-LayerNorm transformer block: attention (q, k, v and out projections with
    biases), two LayerNorms and an MLP of `mlp` (default 4x the width) with biases."""
    mlp = 4 * width if mlp is None else mlp
    return 4 * width * width + 2 * width * mlp + 9 * width + mlp


def _bottleneck_params(inplanes: int, planes: int) -> int:
    """One block of OpenAI's modified ResNet: 1x1, 3x3 and 1x1 (4x wider) convolutions
    without biases, each followed by a BatchNorm (weight and bias); the first block of a
    stage also has a 1x1 projection of its input and its BatchNorm."""
    out = 4 * planes
    total = inplanes * planes + 9 * planes * planes + planes * out + 2 * (planes + planes + out)
    return total + (inplanes * out + 2 * out if inplanes != out else 0)


@dataclass(frozen=True)
class Architecture:
    """A checkpoint's shape, in the terms of OpenAI's `clip/model.py`.

    `architecture` "vit": `vision` is (width, layers, heads) and `patch_size` is set.
    "resnet" (OpenAI's modified ResNet with attention pooling): `vision` is (stem width,
    the four stages' block counts, attention-pool heads) and there is no patch size.
    `family` (preprocess/model_family.py): `clip` and `metaclip_2` have CLIP's modules;
    `siglip` and `siglip2` have SigLIP's (no class token, biased patch embedding, an
    attention-pooling image head, a linear text head on the last position, a logit bias),
    with MLPs of `mlp` = (vision, text) widths.
    """

    architecture: str
    embed_dim: int
    image_size: int
    patch_size: int | None
    context_length: int
    vision: tuple[int, int | tuple[int, int, int, int], int]
    text: tuple[int, int, int]  # width, layers, heads
    hidden_act: str  # the towers' activation: quick_gelu (OpenAI's) or gelu
    # 2 in the original hub configs: transformers then pools the text tower at
    # argmax(input_ids) (the EOS id is the largest) instead of at the first EOS;
    # OpenAI's and open_clip's own code always pool there.
    eos_token_id: int = 2
    vocab_size: int = 49408
    family: str = "clip"
    mlp: tuple[int, int] | None = None  # (vision, text) MLP widths where not 4x the width

    @property
    def siglip_layout(self) -> bool:
        return self.family in ("siglip", "siglip2")

    def __post_init__(self) -> None:
        width, layers, heads = self.vision
        if self.siglip_layout:
            # SigLIP's image head keeps the width and its text head projects to it.
            ok = (self.architecture == "vit" and isinstance(self.patch_size, int) and isinstance(layers, int)
                  and self.embed_dim == width and self.mlp is not None)
        elif self.architecture == "vit":
            ok = isinstance(self.patch_size, int) and isinstance(layers, int)
        elif self.architecture == "resnet":
            # OpenAI's ModifiedResNet: 64-wide attention heads over the 32x-wide last stage.
            ok = self.patch_size is None and isinstance(layers, tuple) and len(layers) == 4 and heads == width * 32 // 64
        else:
            ok = False
        if not ok:
            raise ValueError(f"inconsistent {self.architecture!r} architecture: {self}")

    def _mlp(self, tower: int) -> int | None:
        return self.mlp[tower] if self.mlp else None

    @property
    def vision_params(self) -> int:
        """The image tower's parameters, projection to the embedding (or SigLIP's head) included."""
        width, layers, _ = self.vision
        if self.siglip_layout:
            mlp = self._mlp(0)
            embed = 3 * self.patch_size**2 * width + width + (self.image_size // self.patch_size) ** 2 * width
            # Attention-pooling head: probe, q/k/v in one projection and out, with biases, LayerNorm, MLP.
            head = width + 4 * width * width + 4 * width + 2 * width + 2 * width * mlp + mlp + width
            return embed + layers * _block_params(width, mlp) + 2 * width + head
        if self.architecture == "vit":
            tokens = (self.image_size // self.patch_size) ** 2 + 1
            embed = 3 * self.patch_size**2 * width + width + tokens * width  # patch conv, class token, positions
            return embed + 2 * width + layers * _block_params(width) + 2 * width + width * self.embed_dim
        half = width // 2  # three 3x3 stem convolutions (3 -> w/2 -> w/2 -> w), each with a BatchNorm
        total = 27 * half + 9 * half * half + 9 * half * width + 2 * (half + half + width)
        inplanes = width
        for stage, blocks in enumerate(layers):
            planes = width * 2**stage
            total += _bottleneck_params(inplanes, planes) + (blocks - 1) * _bottleneck_params(4 * planes, planes)
            inplanes = 4 * planes
        # Attention pooling over the last stage's grid plus its mean: positions, q/k/v and
        # the output projection to the embedding, all with biases.
        pooled = 32 * width
        positions = ((self.image_size // 32) ** 2 + 1) * pooled
        return total + positions + 3 * (pooled * pooled + pooled) + pooled * self.embed_dim + self.embed_dim

    @property
    def text_params(self) -> int:
        """The text tower's parameters, projection to the embedding (SigLIP: its biased head) included."""
        width, layers, _ = self.text
        embed = self.vocab_size * width + self.context_length * width
        head = width * self.embed_dim + (self.embed_dim if self.siglip_layout else 0)
        return embed + layers * _block_params(width, self._mlp(1)) + 2 * width + head

    @property
    def params(self) -> int:
        """Exactly the parameters of the model of this shape: logit_scale included, and
        SigLIP's logit_bias."""
        return self.vision_params + self.text_params + (2 if self.siglip_layout else 1)

    @property
    def params_millions(self) -> int:
        return round(self.params / 1e6)


def vit(embed_dim: int, image_size: int, patch_size: int, vision: tuple[int, int, int], text: tuple[int, int, int],
        hidden_act: str = "quick_gelu", *, context_length: int = 77, vocab_size: int = 49408,
        family: str = "clip") -> Architecture:
    return Architecture("vit", embed_dim, image_size, patch_size, context_length, vision, text, hidden_act,
                        vocab_size=vocab_size, family=family)


def siglip(image_size: int, patch_size: int, vision: tuple[int, int, int], text: tuple[int, int, int],
           mlp: tuple[int, int], *, vocab_size: int = 32000, context_length: int = 64,
           family: str = "siglip") -> Architecture:
    """A SigLIP-family shape; the embedding is the image tower's width (transformers' default
    `projection_size` of the text head)."""
    return Architecture("vit", vision[0], image_size, patch_size, context_length, vision, text, "gelu_pytorch_tanh",
                        eos_token_id=1, vocab_size=vocab_size, family=family, mlp=mlp)


def resnet(embed_dim: int, image_size: int, stem_width: int, layers: tuple[int, int, int, int],
           text: tuple[int, int, int], hidden_act: str = "quick_gelu", *, context_length: int = 77,
           vocab_size: int = 49408) -> Architecture:
    return Architecture("resnet", embed_dim, image_size, None, context_length,
                        (stem_width, layers, stem_width * 32 // 64), text, hidden_act, vocab_size=vocab_size)


@dataclass(frozen=True)
class Resources:
    """Per replica, for CPU serving; a GPU replica needs 1-2 CPUs and a share of a GPU."""

    image_cpus: int
    text_cpus: int
    memory_gib: float  # resident memory of one image replica (fp32 weights + activations)
    gpu: str  # "optional" or "recommended"


    def cpus(self, tower: str) -> int:
        return self.image_cpus if tower == "image" else self.text_cpus


# For checkpoints outside the catalogue, by the vision tower's parameters (millions, exact
# for the shapes Architecture describes): the catalogue's CPU counts for towers of that size.
SIZE_CLASSES: tuple[tuple[str, float, Resources], ...] = (
    ("tiny", 30, Resources(1, 1, 0.5, "optional")),
    ("base", 150, Resources(2, 1, 1.0, "optional")),
    ("large", float("inf"), Resources(8, 2, 3.0, "recommended")),
)


def size_class(vision_params: int) -> tuple[str, Resources]:
    return next((name, res) for name, limit, res in SIZE_CLASSES if vision_params / 1e6 < limit)


def _siglip_from_config(config: dict[str, Any]) -> Architecture:
    """A SigLIP config.json's shape; absent fields default as in transformers' SiglipConfig
    (the hub configs of the base models state almost nothing)."""
    v, t = config.get("vision_config") or {}, config.get("text_config") or {}
    width = lambda c: c.get("hidden_size", 768)  # noqa: E731
    return siglip(v.get("image_size", 224), v.get("patch_size", 16),
                  (width(v), v.get("num_hidden_layers", 12), v.get("num_attention_heads", 12)),
                  (width(t), t.get("num_hidden_layers", 12), t.get("num_attention_heads", 12)),
                  (v.get("intermediate_size", 3072), t.get("intermediate_size", 3072)),
                  vocab_size=t.get("vocab_size", 32000), context_length=t.get("max_position_embeddings", 64))


def architecture_from_config(config: dict[str, Any]) -> Architecture | None:
    """The shape a transformers config.json states (`vision_config` with at least its width
    and depth; other fields default as in transformers' CLIPConfig; SigLIP's as in its
    SiglipConfig); None for anything else. The family is `siglip` for every `model_type:
    siglip` (SigLIP 2's fixed-resolution shapes are the same; its tokenizer tells it apart).
    open_clip_config.json is read by backends.clip_layouts (ClipArch.catalogue_arch)."""
    try:
        if config.get("model_type") == "siglip":
            arch = _siglip_from_config(config)
            return arch if arch.params > 0 else None
        v, t = config["vision_config"], config.get("text_config") or {}
        family = "metaclip_2" if config.get("model_type") == "metaclip_2" else "clip"
        arch = vit(config.get("projection_dim", 512), v.get("image_size", 224), v.get("patch_size", 32),
                   (v["hidden_size"], v["num_hidden_layers"], v.get("num_attention_heads", 12)),
                   (t.get("hidden_size", 512), t.get("num_hidden_layers", 12), t.get("num_attention_heads", 8)),
                   v.get("hidden_act", "quick_gelu"), context_length=t.get("max_position_embeddings", 77),
                   vocab_size=t.get("vocab_size", 49408), family=family)
        return arch if arch.params > 0 else None  # computing it checks every field is a number
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError):
        return None


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
        return {**asdict(self), "params": self.arch.params, "params_millions": self.arch.params_millions}


B32 = vit(512, 224, 32, (768, 12, 12), (512, 12, 8))
B16 = vit(512, 224, 16, (768, 12, 12), (512, 12, 8))
L14 = vit(768, 224, 14, (1024, 24, 16), (768, 12, 12))
L14_336 = vit(768, 336, 14, (1024, 24, 16), (768, 12, 12))
B32_GELU = vit(512, 224, 32, (768, 12, 12), (512, 12, 8), "gelu")
# OpenAI's ResNets, as their open_clip_config.json files (timm/resnet*_clip.openai) state them.
RN50 = resnet(1024, 224, 64, (3, 4, 6, 3), (512, 12, 8))
RN101 = resnet(512, 224, 64, (3, 4, 23, 3), (512, 12, 8))
RN50X4 = resnet(640, 288, 80, (4, 6, 10, 6), (640, 12, 10))
RN50X16 = resnet(768, 384, 96, (6, 8, 18, 8), (768, 12, 12))
RN50X64 = resnet(1024, 448, 128, (3, 15, 36, 10), (1024, 12, 16))
# The other families, as their repositories' config.json state them (with transformers' defaults).
SIGLIP_B16 = siglip(224, 16, (768, 12, 12), (768, 12, 12), (3072, 3072))
SIGLIP_SO400M_384 = siglip(384, 14, (1152, 27, 16), (1152, 27, 16), (4304, 4304))
SIGLIP2_B16 = siglip(224, 16, (768, 12, 12), (768, 12, 12), (3072, 3072), vocab_size=256000, family="siglip2")
METACLIP2_H14 = vit(1024, 224, 14, (1280, 32, 16), (1024, 24, 16), vocab_size=901629, family="metaclip_2")

_ENTRIES = [
    CatalogueEntry(
        "openai/clip-vit-base-patch32", "OpenAI CLIP ViT-B/32: the fast, general-purpose default.",
        B32, Resources(2, 1, 1.0, "optional"), aliases=("clip-vit-base-patch32", "ViT-B/32", "ViT-B-32")),
    CatalogueEntry(
        "openai/clip-vit-base-patch16", "OpenAI CLIP ViT-B/16: 4x the image compute of B/32, finer detail.",
        B16, Resources(4, 1, 1.5, "optional"), aliases=("clip-vit-base-patch16", "ViT-B/16", "ViT-B-16")),
    CatalogueEntry(
        "openai/clip-vit-large-patch14", "OpenAI CLIP ViT-L/14: the most accurate OpenAI CLIP at 224 px.",
        L14, Resources(8, 2, 3.0, "recommended"), aliases=("clip-vit-large-patch14", "ViT-L/14", "ViT-L-14")),
    CatalogueEntry(
        "openai/clip-vit-large-patch14-336", "OpenAI CLIP ViT-L/14 at 336 px: 2.3x the image compute of L/14.",
        L14_336, Resources(8, 2, 4.0, "recommended"),
        aliases=("clip-vit-large-patch14-336", "ViT-L/14@336px", "ViT-L-14-336", "ViT-L-14-336px")),
    # OpenAI's modified ResNets (three-convolution stem, anti-aliased strides, attention
    # pooling) in open_clip's layout; their CPUs follow image compute as the ViTs' do.
    CatalogueEntry(
        "timm/resnet50_clip.openai",
        "OpenAI CLIP RN50: modified ResNet-50 with attention pooling; about B/32's image compute.",
        RN50, Resources(2, 1, 1.0, "optional"), aliases=("RN50", "resnet50-clip")),
    CatalogueEntry(
        "timm/resnet101_clip.openai",
        "OpenAI CLIP RN101: modified ResNet-101 with attention pooling; about 2x RN50's image compute.",
        RN101, Resources(3, 1, 1.0, "optional"), aliases=("RN101", "resnet101-clip")),
    CatalogueEntry(
        "timm/resnet50x4_clip.openai",
        "OpenAI CLIP RN50x4: ResNet-50 scaled EfficientNet-style to ~4x its compute, at 288 px.",
        RN50X4, Resources(4, 1, 1.5, "optional"), aliases=("RN50x4", "resnet50x4-clip")),
    CatalogueEntry(
        "timm/resnet50x16_clip.openai",
        "OpenAI CLIP RN50x16: ResNet-50 scaled EfficientNet-style to ~16x its compute, at 384 px.",
        RN50X16, Resources(8, 2, 3.0, "recommended"), aliases=("RN50x16", "resnet50x16-clip")),
    CatalogueEntry(
        "timm/resnet50x64_clip.openai",
        "OpenAI CLIP RN50x64: ResNet-50 scaled EfficientNet-style to ~64x its compute, at 448 px; the largest.",
        RN50X64, Resources(8, 2, 6.0, "recommended"), aliases=("RN50x64", "resnet50x64-clip")),
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
    # Other model families (docs/models.md#model-families): served by the torch backend.
    CatalogueEntry(
        "google/siglip-base-patch16-224",
        "Google SigLIP B/16 (WebLI, English): sigmoid scores per label with a learned bias, B/16's image compute.",
        SIGLIP_B16, Resources(4, 1, 1.5, "optional"), aliases=("siglip-base-patch16-224",)),
    CatalogueEntry(
        "google/siglip-so400m-patch14-384",
        "Google SigLIP So400m/14 at 384 px: the shape-optimised 400M image tower, ~1.7x L/14@336's image compute.",
        SIGLIP_SO400M_384, Resources(8, 2, 5.0, "recommended"), aliases=("siglip-so400m-patch14-384",)),
    CatalogueEntry(
        "google/siglip2-base-patch16-224",
        "Google SigLIP 2 B/16, fixed resolution: multilingual (Gemma tokenizer), better zero-shot than SigLIP B/16.",
        SIGLIP2_B16, Resources(4, 1, 1.5, "optional"), aliases=("siglip2-base-patch16-224",)),
    CatalogueEntry(
        "facebook/metaclip-2-worldwide-huge-quickgelu",
        "Meta CLIP 2 ViT-H/14 on worldwide data (300+ languages, XLM-V tokenizer): ~2x L/14's image compute; "
        "its text tower holds 1.2B parameters (5 GiB in fp32).",
        METACLIP2_H14, Resources(8, 2, 4.0, "recommended"), aliases=("metaclip-2-worldwide-huge-quickgelu",)),
]
CATALOGUE: dict[str, CatalogueEntry] = {e.id: e for e in _ENTRIES}


def apply_catalogue(data: Any) -> Any:
    """Fill a variant config dict from the catalogue entry its `id` names, if any."""
    if isinstance(data, dict) and isinstance(data.get("id"), str) and data["id"] in CATALOGUE:
        return {**data, **CATALOGUE[data["id"]].variant_defaults(data)}
    return data


def markdown_table() -> str:
    """The catalogue as docs/models.md shows it (a test keeps the two identical)."""
    rows = ["| id | family | architecture | backend | embedding dim | image size | patch | vision layers | context | "
            "params (M) | CPUs image/text | memory (GiB) | GPU | aliases | what |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in _ENTRIES:
        a, r = e.arch, e.resources
        layers = a.vision[1]
        layers = "-".join(map(str, layers)) if isinstance(layers, tuple) else layers  # a ResNet's four stages
        rows.append(f"| `{e.id}` | {a.family} | {a.architecture} | {e.backend} | {a.embed_dim} | {a.image_size} | "
                    f"{a.patch_size or '-'} | {layers} | {a.context_length} | {a.params_millions} | "
                    f"{r.image_cpus}/{r.text_cpus} | {r.memory_gib:g} | {r.gpu} | "
                    f"{', '.join(f'`{x}`' for x in e.aliases)} | {e.description} |")
    return "\n".join(rows)
