"""SigLIP 2's text rules on the Gemma tokenizer.json its fixed-resolution repositories ship
(google/siglip2-*-patch*-<size>), so the router tokenizes as the model was trained.

SigLIP 2 was trained (big_vision) on lowercased texts, without BOS, with EOS appended and
the sequence padded to 64 with `<pad>` (transformers' SigLIP 2 docs: "Model was trained
with lowercased text", `padding="max_length", max_length=64`). The repositories' tokenizer
is Gemma's BPE saved with `add_bos_token: false, add_eos_token: true`; it does not
lowercase, which transformers leaves to the caller for these checkpoints and builds into
its `Siglip2Tokenizer` (a Lowercase normaliser in front of Gemma's) for the NaFlex ones.
Here: the same Lowercase in front of the file's own normaliser, an EOS post-processor, and
no padding or truncation of the file's own (engine/payloads.py `fit_padding` pads, the
tokenizer truncates keeping EOS last). Checked id for id against transformers in
tests/unit/test_siglip2.py.
"""

from __future__ import annotations


def siglip2_tokenizer_json(tokenizer_json: str, eos_token: str = "<eos>", lowercase: bool = True) -> str:
    """`lowercase`: the model family's rule (ModelFamily.lowercase), a Lowercase normaliser in front."""
    from tokenizers import Tokenizer, normalizers, processors

    tok = Tokenizer.from_str(tokenizer_json)
    eos_id = tok.token_to_id(eos_token)
    if eos_id is None:
        raise ValueError(f"no EOS token {eos_token!r} in the vocabulary")
    own = tok.normalizer
    if lowercase:
        tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), *([own] if own is not None else [])])
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos_token}", special_tokens=[(eos_token, eos_id)])
    tok.no_padding()
    tok.no_truncation()
    return tok.to_str()
