"""The router's label cache on its own: counters, single flight, LRU bounds, fingerprint keying.
The text tower is replaced by a recording encoder (the cache is what is under test)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.serving.label_cache import LabelCache, entry_bytes

DIM = 8


def vector_for(prompt: str, fingerprint: str) -> np.ndarray:
    """A distinct unit vector per (prompt, weights), so mix-ups are visible."""
    seed = abs(hash((prompt, fingerprint))) % 2**32
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class RecordingTextTower:
    def __init__(self, fingerprint: str = "w1", delay: float = 0.01, fail: bool = False) -> None:
        self.fingerprint = fingerprint
        self.delay = delay
        self.fail = fail
        self.calls: list[list[str]] = []

    async def __call__(self, prompts: list[str]) -> tuple[np.ndarray, str]:
        self.calls.append(list(prompts))
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("text tower down")
        return np.stack([vector_for(p, self.fingerprint) for p in prompts]), self.fingerprint

    @property
    def encoded(self) -> list[str]:
        return [p for call in self.calls for p in call]


def make(max_entries: int = 1000, max_bytes: int = 10**6, hook=None) -> LabelCache:
    return LabelCache(max_entries, max_bytes, on_lookup=hook)


def test_hits_and_misses_are_counted_and_vectors_are_the_encoders():
    async def main():
        lookups = []
        cache = make(hook=lambda variant, status, n: lookups.append((variant, status, n)))
        tower = RecordingTextTower()
        first = await cache.lookup("m", "w1", ["a cat", "a dog"], tower)
        second = await cache.lookup("m", "w1", ["a dog", "a bird", "a cat"], tower)
        return cache, tower, first, second, lookups

    cache, tower, first, second, lookups = asyncio.run(main())
    assert (first.hits, first.misses, first.encoded) == (0, 2, 2)
    assert (second.hits, second.misses, second.encoded) == (2, 1, 1)
    assert tower.calls == [["a cat", "a dog"], ["a bird"]]
    for prompt, row in zip(["a dog", "a bird", "a cat"], second.vectors):
        np.testing.assert_array_equal(row, vector_for(prompt, "w1"))
    assert second.fingerprint == "w1"
    assert (cache.hits, cache.misses, cache.encoded) == (2, 3, 3)
    assert lookups == [("m", "miss", 2), ("m", "hit", 2), ("m", "miss", 1)]


def test_concurrent_identical_misses_encode_once():
    async def main():
        cache = make()
        tower = RecordingTextTower(delay=0.05)
        prompts = [f"label {i}" for i in range(5)]
        results = await asyncio.gather(*(cache.lookup("m", "w1", prompts, tower) for _ in range(10)))
        late = await cache.lookup("m", "w1", prompts, tower)
        return cache, tower, prompts, results, late

    cache, tower, prompts, results, late = asyncio.run(main())
    assert sorted(tower.encoded) == sorted(prompts)  # one encode per prompt, not ten
    assert sum(r.encoded for r in results) == 5 and late.hits == 5
    for r in results:
        np.testing.assert_array_equal(r.vectors, results[0].vectors)
    assert cache.stats()["misses"] == 50 and cache.stats()["encoded"] == 5


def test_overlapping_misses_share_only_what_overlaps():
    async def main():
        cache = make()
        tower = RecordingTextTower(delay=0.05)
        await asyncio.gather(cache.lookup("m", "w1", ["a", "b"], tower), cache.lookup("m", "w1", ["b", "c"], tower))
        return tower

    assert sorted(asyncio.run(main()).encoded) == ["a", "b", "c"]


def test_a_failed_encode_reaches_every_waiter_and_is_not_cached():
    async def main():
        cache = make()
        broken = RecordingTextTower(fail=True, delay=0.02)
        results = await asyncio.gather(
            *(cache.lookup("m", "w1", ["x", "y"], broken) for _ in range(3)), return_exceptions=True
        )
        healthy = RecordingTextTower()
        after = await cache.lookup("m", "w1", ["x", "y"], healthy)
        return broken, results, healthy, after, len(cache)

    broken, results, healthy, after, size = asyncio.run(main())
    assert len(broken.calls) == 1
    assert all(isinstance(r, RuntimeError) for r in results)
    assert healthy.calls == [["x", "y"]] and after.encoded == 2 and size == 2


def test_a_caller_that_leaves_does_not_cancel_the_shared_encode():
    async def main():
        cache = make()
        tower = RecordingTextTower(delay=0.05)
        leaver = asyncio.create_task(cache.lookup("m", "w1", ["p"], tower))
        await asyncio.sleep(0.01)
        stayer = asyncio.create_task(cache.lookup("m", "w1", ["p"], tower))
        await asyncio.sleep(0.01)
        leaver.cancel()
        result = await stayer
        return tower, result, len(cache)

    tower, result, size = asyncio.run(main())
    assert tower.calls == [["p"]] and size == 1
    np.testing.assert_array_equal(result.vectors[0], vector_for("p", "w1"))


def test_new_weights_never_get_old_entries():
    async def main():
        cache = make()
        old, new = RecordingTextTower("w1"), RecordingTextTower("w2")
        await cache.lookup("m", "w1", ["a cat"], old)
        after = await cache.lookup("m", "w2", ["a cat"], new)
        other_variant = await cache.lookup("m-bf16", "w1", ["a cat"], old)
        return after, other_variant, new

    after, other_variant, new = asyncio.run(main())
    assert after.hits == 0 and new.calls == [["a cat"]]
    np.testing.assert_array_equal(after.vectors[0], vector_for("a cat", "w2"))
    assert other_variant.hits == 0  # same weights, other variant (dtype may differ): not shared


def test_entries_are_stored_under_the_weights_that_made_them():
    """An encode started under w1 that the (redeployed) encoder answers with w2 is stored as
    w2, and the lookup reports mixed weights when hits and fresh vectors disagree."""

    async def main():
        cache = make()
        await cache.lookup("m", "w1", ["a"], RecordingTextTower("w1"))
        mixed = await cache.lookup("m", "w1", ["a", "b"], RecordingTextTower("w2"))
        return cache, mixed

    cache, mixed = asyncio.run(main())
    assert mixed.fingerprint is None
    assert cache.peek("m", "w2", "b") is not None and cache.peek("m", "w1", "b") is None


def test_lru_eviction_under_the_byte_bound():
    size = entry_bytes("p00", np.zeros(DIM, np.float32))

    async def main():
        cache = make(max_bytes=3 * size)
        tower = RecordingTextTower()
        await cache.lookup("m", "w1", ["p00", "p01", "p02"], tower)
        await cache.lookup("m", "w1", ["p00"], tower)  # p00 becomes most recently used
        await cache.lookup("m", "w1", ["p03"], tower)  # evicts p01, the least recently used
        return cache

    cache = asyncio.run(main())
    assert cache.bytes == 3 * size and len(cache) == 3 and cache.evictions == 1
    assert cache.peek("m", "w1", "p01") is None
    assert all(cache.peek("m", "w1", p) is not None for p in ("p00", "p02", "p03"))


def test_entry_bound_and_disabled_cache():
    async def main(cache):
        tower = RecordingTextTower()
        await cache.lookup("m", "w1", [f"p{i}" for i in range(10)], tower)
        again = await cache.lookup("m", "w1", ["p9", "p0"], tower)
        return again

    bounded = make(max_entries=4)
    again = asyncio.run(main(bounded))
    assert len(bounded) == 4 and (again.hits, again.misses) == (1, 1)
    disabled = make(max_entries=0)
    again = asyncio.run(main(disabled))
    assert len(disabled) == 0 and again.hits == 0


def test_an_encoder_returning_the_wrong_row_count_fails_instead_of_hanging():
    class Short(RecordingTextTower):
        async def __call__(self, prompts):
            vectors, fp = await super().__call__(prompts)
            return vectors[:1], fp

    async def main():
        return await asyncio.wait_for(make().lookup("m", "w1", ["a", "b"], Short()), 5)

    with pytest.raises(RuntimeError, match="1 vectors for 2 prompts"):
        asyncio.run(main())


def test_cache_and_label_limits_are_validated_config():
    from deployments.config import ConfigError, parse_app_config

    cfg = parse_app_config({"variants": [{"id": "a"}], "label_cache": {"max_entries": 10, "max_bytes": 4096},
                            "limits": {"max_labels": 50}})
    assert (cfg.label_cache.max_entries, cfg.label_cache.max_bytes, cfg.limits.max_labels) == (10, 4096, 50)
    for bad, field in [({"label_cache": {"max_entriez": 1}}, "label_cache.max_entriez"),
                       ({"label_cache": {"max_bytes": -1}}, "label_cache.max_bytes"),
                       ({"limits": {"max_labels": 1}}, "limits.max_labels")]:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            parse_app_config({"variants": [{"id": "a"}], **bad})
