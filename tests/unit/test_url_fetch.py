"""The SSRF-safe fetcher against a local image server (127.0.0.1 only), with DNS stubbed:
blocked addresses are refused before any connection, redirects are re-checked, bodies are
capped after decompression, and one deadline bounds everything. A socket audit hook
proves that nothing but loopback was ever connected to and no real lookup was made."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.image_server import CAT_PNG, ImageServer
from support.net_guard import loopback_only

from deployments.preprocess.url_policy import UrlPolicy, UrlRejected
from deployments.serving.url_fetch import UrlFetcher


@pytest.fixture(scope="module")
def images():
    with ImageServer() as server:
        yield server


class StubDNS:
    """Answers from a table; records what was asked. Unknown names do not resolve."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise OSError(f"{host}: no such host")
        return self.table[host]


DNS = {
    "images.test": ["127.0.0.1"],
    "twice.test": ["127.0.0.1", "::1"],
    "public.test": ["93.184.216.34"],
    "mixed.test": ["93.184.216.34", "10.1.2.3"],  # one public answer must not launder a private one
    "metadata.test": ["127.0.0.1", "169.254.169.254"],
    "mapped.test": ["::ffff:169.254.169.254"],
    "cgnat.test": ["100.64.0.7"],
    "other.test": ["127.0.0.2"],  # a name for an address the deny tests list
    "mapped-other.test": ["::ffff:127.0.0.2"],
    "laundered.test": ["127.0.0.1", "::ffff:7f00:2"],  # one listed answer among good ones
}


def fetcher(private: bool = True, allow=(), deny=(), max_bytes: int = 2**20, timeout_s: float = 3.0,
            max_redirects: int = 3, dns: StubDNS | None = None) -> UrlFetcher:
    return UrlFetcher(UrlPolicy(allow, deny, private), max_bytes=max_bytes, timeout_s=timeout_s,
                      max_redirects=max_redirects, max_concurrent=4, resolver=dns or StubDNS(DNS))


def fetch(f: UrlFetcher, url: str) -> bytes:
    with loopback_only() as seen:
        try:
            return asyncio.run(f.fetch(url))
        finally:
            assert all(host in ("127.0.0.1", "::1") for host in seen["connects"]), seen
            assert seen["lookups"] in ([], ["127.0.0.1"], ["::1"]) or all(
                h in ("127.0.0.1", "::1", None) for h in seen["lookups"]), seen  # never a real DNS lookup


def refused(f: UrlFetcher, url: str, status: int = 400, code: str | None = None) -> UrlRejected:
    with pytest.raises(UrlRejected) as exc:
        fetch(f, url)
    assert exc.value.status == status, exc.value
    if code:
        assert exc.value.code == code, exc.value
    return exc.value


def test_fetches_through_a_vetted_hostname_keeping_its_host_header(images):
    dns = StubDNS(DNS)
    assert fetch(fetcher(dns=dns), images.url("/cat.png", "images.test")) == CAT_PNG
    assert dns.asked == ["images.test"]  # resolved once
    assert images.host_headers[-1] == f"images.test:{images.port}"
    assert fetch(fetcher(), images.url("/cat.png", "twice.test")) == CAT_PNG
    assert fetch(fetcher(), images.url("/gzip.png", "images.test")) == CAT_PNG  # decompressed here


@pytest.mark.parametrize("host", [
    "127.0.0.1", "2130706433", "0x7f.1", "017700000001", "127.1", "0x7f000001", "[::1]", "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]", "[2002:7f00:1::]", "[64:ff9b::7f00:1]", "images.test", "localhost.",
])
def test_loopback_in_any_spelling_is_refused_by_default(images, host):
    dns = StubDNS({**DNS, "localhost": ["127.0.0.1"]})
    before = dict(images.hits)
    refused(fetcher(private=False, dns=dns), images.url("/cat.png", host), code="image_url_blocked")
    assert images.hits == before  # no request reached the server


@pytest.mark.parametrize("url", [
    "http://10.0.0.1/a.png", "http://192.168.1.1/a.png", "http://172.16.5.4/a.png", "http://100.64.0.1/a.png",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[fe80::1]/", "http://0.0.0.0/",
    "http://224.0.0.1/", "http://255.255.255.255/", "http://mixed.test/a.png", "http://cgnat.test/a.png",
    "http://[::10.0.0.1]/", "http://0xa000001/", "http://012.0.0.1/",
])
def test_private_and_special_addresses_are_refused(url):
    refused(fetcher(private=False), url, code="image_url_blocked")


