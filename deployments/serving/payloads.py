"""What travels between router and encoders: uint8 image stacks and padded token batches.

Both sides use these helpers: the router packs coalesced items into one call, the
encoder unpacks calls into items and packs what queued into device batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

PAD_ID = 0  # any id works: the causal text tower never attends past the first EOS


@dataclass
class TokenBatch:
    ids: np.ndarray  # int32 (N, L), right-padded with PAD_ID
    lengths: np.ndarray  # int32 (N,)

    def __len__(self) -> int:
        return len(self.lengths)


Payload = Union[np.ndarray, TokenBatch]  # images: uint8 (N, H, W, 3)


def pack_images(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images)


def pack_tokens(sequences: list[np.ndarray]) -> TokenBatch:
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
    ids = np.full((len(sequences), int(lengths.max())), PAD_ID, dtype=np.int32)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
    return TokenBatch(ids, lengths)


def unpack_payload(payload: Payload) -> list[np.ndarray]:
    """A packed call back into its items (views, no copies): image arrays or id sequences."""
    if isinstance(payload, TokenBatch):
        return [payload.ids[row, :length] for row, length in enumerate(payload.lengths.tolist())]
    return list(payload)


def payload_len(payload: Payload) -> int:
    return len(payload)
