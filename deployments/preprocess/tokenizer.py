"""CLIP tokenization on the `tokenizers` runtime (Rust; no transformers import).

Built from the checkpoint's serialized tokenizer.json, which the text encoder ships to
the router, so the router tokenizes exactly as the checkpoint does. Sequences keep their
natural length on the way to the encoder; the padding the model family needs (per batch
for CLIP, whose text tower is causal; to the context length with the pad id for SigLIP)
is applied where the batch meets the tower (engine/payloads.py `fit_padding`).
Families without BOS (SigLIP) have `bos_id` None.
"""

from __future__ import annotations

import unicodedata
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


@dataclass(frozen=True)
class TextSpans:
    """A text's tokens before any truncation, with where each came from in the text."""

    ids: list[int]  # BOS ... EOS
    tokens: list[str]  # the vocabulary's spelling: byte-level symbols, `</w>` ending a word
    offsets: list[tuple[int, int]]  # [start, end) in str indices of the text as sent


def _nfc_units(text: str) -> dict[int, tuple[int, int]]:
    """For each character in a run that NFC rewrites, the run's [start, end).

    `tokenizers` maps a character NFC composed (e + U+0301 -> é, Hangul jamo -> a
    syllable) to the first original character only, and maps reordered combining marks
    by position rather than by identity, so its spans miss or misplace characters there.
    Such runs are the only places where that happens; a token touching one gets the whole
    run. A run is a starter and the marks after it, joined to the next run when NFC
    composes across them (Hangul, some Indic vowel signs).
    """
    if text.isascii() or unicodedata.is_normalized("NFC", text):
        return {}  # the common case: nothing to repair
    nfc = lambda s: unicodedata.normalize("NFC", s)  # noqa: E731
    starts = [i for i, c in enumerate(text) if i == 0 or unicodedata.combining(c) == 0] + [len(text)]
    runs: list[list[int]] = []
    for a, b in zip(starts, starts[1:]):
        if runs and nfc(text[runs[-1][0] : b]) != nfc(text[runs[-1][0] : a]) + nfc(text[a:b]):
            runs[-1][1] = b
        else:
            runs.append([a, b])
    units: dict[int, tuple[int, int]] = {}
    for a, b in runs:
        if nfc(text[a:b]) == text[a:b]:
            continue
        while a < b and text[a].isspace():  # marks reordered after a space: the space is no part
            a += 1
        units.update((i, (a, b)) for i in range(a, b))
    return units


class ClipTokenizer:
    def __init__(
        self, tokenizer_json: str, context_length: int, bos_id: int | None, eos_id: int, vocab_size: int,
        padding: str = "longest", pad_id: int | None = None,
    ) -> None:
        self._tok = Tokenizer.from_str(tokenizer_json)
        self._tok.no_truncation()
        self._tok.no_padding()
        # CLIP's tokenizer.json composes to NFC; the span repair is for that step only.
        # (read from the parsed normaliser: parsing the whole file's vocabulary again costs more)
        normalizer = self._tok.normalizer
        self._normalizes_nfc = normalizer is not None and '"NFC"' in normalizer.__getstate__().decode()
        self.context_length = context_length
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.vocab_size = vocab_size
        self.padding = padding
        self.pad_id = pad_id

    def _fit(self, ids: list[int], truncate: bool, index: int) -> TokenizedText:
        if len(ids) <= self.context_length:
            return TokenizedText(np.asarray(ids, dtype=np.int32), False)
        if not truncate:
            raise TextTooLongError(index, len(ids), self.context_length)
        # Same as transformers' truncation: keep BOS (if any) and the first tokens, end with EOS.
        kept = ids[: self.context_length - 1] + [self.eos_id]
        return TokenizedText(np.asarray(kept, dtype=np.int32), True)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """BOS ... EOS ids of each text, before any truncation."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=True)]

    def spans(self, texts: list[str]) -> list[TextSpans]:
        """Each text's ids, token strings and character spans, before any truncation.

        `tokenizers` (Python) gives offsets in str indices of the original text, also
        for byte-level tokens of one multi-byte character (each gets that character's
        span). Repaired here: characters NFC merged or reordered (_nfc_units), and the
        post-processor's BOS/EOS, which it gives (0, 0) both: EOS goes where the last
        token before it ends, so spans stay in order.
        """
        out = []
        for text, enc in zip(texts, self._tok.encode_batch(texts, add_special_tokens=True)):
            units = _nfc_units(text) if self._normalizes_nfc else {}
            offsets = []
            for start, end in enc.offsets:
                if start < end and units:  # widen to the NFC units the token's ends fall in
                    start = units[start][0] if start in units else start
                    end = units[end - 1][1] if end - 1 in units else end
                offsets.append((start, end))
            ids = enc.ids
            if ids and self.bos_id is not None and ids[0] == self.bos_id:
                offsets[0] = (0, 0)
            if len(ids) > 1 and ids[-1] == self.eos_id:
                last = offsets[-2][1]
                offsets[-1] = (last, last)
            out.append(TextSpans(ids, enc.tokens, offsets))
        return out

    def encode(self, texts: list[str], truncate: bool) -> list[TokenizedText]:
        """Tokenize texts; raises TextTooLongError (with the index) when truncation is off."""
        return [self._fit(ids, truncate, i) for i, ids in enumerate(self.token_ids(texts))]

    def wrap_ids(self, ids: tuple[int, ...] | list[int], truncate: bool, index: int = 0) -> TokenizedText:
        """Pre-tokenized input: check the ids, then add BOS (if the family has one) and EOS
        unless already present."""
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InvalidTokensError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        seq = list(ids)
        if self.bos_id is not None and (not seq or seq[0] != self.bos_id):
            seq.insert(0, self.bos_id)
        if not seq or seq[-1] != self.eos_id:
            seq.append(self.eos_id)
        return self._fit(seq, truncate, index)
