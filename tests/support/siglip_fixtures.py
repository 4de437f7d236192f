"""Tiny random SigLIP checkpoints built offline, in the files google/siglip-* repositories
ship: config.json (model_type siglip), model.safetensors, preprocessor_config.json
(squash resize, mean = std = 0.5), and the tokenizer as SentencePiece's own `spiece.model`
(a Unigram model trained here on generated sentences, ids laid out as the real one: pad 0,
</s> 1, <unk> 2) with tokenizer_config.json and special_tokens_map.json as SiglipTokenizer
saves them."""

from __future__ import annotations

import json
import random
from pathlib import Path

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "brown"]
THINGS = ["cat", "dog", "car", "circle", "square", "triangle", "house", "tree", "bird", "boat", "photo",
          "diagram", "painting", "flower", "mountain", "river", "kitten", "sofa", "café", "street"]
WORDS = ["a", "an", "the", "of", "on", "in", "with", "and", "small", "large", "old", "new", "bright",
         "dark", "sleeping", "running", "this", "is", "photo", "picture", "drawing", "near", "under"]


def sentences(n: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        words += [rng.choice(COLOURS), rng.choice(THINGS)]
        rng.shuffle(words)
        text = " ".join(words)
        if rng.random() < 0.3:
            text = text.capitalize() + rng.choice([".", "!", "?", ","])
        out.append(text)
    return out


def train_spiece(out_dir: Path, vocab_size: int = 128, seed: int = 0) -> Path:
    """spiece.model: a SentencePiece Unigram model with SigLIP's special ids and normaliser."""
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    text_file = out_dir / "corpus.txt"
    text_file.write_text("\n".join(sentences(seed=seed)) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text_file), model_prefix=str(out_dir / "spiece"), vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        normalization_rule_name="nmt_nfkc", character_coverage=1.0, minloglevel=2, num_threads=1)
    text_file.unlink()
    (out_dir / "spiece.vocab").unlink()
    return out_dir / "spiece.model"


def write_tokenizer_files(out_dir: Path, context_length: int) -> None:
    """tokenizer_config.json and special_tokens_map.json as google/siglip-base-patch16-224 has them
    (transformers 5 would save a different tokenizer_config.json and no special_tokens_map.json)."""
    special = {"lstrip": True, "normalized": False, "rstrip": True, "single_word": False}
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": {"1": {"content": "</s>", **special, "special": True},
                                 "2": {"content": "<unk>", **special, "special": True}},
        "additional_special_tokens": [], "clean_up_tokenization_spaces": True, "do_lower_case": True,
        "eos_token": "</s>", "model_input_names": ["input_ids"], "model_max_length": context_length,
        "pad_token": "</s>", "processor_class": "SiglipProcessor", "sp_model_kwargs": {},
        "tokenizer_class": "SiglipTokenizer", "unk_token": "<unk>"}, indent=2))
    token = lambda content: {"content": content, **special}  # noqa: E731
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": token("</s>"), "pad_token": token("</s>"), "unk_token": token("<unk>")}, indent=2))


def build_siglip_checkpoint(out_dir: Path, *, seed: int = 0, image_size: int = 32, patch_size: int = 8,
                            hidden_size: int = 32, layers: int = 2, heads: int = 2, context_length: int = 16,
                            resample: int = 3) -> Path:
    """A tiny random SiglipModel saved as the hub repositories ship it."""
    from transformers import SiglipTokenizer

    out_dir = Path(out_dir)
    spiece = train_spiece(out_dir, seed=seed)
    write_tokenizer_files(out_dir, context_length)
    tok = SiglipTokenizer(str(spiece), model_max_length=context_length)
    return save_siglip_model(out_dir, {"vocab_size": tok.vocab_size}, seed=seed, image_size=image_size,
                             patch_size=patch_size, hidden_size=hidden_size, layers=layers, heads=heads,
                             context_length=context_length, resample=resample,
                             # SigLIP's initial values: logit_scale log(10), logit_bias -10; trained ones differ.
                             logit_scale=2.0 + 0.1 * seed, logit_bias=-3.0 - 0.1 * seed)


def save_siglip_model(out_dir: Path, text_config: dict, *, seed: int, image_size: int, patch_size: int,
                      hidden_size: int, layers: int, heads: int, context_length: int, resample: int,
                      logit_scale: float, logit_bias: float) -> Path:
    """A tiny random SiglipModel (`text_config`: the tokenizer's vocabulary and special ids)
    and the square-resize preprocessor_config.json of the hub repositories, into `out_dir`."""
    import torch
    from transformers import SiglipConfig, SiglipModel

    common = {"hidden_size": hidden_size, "intermediate_size": hidden_size * 2, "num_hidden_layers": layers,
              "num_attention_heads": heads}
    config = SiglipConfig(
        text_config={**common, "max_position_embeddings": context_length, **text_config},
        vision_config={**common, "image_size": image_size, "patch_size": patch_size})
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(logit_scale)
        model.logit_bias.fill_(logit_bias)
    model.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "preprocessor_config.json").write_text(json.dumps({
        "do_convert_rgb": None, "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor", "processor_class": "SiglipProcessor",
        "resample": resample, "rescale_factor": 1 / 255, "size": {"height": image_size, "width": image_size},
    }, indent=2))
    return out_dir