@pytest.mark.parametrize("url", ["http://169.254.169.254/", "http://metadata.test/", "http://mapped.test/",
                                 "http://[::ffff:a9fe:a9fe]/", "http://0/", "http://[::]/"])
def test_metadata_and_unspecified_stay_blocked_even_with_private_networks(url):
    refused(fetcher(private=True), url, code="image_url_blocked")


@pytest.mark.parametrize("url, message", [
    ("ftp://images.test/cat.png", "http or https"), ("file:///etc/passwd", "http or https"),
    ("gopher://images.test/", "http or https"), ("http://user:pw@images.test/", "credentials"),
    ("http://images.test:0/", "port"), ("http://[fe80::1%25lo]/", "zone"), ("http://a\\b/", "backslash"),
    ("http://1.2.3.4.5/", "numeric host"), ("http://nowhere.test/", "did not resolve"),
])
def test_malformed_urls_are_refused(url, message):
    assert message in str(refused(fetcher(), url))


def test_allow_and_deny_lists_are_checked_before_dns(images):
    dns = StubDNS({**DNS, "cdn.images.test": ["127.0.0.1"]})
    only_images = fetcher(allow=["images.test"], dns=dns)
    assert fetch(only_images, images.url("/cat.png", "images.test")) == CAT_PNG
    refused(only_images, images.url("/cat.png", "cdn.images.test"))
    assert "cdn.images.test" not in dns.asked
    subdomains = fetcher(allow=["*.images.test"], dns=dns)
    assert fetch(subdomains, images.url("/cat.png", "cdn.images.test")) == CAT_PNG
    refused(subdomains, images.url("/cat.png", "images.test"))  # the apex is not a subdomain
    denied = fetcher(allow=["*.images.test"], deny=["cdn.images.test"], dns=dns)
    assert "denied" in str(refused(denied, images.url("/cat.png", "cdn.images.test")))
    # the literal allowlisted is the address, whatever its spelling
    literal = fetcher(allow=["127.0.0.1"])
    assert fetch(literal, images.url("/cat.png", "2130706433")) == CAT_PNG
    # an allowlisted host is still refused on loopback unless private networks are allowed
    refused(fetcher(private=False, allow=["images.test"]), images.url("/cat.png", "images.test"))


class LocalServerOnly(UrlPolicy):
    """The default rules (private networks refused), except that the local test server's
    own address is let through: the explicit test-only allowance that lets a redirect
    start on 127.0.0.1 and be judged by the production rules from the next hop on."""

    def check_addresses(self, target, addresses):
        addresses = list(addresses)
        if addresses == ["127.0.0.1"] and target.host == "images.test":
            return addresses
        return super().check_addresses(target, addresses)


@pytest.mark.parametrize("target", [
    "http://10.0.0.1/a.png", "http://169.254.169.254/latest/meta-data/", "http://2130706433/", "http://mixed.test/",
    "file:///etc/passwd", "http://[::ffff:10.0.0.1]/", "http://localhost/", "http://cgnat.test/",
])
def test_redirects_into_blocked_space_are_refused(images, target):
    dns = StubDNS({**DNS, "localhost": ["127.0.0.1"]})
    f = UrlFetcher(LocalServerOnly(), max_bytes=2**20, timeout_s=3, max_redirects=3, max_concurrent=2, resolver=dns)
    assert fetch(f, images.url("/cat.png", "images.test")) == CAT_PNG  # the first hop itself is fine
    before = dict(images.hits)
    refused(f, images.url(f"/redirect?to={target}", "images.test"), code="image_url_blocked")
    assert images.hits == {**before, "/redirect": before.get("/redirect", 0) + 1}  # nothing after the redirect


def test_redirects_are_followed_a_bounded_number_of_times(images):
    f = fetcher(max_redirects=3)
    assert fetch(f, images.url("/chain/2", "images.test")) == CAT_PNG  # 3 redirects: /chain/2 -> 1 -> 0 -> cat
    assert "more than 3" in str(refused(f, images.url("/chain/3", "images.test")))
    relative = images.url("/redirect?to=/cat.png&status=307", "images.test")
    assert fetch(f, relative) == CAT_PNG


