"""Tiny random MetaCLIP 2 checkpoints built offline, in the files
facebook/metaclip-2-worldwide-* repositories ship: transformers' convert_metaclip_2_to_hf.py
saves a MetaClip2Model and a CLIPProcessor over facebook/xlm-v-base's fast tokenizer (the
tokenizer MetaCLIP's own code trains and evaluates with, no lowercasing), so: config.json
(`model_type: metaclip_2`, text `eos_token_id` 2), model.safetensors, preprocessor_config.json
(CLIPImageProcessor with `size` and `crop_size` as height/width), and XLM-V's tokenizer:
sentencepiece.bpe.model (a SentencePiece Unigram model trained here on generated sentences,
fairseq ids as XLM-R's: <unk> 0, <s> 1, </s> 2), tokenizer.json (transformers' XLM-R
conversion: <s> 0, <pad> 1, </s> 2, <unk> 3, the pieces, <mask> last; `<s> $A </s>`),
tokenizer_config.json (`tokenizer_class: XLMRobertaTokenizer`) and special_tokens_map.json."""

from __future__ import annotations

import json
from pathlib import Path

from support.siglip_fixtures import sentences

# Beside the English sentences: some of the scripts a worldwide tokenizer has to cover.
WORLDWIDE = ["ein Foto einer Katze", "une photo d'un chat", "una foto de un perro", "猫の写真", "фото кошки",
             "صورة قطة", "बिल्ली की तस्वीर", "고양이 사진"]


class _SlowTokenizerFacts:
    """What transformers' XLMRobertaConverter reads from the slow tokenizer it converts."""

    add_prefix_space = True
    legacy = True

    def __init__(self, vocab_file: Path) -> None:
        self.vocab_file = str(vocab_file)

    def convert_tokens_to_ids(self, token: str) -> int:
        return {"<s>": 0, "</s>": 2}[token]


def train_xlmv_tokenizer(out_dir: Path, vocab_size: int = 170, seed: int = 0) -> int:
    """sentencepiece.bpe.model and tokenizer.json; returns the vocabulary size."""
    import sentencepiece as spm
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import XLMRobertaConverter

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    corpus.write_text("\n".join(sentences(seed=seed) + WORLDWIDE * 3) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out_dir / "sentencepiece.bpe"), vocab_size=vocab_size,
        model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
        minloglevel=2, num_threads=1)
    corpus.unlink()
    (out_dir / "sentencepiece.bpe.vocab").unlink()
    tok = XLMRobertaConverter(_SlowTokenizerFacts(out_dir / "sentencepiece.bpe.model")).converted()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<s>", "<pad>", "</s>", "<unk>")]
                           + [AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    tok.save(str(out_dir / "tokenizer.json"))
    return tok.get_vocab_size()


def write_tokenizer_files(out_dir: Path, mask_id: int) -> None:
    special = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    decoder = {str(i): {"content": t, **special, "special": True}
               for i, t in enumerate(("<s>", "<pad>", "</s>", "<unk>"))}
    decoder[str(mask_id)] = {"content": "<mask>", **special, "lstrip": True, "special": True}
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": decoder, "bos_token": "<s>", "clean_up_tokenization_spaces": False,
        "cls_token": "<s>", "eos_token": "</s>", "extra_special_tokens": {}, "mask_token": "<mask>",
        "model_max_length": 512, "pad_token": "<pad>", "processor_class": "CLIPProcessor", "sep_token": "</s>",
        "sp_model_kwargs": {}, "tokenizer_class": "XLMRobertaTokenizer", "unk_token": "<unk>"}, indent=2))
    token = lambda content, **kw: {"content": content, **special, **kw}  # noqa: E731
    (out_dir / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": token("<s>"), "cls_token": token("<s>"), "eos_token": token("</s>"),
        "mask_token": token("<mask>", lstrip=True), "pad_token": token("<pad>"), "sep_token": token("</s>"),
        "unk_token": token("<unk>")}, indent=2))


def build_metaclip2_checkpoint(out_dir: Path, *, seed: int = 0, image_size: int = 32, patch_size: int = 8,
                               hidden_size: int = 32, layers: int = 2, heads: int = 2, context_length: int = 16,
                               projection_dim: int = 24) -> Path:
    """A tiny random MetaClip2Model saved as the hub repositories ship it."""
    import torch
    from transformers import MetaClip2Config, MetaClip2Model

    out_dir = Path(out_dir)
    vocab_size = train_xlmv_tokenizer(out_dir, seed=seed)
    write_tokenizer_files(out_dir, mask_id=vocab_size - 1)
    common = {"hidden_size": hidden_size, "intermediate_size": hidden_size * 4, "num_hidden_layers": layers,
              "num_attention_heads": heads, "hidden_act": "quick_gelu", "projection_dim": projection_dim}
    config = MetaClip2Config(
        text_config={**common, "vocab_size": vocab_size, "max_position_embeddings": context_length,
                     "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2},
        vision_config={**common, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = MetaClip2Model(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.0 + 0.1 * seed)
    model.save_pretrained(out_dir, safe_serialization=True)
    size = {"height": image_size, "width": image_size}
    (out_dir / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": size, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
        "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "CLIPProcessor", "resample": 3, "rescale_factor": 1 / 255, "size": size,
    }, indent=2))
    return out_dir
