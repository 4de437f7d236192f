"""CLIP BPE tokenization: the real vocabulary, truncation policy, pre-tokenized input."""

from __future__ import annotations

import json
import shutil
from functools import lru_cache

import pytest
from support.helpers import bpe_path, make_tokenizer

from deployments.preprocess.tokenizer import InvalidTokensError, TextTooLongError
from deployments.preprocess.vocab import build_vocab, packaged_bpe_path, read_merges


def test_vocabulary_layout():
    vocab = build_vocab(read_merges(bpe_path() or packaged_bpe_path()))
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["cat</w>"] == 2368


def test_packaged_vocabulary_is_the_shared_file():
    if bpe_path() is None:
        pytest.skip("../shared is not beside this checkout")
    assert packaged_bpe_path().read_bytes() == bpe_path().read_bytes()


def test_known_ids(model_dir):
    tok = make_tokenizer(model_dir)
    (enc,) = tok.encode(["a photo of a cat"], truncate=True)
    assert enc.ids.tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok.context_length == 77


def test_matches_transformers_with_and_without_truncation(model_dir, reference):
    tok = make_tokenizer(model_dir)
    texts = ["A Photo of  a CAT!", "naïve café — 東京 🐈", "dog " * 120, "x"]
    ours = tok.encode(texts, truncate=True)
    for text, enc in zip(texts, ours):
        expected = reference.processor.tokenizer(text, truncation=True, max_length=77).input_ids
        assert enc.ids.tolist() == expected
    assert [e.truncated for e in ours] == [False, False, True, False]
    with pytest.raises(TextTooLongError) as exc:
        tok.encode(texts, truncate=False)
    assert exc.value.index == 2 and exc.value.n_tokens == 122


def test_pretokenized_ids_get_special_tokens(model_dir):
    tok = make_tokenizer(model_dir)
    assert tok.wrap_ids([320, 1125], truncate=True).ids.tolist() == [49406, 320, 1125, 49407]
    assert tok.wrap_ids([49406, 320, 49407], truncate=True).ids.tolist() == [49406, 320, 49407]
    with pytest.raises(InvalidTokensError, match="49408"):
        tok.wrap_ids([320, 49408], truncate=True)
    with pytest.raises(TextTooLongError):
        tok.wrap_ids([320] * 100, truncate=False)
    assert len(tok.wrap_ids([320] * 100, truncate=True).ids) == 77


def test_slow_tokenizer_files_alone_give_the_same_ids(model_dir, tmp_path):
    slow = tmp_path / "slow"
    shutil.copytree(model_dir, slow)
    (slow / "tokenizer.json").unlink()
    cfg = json.loads((slow / "tokenizer_config.json").read_text())
    (slow / "tokenizer_config.json").write_text(json.dumps(cfg))
    texts = ["a photo of a cat", "Ünïcödé and punctuation!?"]
    assert [e.ids.tolist() for e in make_tokenizer(slow).encode(texts, True)] == [
        e.ids.tolist() for e in make_tokenizer(model_dir).encode(texts, True)]


# --- character spans (/v1/tokenize's `offsets`) ---------------------------------------

SPAN_TEXTS = [
    "A Photo,  café 🐈",
    "hello,world!!? (1999) 3.14 $5 #tag @me e-mail",  # punctuation runs, digits one by one
    "MiXeD CaSe ΣΑΣ İstanbul Straße ＡＢＣ ﬁ",  # case changes that add or change characters
    "naïve café",  # precomposed accents
    "nai\u0308ve cafe\u0301 x\u0301",  # combining accents: composed by NFC, or not (x)
    "e\u0302\u0323 e\u0323\u0302 \u1ec7",  # the same Vietnamese letter three ways (one non-canonical)
    " \u0301\u0317x \u1100\u1161\u11a8 \u0b47\u0b3e",  # marks reordered after a space; jamo; Oriya
    "  lead\t\ttab\nnew\r\n  line \u00a0nbsp\u3000wide  ",  # runs of whitespace everywhere
    "🐈🐈\u200d⬛ 👍🏽 ❤️ ‰: ☀️x 東京タワー 한국어",  # multi-byte characters split across tokens
    "x<|endoftext|>y",  # a special token's text inside the text is that token
    "",
    " \t\n",
]


