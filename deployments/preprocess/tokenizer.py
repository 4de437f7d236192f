"""CLIP tokenization on the `tokenizers` runtime (Rust; no transformers import).

Built from the checkpoint's serialized tokenizer.json, which the text encoder ships to
the router, so the router tokenizes exactly as the checkpoint does. Sequences keep their
natural length (CLIP's text tower is causal): padding happens per batch, never to 77.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer


class TextTooLongError(ValueError):
    def __init__(self, index: int, n_tokens: int, context_length: int) -> None:
        super().__init__(
            f"text has {n_tokens} tokens, over the model's context length of {context_length}; "
            "shorten it or send `truncate: true`"
        )
        self.index = index
        self.n_tokens = n_tokens


class InvalidTokensError(ValueError):
    pass


@dataclass(frozen=True)
class TokenizedText:
    ids: np.ndarray  # int32, BOS ... EOS
    truncated: bool


class ClipTokenizer:
    def __init__(
        self, tokenizer_json: str, context_length: int, bos_id: int, eos_id: int, vocab_size: int
    ) -> None:
        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.no_truncation()
        self._tok.no_padding()
        self.context_length = context_length
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.vocab_size = vocab_size

    def _fit(self, ids: list[int], truncate: bool, index: int) -> TokenizedText:
        if len(ids) <= self.context_length:
            return TokenizedText(np.asarray(ids, dtype=np.int32), False)
        if not truncate:
            raise TextTooLongError(index, len(ids), self.context_length)
        # Same as transformers' truncation: keep BOS and the first tokens, end with EOS.
        kept = ids[: self.context_length - 1] + [self.eos_id]
        return TokenizedText(np.asarray(kept, dtype=np.int32), True)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """BOS ... EOS ids of each text, before any truncation."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=True)]

    def encode(self, texts: list[str], truncate: bool) -> list[TokenizedText]:
        """Tokenize texts; raises TextTooLongError (with the index) when truncation is off."""
        return [self._fit(ids, truncate, i) for i, ids in enumerate(self.token_ids(texts))]

    def wrap_ids(self, ids: tuple[int, ...] | list[int], truncate: bool, index: int = 0) -> TokenizedText:
        """Pre-tokenized input: check the ids, then add BOS/EOS unless already present."""
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InvalidTokensError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        seq = list(ids)
        if not seq or seq[0] != self.bos_id:
            seq.insert(0, self.bos_id)
        if seq[-1] != self.eos_id:
            seq.append(self.eos_id)
        return self._fit(seq, truncate, index)
