"""What the model-family parity tests share (tests/unit/test_siglip.py, test_siglip2.py,
test_metaclip2.py): sample images in three formats, texts through the served tokenizer and
text tower, and a fixture checkpoint opened by its hub id from the session's offline HF cache."""

from __future__ import annotations

from pathlib import Path

from .helpers import encode, natural_image


def sample_images() -> list[bytes]:
    return [encode(natural_image(97, 61, seed=1), "PNG"), encode(natural_image(50, 80, seed=2), "JPEG"),
            encode(natural_image(64, 64, seed=3), "WEBP")]


def served_texts(towers: dict, texts: list[str]):
    """Texts through the router's tokenizer and the text tower, as served: (embeddings, token batch)."""
    from deployments.engine.payloads import pack_tokens

    info = towers["text"].info().tokenizer
    batch = pack_tokens([e.ids for e in info.tokenizer().encode(texts, truncate=True)])
    return towers["text"].embed_texts(batch.ids, batch.lengths), batch


def load_towers(checkpoint) -> dict:
    from deployments.backends.torch_backend import TorchBackend

    return {t: TorchBackend.load(checkpoint, t, device="cpu", dtype="float32") for t in ("image", "text")}


def open_by_hub_id(folder: Path, hub_id: str):
    """`folder` placed in the HF cache as `hub_id` and opened by that id (offline, through
    the production download path; tests/conftest.py points HF_HOME at the session's cache)."""
    from huggingface_hub import constants

    from deployments.backends.checkpoint import Checkpoint
    from deployments.checkpoint_builder import install_in_hf_cache

    install_in_hf_cache(folder, hub_id, constants.HF_HUB_CACHE)
    return Checkpoint.open(hub_id)


def served_images(towers: dict, datas: list[bytes]):
    """Encoded images through the router's preprocessing (the image tower's spec) and the tower."""
    import numpy as np

    from deployments.preprocess.image_spec import ImageSpec
    from deployments.preprocess.images import ImageLimits, prepare_image

    spec = ImageSpec.from_dict(towers["image"].info().image_spec)
    return towers["image"].embed_images(np.stack([prepare_image(d, spec, ImageLimits()) for d in datas]))


def reference_images(model, processor, datas: list[bytes]):
    """The reference's normalised `get_image_features` on its own processor's pixels."""
    import io

    import torch
    from PIL import Image

    with torch.no_grad():
        values = processor(images=[Image.open(io.BytesIO(d)) for d in datas], return_tensors="pt").pixel_values
        return torch.nn.functional.normalize(model.get_image_features(pixel_values=values).pooler_output, dim=-1).numpy()


def served_scores(towers: dict, datas: list[bytes], prompts: list[str]):
    """Zero-shot scores as the router computes them: the family's Scorer on served embeddings."""
    from deployments.serving import scoring

    info = towers["text"].info()
    texts, _ = served_texts(towers, prompts)
    scorer = scoring.Scorer(info.score_function, info.logit_scale, info.logit_bias)
    return scorer(scoring.cosine_matrix(served_images(towers, datas), texts))
