"""Tiny random SigLIP 2 (fixed-resolution) checkpoints built offline, in the files
google/siglip2-*-patch*-<size> repositories ship: config.json (`model_type: siglip`, a
SiglipModel), model.safetensors, preprocessor_config.json (SiglipImageProcessor: square
resize, mean = std = 0.5), and Gemma's tokenizer as transformers saved it for SigLIP 2
(GemmaTokenizerFast with add_bos_token false, add_eos_token true): tokenizer.model (a
SentencePiece BPE model with byte fallback, trained here on generated sentences, ids laid out
as Gemma's: <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4), tokenizer.json in Gemma's layout
(space -> "▁", BPE with byte fallback, EOS appended, fixed padding to the context length),
tokenizer_config.json (`tokenizer_class: GemmaTokenizer`) and special_tokens_map.json."""

from __future__ import annotations

import json
from pathlib import Path

from support.siglip_fixtures import save_siglip_model, sentences

GEMMA_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def train_gemma_tokenizer(out_dir: Path, context_length: int, vocab_size: int = 400, seed: int = 0) -> None:
    """tokenizer.model and tokenizer.json: a Gemma-style SentencePiece BPE and its conversion."""
    import sentencepiece as spm
    from tokenizers import AddedToken, normalizers, processors
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "corpus.txt"
    corpus.write_text("\n".join(sentences(seed=seed)) + "\n", encoding="utf-8")
    # Gemma's trainer settings: no dummy prefix, no normalisation, digits split, bytes for the rest.
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out_dir / "tokenizer"), vocab_size=vocab_size, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", control_symbols=["<mask>"], byte_fallback=True, add_dummy_prefix=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
        allow_whitespace_only_pieces=True, character_coverage=1.0, minloglevel=2, num_threads=1)
    corpus.unlink()
    (out_dir / "tokenizer.vocab").unlink()
    proto = import_protobuf().ModelProto()
    proto.ParseFromString((out_dir / "tokenizer.model").read_bytes())
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, {p.piece: i for i, p in enumerate(proto.pieces)})
    tok.normalizer = normalizers.Replace(" ", "▁")  # Gemma's tokenizer.json spells it alone
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in GEMMA_SPECIAL])
    eos = GEMMA_SPECIAL[1]
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                       special_tokens=[(eos, 1)])
    tok.enable_padding(length=context_length, pad_id=0, pad_token="<pad>")
    tok.enable_truncation(max_length=context_length)
    tok.save(str(out_dir / "tokenizer.json"))


def write_tokenizer_files(out_dir: Path) -> None:
    """tokenizer_config.json and special_tokens_map.json as transformers 4.49 saved SigLIP 2's
    GemmaTokenizerFast (transformers 5 would write them differently)."""
    special = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "add_eos_token": True,
        "added_tokens_decoder": {str(i): {"content": t, **special, "special": True}
                                 for i, t in enumerate(GEMMA_SPECIAL)},
        "additional_special_tokens": [], "bos_token": "<bos>", "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>", "model_input_names": ["input_ids"], "model_max_length": 1000000000000000019884624838656,
        "pad_token": "<pad>", "padding_side": "right", "processor_class": "SiglipProcessor", "sp_model_kwargs": {},
        "spaces_between_special_tokens": False, "tokenizer_class": "GemmaTokenizer", "unk_token": "<unk>",
        "use_default_system_prompt": False}, indent=2))
    token = lambda content: {"content": content, **special}  # noqa: E731
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": token("<bos>"), "eos_token": token("<eos>"), "pad_token": token("<pad>"),
         "unk_token": token("<unk>")}, indent=2))


def build_siglip2_checkpoint(out_dir: Path, *, seed: int = 0, image_size: int = 32, patch_size: int = 8,
                             hidden_size: int = 32, layers: int = 2, heads: int = 2, context_length: int = 16,
                             resample: int = 2) -> Path:
    """A tiny random fixed-resolution SigLIP 2 (a SiglipModel) saved as the hub repositories ship it."""
    from tokenizers import Tokenizer

    out_dir = Path(out_dir)
    train_gemma_tokenizer(out_dir, context_length, seed=seed)
    write_tokenizer_files(out_dir)
    vocab_size = Tokenizer.from_file(str(out_dir / "tokenizer.json")).get_vocab_size()
    # Gemma's special ids, so the config's defaults (CLIP's 49406/49407) stay in the tiny vocabulary.
    return save_siglip_model(out_dir, {"vocab_size": vocab_size, "pad_token_id": 0, "eos_token_id": 1,
                                       "bos_token_id": 2},
                             seed=seed, image_size=image_size, patch_size=patch_size, hidden_size=hidden_size,
                             layers=layers, heads=heads, context_length=context_length, resample=resample,
                             logit_scale=2.3 + 0.1 * seed, logit_bias=-4.0 - 0.1 * seed)
