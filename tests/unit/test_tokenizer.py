"""CLIP BPE tokenization: the real vocabulary, truncation policy, pre-tokenized input."""

from __future__ import annotations

import json
import shutil

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
