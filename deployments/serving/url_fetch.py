"""Fetch image URLs without becoming a proxy into the network (SSRF-safe).

Per hop (the URL, then each redirect): the URL is parsed and normalised and its host
checked against the allow/deny lists (preprocess/url_policy.py); the host is resolved
once, every address it resolved to is checked, and the connection goes to those
addresses only. The HTTP client is aiohttp with a resolver that answers from the vetted
addresses alone and never asks DNS itself, so what was checked is what is connected to,
while the URL keeps its hostname: the Host header, TLS SNI and certificate verification
all use the real name. (httpx can pin an IP too, but only by rewriting the URL and
carrying the name in a Host header and an SNI extension by hand.) Redirects are followed
by hand, each re-checked, at most `max_redirects`. Bodies are read in chunks and
decompressed here (gzip/deflate only) with a bounded output, so neither a large body nor
a compression bomb can exceed `max_bytes`. One deadline covers DNS, connects, redirects
and the body. No proxies from the environment, no cookies, no credentials.
"""

from __future__ import annotations

import asyncio
import socket
import zlib
from typing import Awaitable, Callable
from urllib.parse import urljoin

import aiohttp
from aiohttp.abc import AbstractResolver

from .. import __version__
from ..config import AppConfig
from ..preprocess.url_policy import Target, UrlPolicy, UrlRejected

# host, port -> the addresses it resolves to (text). Tests substitute a stub: no lookup
# ever leaves the machine.
Resolver = Callable[[str, int], Awaitable[list[str]]]
REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 64 * 1024


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class _VettedResolver(AbstractResolver):
    """aiohttp's resolver for one fetch: only the addresses that passed the checks."""

    def __init__(self) -> None:
        self.vetted: dict[str, list[str]] = {}

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        addresses = self.vetted.get(host)
        if not addresses:  # never fall back to a lookup of our own
            raise OSError(f"{host} was not vetted")
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for a in addresses]

    async def close(self) -> None:
        pass


class _Decoder:
    """Content-Encoding decoding with an output bound, counting bytes as they come."""

    def __init__(self, encoding: str, max_bytes: int) -> None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._zlib = None
        elif encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj()
        else:
            raise UrlRejected(f"image URL answered with unsupported Content-Encoding {encoding!r}",
                              code="image_url_unreachable")
        self.max_bytes = max_bytes
        self.body = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self._zlib is None:
            data = chunk
        else:
            try:  # at most one byte past the limit: enough to know it is too large
                data = self._zlib.decompress(chunk, self.max_bytes - len(self.body) + 1)
            except zlib.error:
                raise UrlRejected("image URL sent a corrupt compressed body", code="image_url_unreachable") from None
        self.body += data
        if len(self.body) > self.max_bytes:
            raise UrlRejected(f"image at the URL is larger than the {self.max_bytes}-byte limit", status=413,
                              code="image_too_large")


class UrlFetcher:
    def __init__(self, policy: UrlPolicy, *, max_bytes: int, timeout_s: float, max_redirects: int,
                 max_concurrent: int, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self.resolver = resolver
        self._slots = asyncio.Semaphore(max_concurrent)

    async def fetch(self, url: str) -> bytes:
        """The bytes at `url`, or UrlRejected (400 blocked/unreachable, 413 too large)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._slots:
                    return await self._fetch(url)
        except UrlRejected:
            raise
        except TimeoutError:
            raise UrlRejected(f"image URL did not answer within {self.timeout_s:g} s",
                              code="image_url_unreachable") from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: URLs the client library refuses
            raise UrlRejected(f"image URL could not be fetched ({type(exc).__name__})",
                              code="image_url_unreachable") from None

    async def _vet(self, url: str, resolver: _VettedResolver) -> Target:
        target = self.policy.check_url(url)  # host lists; IP literals are checked here too
        if target.ip is None and target.host not in resolver.vetted:
            try:
                addresses = await self.resolver(target.host, target.port)
            except OSError:
                raise UrlRejected(f"image URL host {target.host!r} did not resolve",
                                  code="image_url_unreachable") from None
            resolver.vetted[target.host] = self.policy.check_addresses(target, addresses)
        return target

    async def _fetch(self, url: str) -> bytes:
        resolver = _VettedResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, force_close=True, limit=1)
        headers = {"Accept": "image/*", "Accept-Encoding": "gzip, deflate", "User-Agent": f"clip-serve/{__version__}"}
        async with aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False,
                                         cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(None),
                                         headers=headers) as session:
            for _ in range(self.max_redirects + 1):
                target = await self._vet(url, resolver)
                async with session.get(target.url, allow_redirects=False) as response:
                    if response.status in REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise UrlRejected("image URL redirected without a Location", code="image_url_unreachable")
                        url = urljoin(target.url, location)
                        continue
                    if response.status != 200:
                        raise UrlRejected(f"image URL answered HTTP {response.status}", code="image_url_unreachable")
                    return await self._read(response)
        raise UrlRejected(f"image URL redirected more than {self.max_redirects} times")

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        encoding = response.headers.get("Content-Encoding", "")
        declared = response.content_length
        if declared is not None and not encoding and declared > self.max_bytes:
            raise UrlRejected(f"image at the URL is larger than the {self.max_bytes}-byte limit", status=413,
                              code="image_too_large")
        decoder = _Decoder(encoding, self.max_bytes)
        async for chunk in response.content.iter_chunked(CHUNK):
            decoder.feed(chunk)
        if not decoder.body:
            raise UrlRejected("image URL returned an empty body", code="image_url_unreachable")
        return bytes(decoder.body)


def fetcher_from_config(config: AppConfig, resolver: Resolver = system_resolver) -> UrlFetcher | None:
    """The router's fetcher, or None while `image_urls.enabled` is off."""
    urls = config.image_urls
    if not urls.enabled:
        return None
    policy = UrlPolicy(urls.allow_hosts, urls.deny_hosts, urls.allow_private_networks)
    return UrlFetcher(policy, max_bytes=min(urls.max_bytes, config.limits.max_image_bytes), timeout_s=urls.timeout_s,
                      max_redirects=urls.max_redirects, max_concurrent=urls.max_concurrent_fetches, resolver=resolver)
