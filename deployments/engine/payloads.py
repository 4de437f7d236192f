"""What travels between router and encoders, and into a forward: uint8 image stacks and
padded token batches.

The router packs coalesced items into one call, the encoder unpacks calls into items and
packs what queued into device batches, the jobs pack chunks; `packer(tower)` is the one
place that chooses how a tower's items are packed, and `forward` the one place that
dispatches a payload to the backend method for its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

PAD_ID = 0  # any id works: the causal text tower never attends past the first EOS


@dataclass
class TokenBatch:
    ids: np.ndarray  # int32 (N, L), right-padded with PAD_ID
    lengths: np.ndarray  # int32 (N,)

    def __len__(self) -> int:
        return len(self.lengths)


Payload = Union[np.ndarray, TokenBatch]  # images: uint8 (N, H, W, 3)
Pack = Callable[[list[np.ndarray]], Payload]


def pack_images(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images)


def fit_padding(ids: np.ndarray, lengths: np.ndarray, padding: str, context_length: int,
                pad_id: int | None) -> np.ndarray:
    """A packed batch as the model family's text tower takes it: as packed ("longest":
    CLIP's causal tower never looks past the first EOS), or every row padded to exactly
    `context_length` with `pad_id` ("max_length": SigLIP pools the last position, so it must
    see the padding it was trained with, as `padding="max_length"` gives in transformers)."""
    if padding != "max_length":
        return ids
    out = np.full((len(lengths), context_length), PAD_ID if pad_id is None else pad_id, dtype=np.int32)
    for row, length in enumerate(np.asarray(lengths).tolist()):
        out[row, :length] = ids[row, :length]
    return out


def pack_tokens(sequences: list[np.ndarray]) -> TokenBatch:
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    ids = np.full((len(sequences), int(lengths.max())), PAD_ID, dtype=np.int32)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
    return TokenBatch(ids, lengths)


_PACKERS: dict[str, Pack] = {"image": pack_images, "text": pack_tokens}


def packer(tower: str) -> Pack:
    """How `tower`'s items (uint8 images, or token id sequences) become one payload."""
    return _PACKERS[tower]


def unpack_payload(payload: Payload) -> list[np.ndarray]:
    """A packed call back into its items (views, no copies): image arrays or id sequences."""
    if isinstance(payload, TokenBatch):
        return [payload.ids[row, :length] for row, length in enumerate(payload.lengths.tolist())]
    return list(payload)


def payload_len(payload: Payload) -> int:
    return len(payload)


def forward(backend: Any, payload: Payload) -> np.ndarray:
    """One forward of `backend` (a TowerBackend) over a packed payload: float32 (N, D)."""
    if isinstance(payload, TokenBatch):
        return backend.embed_texts(payload.ids, payload.lengths)
    return backend.embed_images(payload)
