"""Build a Hugging Face CLIP tokenizer (vocab.json + merges.txt) from OpenAI's BPE file.

The vocabulary is: 256 byte symbols, the same with `</w>`, one entry per merge
(lines 2..48,895 of bpe_simple_vocab_16e6.txt), then <|startoftext|> and <|endoftext|>.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # lines 2..48,895: the merges CLIP uses
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"


def packaged_bpe_path() -> Path:
    """The BPE file shipped with the package (MIT-licensed, from openai/CLIP)."""
    return Path(str(resources.files("deployments") / "assets" / "bpe_simple_vocab_16e6.txt.gz"))


@lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_merges(bpe_path: Path) -> list[str]:
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    return lines[1 : N_MERGES + 1]


def build_vocab(merges: list[str]) -> dict[str, int]:
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(vocab)}


def write_vocab_files(out_dir: Path, bpe_path: Path | None = None) -> tuple[Path, Path]:
    """Write vocab.json and merges.txt (the slow-tokenizer files) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    merges = read_merges(bpe_path or packaged_bpe_path())
    vocab_file, merges_file = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_file.write_text(json.dumps(build_vocab(merges), ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab_file, merges_file
