"""The router's cache of label/prompt embeddings: a repeated label set costs no text-tower work.

Keys are (variant id, weights fingerprint, exact prompt text). The fingerprint changes
whenever the encoders load different weights (hub commit, or local file sizes/mtimes),
so entries made with old weights are never served for new ones; unused ones age out
of the LRU. Bounded by entries and by bytes (vector bytes + UTF-8 prompt bytes).

Concurrent lookups of the same missing prompt share one encode (single flight): the
first caller starts it as its own task, later callers await the same future, and a
caller that goes away does not cancel the encode for the others.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

import numpy as np

from ..engine.concurrency import start_shared

Key = tuple[str, str, str]  # (variant id, fingerprint, prompt)
# Embeds the given prompts; returns their vectors (in order) and the fingerprint of the
# weights that produced them.
EncodeFn = Callable[[list[str]], Awaitable[tuple[np.ndarray, str]]]
LookupHook = Callable[[str, str, int], None]  # (variant id, "hit" | "miss", count)


@dataclass
class Lookup:
    vectors: np.ndarray  # float32 (len(prompts), D), in the order asked
    fingerprint: str | None  # the weights the vectors belong to; None if they changed midway
    hits: int
    misses: int
    encoded: int  # prompts this call sent to the text tower (misses minus shared encodes)


def entry_bytes(prompt: str, vector: np.ndarray) -> int:
    return vector.nbytes + len(prompt.encode("utf-8"))


class LabelCache:
    def __init__(self, max_entries: int, max_bytes: int, on_lookup: LookupHook | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._on_lookup = on_lookup
        self._entries: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._inflight: dict[Key, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.encoded = 0
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def inflight(self) -> int:
        """Prompts being encoded right now (shared single-flight encodes)."""
        return len(self._inflight)

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self._entries),
            "bytes": self.bytes,
            "hits": self.hits,
            "misses": self.misses,
            "encoded": self.encoded,
            "evictions": self.evictions,
            "max_entries": self.max_entries,
            "max_bytes": self.max_bytes,
        }

    def peek(self, variant_id: str, fingerprint: str, prompt: str) -> np.ndarray | None:
        """The cached vector without touching LRU order or counters (tests, debugging)."""
        return self._entries.get((variant_id, fingerprint, prompt))

    async def lookup(self, variant_id: str, fingerprint: str, prompts: Sequence[str], encode: EncodeFn) -> Lookup:
        """Vectors for `prompts` (unique strings) under `fingerprint`; misses go to `encode`."""
        found: dict[str, np.ndarray] = {}
        waiting: dict[str, asyncio.Future] = {}
        missing: list[str] = []
        for prompt in prompts:
            key = (variant_id, fingerprint, prompt)
            vector = self._entries.get(key)
            if vector is not None:
                self._entries.move_to_end(key)
                found[prompt] = vector
            elif key in self._inflight:
                waiting[prompt] = self._inflight[key]
            else:
                missing.append(prompt)
        hits, misses = len(found), len(prompts) - len(found)
        self.hits += hits
        self.misses += misses
        self.encoded += len(missing)
        if self._on_lookup is not None:
            if hits:
                self._on_lookup(variant_id, "hit", hits)
            if misses:
                self._on_lookup(variant_id, "miss", misses)
        if missing:
            waiting.update(self._start_encode(variant_id, fingerprint, missing, encode))

        sources = {fingerprint} if found else set()
        for prompt, future in waiting.items():
            # shield: cancelling this caller must not cancel an encode others await.
            vector, produced_by = await asyncio.shield(future)
            found[prompt] = vector
            sources.add(produced_by)
        vectors = np.stack([found[p] for p in prompts])
        return Lookup(vectors, sources.pop() if len(sources) == 1 else None, hits, misses, len(missing))

    def _start_encode(self, variant_id: str, fingerprint: str, prompts: list[str], encode: EncodeFn) -> dict[str, asyncio.Future]:
        loop = asyncio.get_running_loop()
        futures = {p: loop.create_future() for p in prompts}
        keys = {p: (variant_id, fingerprint, p) for p in prompts}
        for p, future in futures.items():
            self._inflight[keys[p]] = future
            # A failure nobody awaited (every caller left) must not log "never retrieved".
            future.add_done_callback(lambda f: f.cancelled() or f.exception())

        async def run() -> None:
            try:
                vectors, produced_by = await encode(prompts)
                if len(vectors) != len(prompts):
                    raise RuntimeError(f"encoded {len(vectors)} vectors for {len(prompts)} prompts")
            except BaseException as exc:
                for p, future in futures.items():
                    self._inflight.pop(keys[p], None)
                    if not future.done():
                        if isinstance(exc, asyncio.CancelledError):
                            future.cancel()
                        else:
                            future.set_exception(exc)
                raise
            for p, row in zip(prompts, vectors):
                self._inflight.pop(keys[p], None)
                vector = np.array(row, dtype=np.float32)  # own copy: byte accounting stays true
                # Stored under the fingerprint the encoder reported, which is the truth
                # even if the weights changed while this encode was in flight.
                self._store((variant_id, produced_by, p), vector)
                futures[p].set_result((vector, produced_by))

        task = start_shared(run())
        self._tasks.add(task)
        task.add_done_callback(self._finish)
        return futures

    def _finish(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: it already went to every waiter

    def _store(self, key: Key, vector: np.ndarray) -> None:
        if not self.enabled:
            return
        size = entry_bytes(key[2], vector)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= entry_bytes(key[2], old)
        self._entries[key] = vector
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            evicted_key, evicted = self._entries.popitem(last=False)
            self.bytes -= entry_bytes(evicted_key[2], evicted)
            self.evictions += 1
