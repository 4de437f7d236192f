"""SigLIP's SentencePiece tokenizer (`spiece.model` + tokenizer_config.json, as google/siglip-*
repositories ship it) as a `tokenizers` tokenizer.json, so the router tokenizes with the
Rust runtime alone, as it does for CLIP, and never needs sentencepiece or transformers.

transformers' SiglipTokenizer (the reference; slow, sentencepiece) canonicalises each text
first (lowercase when `do_lower_case`, ASCII punctuation removed, whitespace runs to one
space, stripped: big_vision's prompt canonicalisation), then runs the SentencePiece model
and appends EOS. Here: the same canonicalisation as normalisers, in front of transformers'
own conversion of the SentencePiece model (Unigram pieces and scores, the model's
precompiled normaliser, whitespace rules and dummy prefix), and EOS from a post-processor.
Checked id for id against SiglipTokenizer in tests/unit/test_siglip.py. Known difference:
a text that spells a special token literally (`</s>`, `<unk>`) is split there by the slow
tokenizer; here those characters are ordinary text (punctuation dropped).

Runs where the checkpoint is read (the text encoder); needs protobuf, not sentencepiece.
"""

from __future__ import annotations

import re
import string
from pathlib import Path


def siglip_tokenizer_json(spiece: Path, eos_token: str = "</s>", do_lower_case: bool = True) -> str:
    from tokenizers import Regex, normalizers, processors
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    model_pb2 = import_protobuf()
    proto = model_pb2.ModelProto()
    proto.ParseFromString(spiece.read_bytes())
    vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=True)
    if tok is None:
        raise ValueError(f"{spiece.name}: not a SentencePiece Unigram model")
    canonical = [normalizers.Lowercase()] if do_lower_case else []
    canonical += [normalizers.Replace(Regex("[" + re.escape(string.punctuation) + "]"), ""),
                  normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    tok.normalizer = normalizers.Sequence([*canonical, tok.normalizer])
    eos_id = tok.token_to_id(eos_token)
    if eos_id is None:
        raise ValueError(f"{spiece.name} has no EOS piece {eos_token!r}")
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos_token}", special_tokens=[(eos_token, eos_id)])
    return tok.to_str()