@lru_cache(maxsize=2)
def _span_checker(model_dir):
    """(text, TextSpans) -> None, asserting the documented span rules."""
    from tokenizers import Tokenizer

    from deployments.preprocess.vocab import _bytes_to_unicode

    normalize = Tokenizer.from_file(str(model_dir / "tokenizer.json")).normalizer.normalize_str
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}

    def token_bytes(token: str) -> bytes:
        if token in ("<|startoftext|>", "<|endoftext|>"):
            return token.encode()
        return bytes(byte_of[c] for c in token.removesuffix("</w>"))

    def check(text, spans):
        assert len(spans.tokens) == len(spans.offsets) == len(spans.ids)
        offsets = spans.offsets
        assert offsets[0] == (0, 0) and spans.ids[0] == 49406
        last = offsets[-2][1] if len(offsets) > 2 else 0
        assert offsets[-1] == (last, last) and spans.ids[-1] == 49407
        # Group tokens whose spans overlap (those that share a character or an NFC unit):
        # a group's bytes are its span's text, normalised the tokenizer's way.
        groups: list[list] = []
        for token, (start, end) in zip(spans.tokens[1:-1], offsets[1:-1]):
            assert 0 <= start < end <= len(text)
            if groups and start < groups[-1][1]:
                assert start >= groups[-1][0] and end >= groups[-1][1], "spans go backwards"
                groups[-1][1] = end
                groups[-1][2].append(token)
            else:
                groups.append([start, end, [token]])
        covered_to = 0
        for start, end, tokens in groups:
            got = b"".join(token_bytes(t) for t in tokens).decode()
            assert got == normalize(text[start:end]), (text[start:end], tokens)
            assert not normalize(text[covered_to:start]).strip(), "a non-space character has no token"
            covered_to = end
        assert not normalize(text[covered_to:]).strip()

    return check


@pytest.mark.parametrize("text", SPAN_TEXTS)
def test_spans_map_back_to_the_tokens(model_dir, text):
    tok = make_tokenizer(model_dir)
    (spans,) = tok.spans([text])
    assert spans.ids == tok.token_ids([text])[0]
    _span_checker(model_dir)(text, spans)


def test_spans_are_str_indices_of_the_original_text(model_dir):
    tok = make_tokenizer(model_dir)
    example, precomposed, decomposed, upper, spaced = tok.spans(
        ["A Photo,  café 🐈", "café", "cafe\u0301", "CAT", "a \t\n cat  "])
    # The docs' example: 🐈 is 4 UTF-8 bytes but one character; its two tokens share it.
    assert example.ids == [49406, 320, 1125, 267, 15304, 2074, 486, 49407]
    assert example.tokens == ["<|startoftext|>", "a</w>", "photo</w>", ",</w>", "cafÃ©</w>", "ðŁĲ", "Ī</w>",
                              "<|endoftext|>"]
    assert example.offsets == [(0, 0), (0, 1), (2, 7), (7, 8), (10, 14), (15, 16), (15, 16), (16, 16)]
    # The same token; the decomposed accent's combining character is inside the span.
    assert precomposed.ids == decomposed.ids
    assert (precomposed.offsets[1], decomposed.offsets[1]) == ((0, 4), (0, 5))
    assert upper.tokens[1] == "cat</w>" and upper.offsets[1] == (0, 3)
    # Whitespace runs fall between spans; EOS sits where the last token ends.
    assert spaced.offsets == [(0, 0), (0, 1), (5, 8), (8, 8)]


def test_spans_cover_the_whole_text_and_show_where_truncation_cuts(model_dir):
    tok = make_tokenizer(model_dir)
    text = "a photo of " * 30  # 90 tokens: truncated
    (spans,) = tok.spans([text])
    (kept,) = tok.encode([text], truncate=True)
    n = tok.context_length
    assert len(spans.offsets) == len(spans.ids) == 92 and kept.truncated
    assert kept.ids.tolist() == spans.ids[: n - 1] + [tok.eos_id]
    # The documented rule: the embedded part of the text ends at offsets[n - 2][1] ...
    cut = spans.offsets[n - 2][1]
    assert cut == len("a photo of " * 25) - 1  # BOS + 25 x 3 tokens kept, up to the 25th "of"
    # ... and that part alone is exactly the kept tokens.
    assert tok.token_ids([text[:cut]])[0] == kept.ids.tolist()


def test_spans_of_random_mixtures(model_dir):
    """Random strings of the awkward pieces above: the rules hold everywhere."""
    import random

    pieces = list("aZé É\t\n.,!?'09") + ["\u0301", "\u0308", "\u0323", "\u0302", "\u0317", "\u1100", "\u1161",
                                         "\u11a8", "🐈", "👍🏽", "\u200d", "\ufe0f", "‰", "東", "ß", "İ", "ﬁ", "\u00a0",
                                         "\u0b47", "\u0b3e", "'s", "<|endoftext|>"]
    rng = random.Random(0)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 12))) for _ in range(400)]
    check = _span_checker(model_dir)
    for text, spans in zip(texts, make_tokenizer(model_dir).spans(texts)):
        check(text, spans)
