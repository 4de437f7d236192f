"""Create CLIP checkpoints in the exact layout of the hub repositories.

Used for the embedded demo model and by the tests: a real CLIPModel saved with
`save_pretrained` (safetensors), CLIP's real BPE tokenizer, and a hub-style
preprocessor_config.json; optionally placed into a Hugging Face cache so a hub id
resolves offline through the production loading path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .backends.checkpoint import SERVING_FILES
from .preprocess.image_spec import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .preprocess.vocab import write_vocab_files


def clip_config_dict(
    *,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 2,
    image_size: int = 32,
    patch_size: int = 8,
    projection_dim: int = 16,
    text_hidden_size: int | None = None,
    text_layers: int | None = None,
    text_heads: int | None = None,
    context_length: int = 77,
    hidden_act: str = "quick_gelu",
    eos_token_id: int = 49407,
) -> dict[str, Any]:
    """A CLIPConfig as a dict; both sub-configs carry projection_dim, as hub configs do,
    which is what lets one tower load alone from the full checkpoint.

    `eos_token_id=2` reproduces the hub configs of the original OpenAI/LAION uploads, which
    make transformers pool the text tower at argmax(input_ids) instead of the first EOS."""
    text_hidden = text_hidden_size or hidden_size
    return {
        "projection_dim": projection_dim,
        "text_config": {
            "vocab_size": 49408,
            "hidden_size": text_hidden,
            "intermediate_size": text_hidden * 4,
            "num_hidden_layers": text_layers or layers,
            "num_attention_heads": text_heads or heads,
            "max_position_embeddings": context_length,
            "projection_dim": projection_dim,
            "bos_token_id": 49406 if eos_token_id == 49407 else 0,
            "eos_token_id": eos_token_id,
            "pad_token_id": 1,
            "hidden_act": hidden_act,
        },
        "vision_config": {
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size * 4,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "image_size": image_size,
            "patch_size": patch_size,
            "projection_dim": projection_dim,
            "hidden_act": hidden_act,
        },
    }


def catalogue_fixture_config(entry: Any, *, width: int = 32, layers: int = 1, heads: int = 2) -> dict[str, Any]:
    """clip_config_dict arguments for a catalogue entry's architecture, shrunk: the fields
    that change behaviour (image and patch size, activation, EOS pooling, context length,
    embedding size) are the entry's own; widths and depths are `width`/`layers`/`heads`.
    ViT entries only: this builds transformers' CLIPModel, which has no ResNet tower."""
    arch = entry.arch
    if arch.architecture != "vit":
        raise ValueError(f"{entry.id} is a {arch.architecture}; transformers-layout fixtures exist only for ViTs")
    return {
        "hidden_size": width, "layers": layers, "heads": heads, "text_hidden_size": width, "text_layers": layers,
        "text_heads": heads, "image_size": arch.image_size, "patch_size": arch.patch_size,
        "projection_dim": arch.embed_dim, "context_length": arch.context_length, "hidden_act": arch.hidden_act,
        "eos_token_id": arch.eos_token_id,
    }


def preprocessor_config(image_size: int, crop_size: int | None = None) -> dict[str, Any]:
    crop = crop_size or image_size
    return {
        "crop_size": {"height": crop, "width": crop},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_processor_type": "CLIPImageProcessor",
        "image_std": list(OPENAI_CLIP_STD),
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": image_size},
    }


def write_tokenizer(out_dir: Path, context_length: int = 77, bpe_path: Path | None = None) -> None:
    """vocab.json + merges.txt (slow files) and tokenizer.json (fast), like the hub repos."""
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_vocab_files(out_dir, bpe_path)
    tok = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=context_length)
    tok.save_pretrained(str(out_dir))


# A checkpoint's files besides config and weights: how it tokenizes and preprocesses.
ASSET_FILES = tuple(f for f in SERVING_FILES if f != "config.json" and "safetensors" not in f)


def save_clip_checkpoint(
    model: Any, out_dir: Path, *, bpe_path: Path | None = None, assets_from: Path | None = None
) -> Path:
    """Save a CLIPModel with tokenizer and preprocessor config as a servable folder.

    `assets_from`: a checkpoint folder whose tokenizer and preprocessor files are copied
    as they are (a fine-tuned hub model keeps its own); otherwise CLIP's are written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if assets_from is not None:
        copied = [name for name in ASSET_FILES if (Path(assets_from) / name).is_file()]
        for name in copied:
            shutil.copyfile(Path(assets_from) / name, out_dir / name)
        if copied:
            return out_dir
    vision = model.config.vision_config
    context = model.config.text_config.max_position_embeddings
    write_tokenizer(out_dir, context, bpe_path)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(vision.image_size), indent=2))
    return out_dir


def build_clip_checkpoint(out_dir: Path, *, seed: int = 0, bpe_path: Path | None = None, **config: Any) -> Path:
    """A randomly initialised (seeded) CLIP checkpoint of the given shape."""
    import torch
    import transformers
    from transformers import CLIPConfig, CLIPModel

    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(**clip_config_dict(**config))).eval()
    return save_clip_checkpoint(model, out_dir, bpe_path=bpe_path)


def install_in_hf_cache(folder: Path, repo_id: str, hub_cache: Path, revision: str = "main") -> Path:
    """Copy a checkpoint folder into a Hugging Face hub cache as `repo_id`, so that
    `snapshot_download(repo_id)` resolves it with HF_HUB_OFFLINE=1."""
    commit = hashlib.sha1(f"{repo_id}:{folder}".encode()).hexdigest()
    repo_dir = Path(hub_cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(folder, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return snapshot


def build_open_clip_checkpoint(out_dir: Path, arch: Any, *, seed: int = 0) -> Path:
    """A randomly initialised (seeded) CLIP of `arch` (a clip_layouts.ClipArch, ResNet or ViT)
    in open_clip's hub layout. BatchNorm statistics and affine parameters are randomised too,
    so eval-mode BatchNorm is not the identity."""
    import math

    import torch

    from .backends.clip_layouts import ClipArch
    from .backends.clip_towers import new_tower, save_open_clip

    assert isinstance(arch, ClipArch)
    torch.manual_seed(seed)
    towers = {tower: new_tower(arch, tower) for tower in ("image", "text")}
    with torch.no_grad():
        for module in towers["image"].modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
            if hasattr(module, "positional_embedding") and isinstance(module.positional_embedding, torch.nn.Parameter):
                module.positional_embedding.normal_(0, module.positional_embedding.shape[-1] ** -0.5)
    return save_open_clip(towers, arch, out_dir, logit_scale=math.exp(math.log(1 / 0.07)))
