"""What travels between router and encoders: uint8 image stacks and padded token batches.

Both sides use these helpers: the router packs coalesced items into one call, the
encoder concatenates calls into device batches and splits oversized calls.
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


def payload_len(payload: Payload) -> int:
    return len(payload)


def concat_payloads(payloads: list[Payload]) -> Payload:
    if len(payloads) == 1:
        return payloads[0]
    if isinstance(payloads[0], TokenBatch):
        width = max(p.ids.shape[1] for p in payloads)
        ids = np.full((sum(len(p) for p in payloads), width), PAD_ID, dtype=np.int32)
        row = 0
        for p in payloads:
            ids[row : row + len(p), : p.ids.shape[1]] = p.ids
            row += len(p)
        return TokenBatch(ids, np.concatenate([p.lengths for p in payloads]))
    return np.concatenate(payloads)


def slice_payload(payload: Payload, start: int, stop: int) -> Payload:
    if isinstance(payload, TokenBatch):
        lengths = payload.lengths[start:stop]
        return TokenBatch(payload.ids[start:stop, : int(lengths.max())], lengths)
    return payload[start:stop]


def split_payload(payload: Payload, max_items: int) -> list[Payload]:
    n = len(payload)
    if n <= max_items:
        return [payload]
    return [slice_payload(payload, i, min(i + max_items, n)) for i in range(0, n, max_items)]