def test_sizes_are_capped_while_streaming_and_after_decompression(images):
    f = fetcher(max_bytes=100_000)
    started = time.monotonic()
    refused(f, images.url("/declared-big.png", "images.test"), status=413, code="image_too_large")
    assert time.monotonic() - started < 1.0  # refused on the declared length, not after reading
    refused(f, images.url("/endless.png", "images.test"), status=413, code="image_too_large")
    refused(f, images.url("/bomb.png", "images.test"), status=413, code="image_too_large")
    refused(f, images.url("/empty.png", "images.test"), code="image_url_unreachable")
    refused(f, images.url("/missing.png", "images.test"), code="image_url_unreachable")


def test_one_deadline_bounds_slow_servers(images):
    f = fetcher(timeout_s=1.0)
    for path in ("/slow-headers.png?s=5", "/slow-body.png"):
        started = time.monotonic()
        assert "did not answer within 1 s" in str(refused(f, images.url(path, "images.test")))
        assert time.monotonic() - started < 2.5


# Every way of writing 127.0.0.1 that is not its dotted quad: IPv6 forms that only spell it
# (mapped, compatible, translated, NAT64), fullwidth digits and dots (IDNA maps them to
# ASCII), and the numeric forms C resolvers accept.
LOOPBACK_ALIASES = ["[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::ffff:0:7f00:1]", "[::127.0.0.1]",
                    "[64:ff9b::7f00:1]", "１２７．０．０．１", "１２７．１", "2130706433", "0x7f.1"]


@pytest.mark.parametrize("host", LOOPBACK_ALIASES + ["images.test", "twice.test"])
def test_a_denied_address_is_refused_in_every_spelling_and_behind_every_name(images, host):
    """Private networks allowed, the image server's own address denied: nothing reaches it,
    whether the URL spells the address or names a host that resolves to it."""
    before = dict(images.hits)
    for deny in (["127.0.0.1"], ["::ffff:127.0.0.1"], ["２１３０７０６４３３"]):  # entries are normalised alike
        assert "denied" in str(refused(fetcher(private=True, deny=deny), images.url("/cat.png", host),
                                       code="image_url_blocked"))
    assert images.hits == before


@pytest.mark.parametrize("to", ["http://[::ffff:127.0.0.2]:{port}/cat.png", "http://[::ffff:7f00:2]:{port}/cat.png",
                                "http://[64:ff9b::7f00:2]:{port}/cat.png", "http://１２７．２:{port}/cat.png",
                                "http://other.test:{port}/cat.png", "http://mapped-other.test:{port}/cat.png",
                                "http://laundered.test:{port}/cat.png"])
def test_a_denied_address_is_refused_after_a_redirect_in_every_spelling(images, to):
    f = fetcher(private=True, deny=["127.0.0.2"])
    assert fetch(f, images.url("/cat.png", "images.test")) == CAT_PNG  # 127.0.0.1 itself is fine
    before = dict(images.hits)
    url = images.url(f"/redirect?to={to.format(port=images.port)}", "images.test")
    assert "denied" in str(refused(f, url, code="image_url_blocked"))
    assert images.hits == {**before, "/redirect": before.get("/redirect", 0) + 1}


def test_an_allowed_address_admits_its_literal_in_any_spelling_and_no_name(images):
    f = fetcher(private=True, allow=["::ffff:127.0.0.1"])  # stored as 127.0.0.1
    for host in ("127.0.0.1", "１２７．０．０．１", "2130706433", "0x7f.1"):
        assert fetch(f, images.url("/cat.png", host)) == CAT_PNG
    dns = StubDNS(DNS)
    for host in ("images.test", "ｉｍａｇｅｓ．ｔｅｓｔ"):  # resolves to 127.0.0.1, but names are allowed by name
        assert "allow list" in str(refused(fetcher(private=True, allow=["127.0.0.1"], dns=dns),
                                           images.url("/cat.png", host), code="image_url_blocked"))
    assert dns.asked == []  # refused before DNS
    by_name = fetcher(private=True, allow=["images.test"])
    assert fetch(by_name, images.url("/cat.png", "ｉｍａｇｅｓ．ｔｅｓｔ")) == CAT_PNG  # the same name, fullwidth
    denied = fetcher(private=True, allow=["images.test"], deny=["127.0.0.1"])
    assert "denied" in str(refused(denied, images.url("/cat.png", "images.test")))  # deny wins over a listed name
