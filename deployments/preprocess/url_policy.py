"""Which image URLs the router may fetch: URL parsing, host lists and address checks.

No I/O here. The fetcher (serving/url_fetch.py) resolves a host once, asks
`check_addresses` about every address, and connects only to the ones that passed, so a
DNS answer cannot change between the check and the connection (DNS rebinding).

Hosts are normalised before anything is compared: IDNA first (so fullwidth digits and
dots, `１２７．１`, are read as the ASCII they map to), then lower case, no trailing dot,
and numeric IPv4 spellings that C resolvers accept (`2130706433`, `0x7f.1`,
`017700000001`, `127.1`) turned into the dotted quad they mean. An IPv6 address that is
only another spelling of an IPv4 address (mapped `::ffff:a.b.c.d`, compatible
`::a.b.c.d`, translated `::ffff:0:a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) is that IPv4
address for the allow and deny lists; those and 6to4 and Teredo addresses are checked
as the IPv4 address they carry too.

The lists hold host names and addresses. A deny entry refuses a URL whose host matches
it by name, or whose literal or any resolved address matches it (on the first URL and
every redirect). The allow list admits a name by name and a literal by address; a name
is not admitted because it resolves to an allowed address (another name on the same
address could reach another virtual host there).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable, Union
from urllib.parse import SplitResult, urlsplit

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

MAX_URL_CHARS = 4096
SCHEMES = ("http", "https")
# Instance metadata services answer credentials to anyone who asks from inside the
# cloud: blocked even when private networks are allowed.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",  # AWS ECS task metadata
    "169.254.169.253",  # AWS DNS
    "100.100.100.200",  # Alibaba Cloud
    "168.63.129.16",  # Azure wire server
    "fd00:ec2::254",  # AWS over IPv6
))
CGNAT = ipaddress.ip_network("100.64.0.0/10")
THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT, RFC 2765

_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class UrlRejected(ValueError):
    """A URL the router will not fetch; `status` is the HTTP status to answer, `code` the error code."""

    def __init__(self, message: str, status: int = 400, code: str = "image_url_blocked") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Target:
    """A parsed, normalised URL: what to connect to and what to ask for."""

    scheme: str
    host: str  # normalised: IDNA hostname, or the canonical text of an IP literal
    port: int
    path: str  # path plus query, as sent (already percent-encoded by the client)
    ip: IPAddress | None  # set when the host is an IP literal (any spelling)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        netloc = host if self.port == default else f"{host}:{self.port}"
        return f"{self.scheme}://{netloc}{self.path}"


def _legacy_ipv4_part(label: str) -> int:
    if label.startswith("0x"):
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8)  # raises for 8 and 9, as inet_aton refuses them
    return int(label)


def parse_legacy_ipv4(host: str) -> ipaddress.IPv4Address:
    """inet_aton's reading of 1 to 4 decimal/octal/hex parts (`127.1`, `0x7f000001`)."""
    labels = host.split(".")
    if not 1 <= len(labels) <= 4:
        raise ValueError(host)
    parts = [_legacy_ipv4_part(label) for label in labels]
    *head, last = parts
    if any(p > 255 for p in head) or last >= 256 ** (5 - len(parts)):
        raise ValueError(host)
    value = 0
    for p in head:
        value = value * 256 + p
    return ipaddress.IPv4Address(value * 256 ** (5 - len(parts)) + last)


def normalise_host(host: str) -> tuple[str, IPAddress | None]:
    """A URL's host as compared and connected to: (text, address if it is an IP literal)."""
    if host.startswith("[") and host.endswith("]"):
        inner = host[1:-1]
        if "%" in inner:
            raise UrlRejected("IPv6 zone identifiers are not allowed in image URLs")
        try:
            ip = ipaddress.IPv6Address(inner)
        except ValueError:
            raise UrlRejected("image URL has an invalid IPv6 address") from None
        return str(ip), ip
    if not host:
        raise UrlRejected("image URL has no host")
    # IDNA before anything else: it maps fullwidth digits and the ideographic dots to ASCII,
    # as every resolver and HTTP client downstream would, so `１２７．１` is read as 127.1.
    try:
        name = host.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError):
        raise UrlRejected("image URL has an invalid host name") from None
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise UrlRejected("image URL has no host")
    if all(_NUMERIC_LABEL.match(label) for label in name.split(".")):
        try:
            ip4 = parse_legacy_ipv4(name)
        except ValueError:
            raise UrlRejected("image URL has an invalid numeric host") from None
        return str(ip4), ip4
    if len(name) > 253 or not all(_HOST_LABEL.match(label) for label in name.split(".")):
        raise UrlRejected("image URL has an invalid host name")
    return name, None


def _split(url: str) -> SplitResult:
    if len(url) > MAX_URL_CHARS:
        raise UrlRejected(f"image URL is longer than {MAX_URL_CHARS} characters")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        raise UrlRejected("image URL contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise UrlRejected("image URL cannot be parsed") from None
    return parts


def parse_url(url: str) -> Target:
    """Parse and normalise an image URL; refuses other schemes, credentials and odd hosts."""
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise UrlRejected(f"image URLs must use http or https, not {scheme or 'no scheme'!r}")
    if "@" in parts.netloc:
        raise UrlRejected("image URLs must not contain credentials (user@host)")
    netloc = parts.netloc
    if netloc.startswith("["):
        raw_host = netloc[: netloc.find("]") + 1]
    else:
        raw_host = netloc.split(":", 1)[0]
    host, ip = normalise_host(raw_host)
    port = parts.port if parts.port is not None else (443 if scheme == "https" else 80)
    if not 0 < port < 65536:
        raise UrlRejected("image URL has an invalid port")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port, path, ip)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address routes to or carries (6to4, Teredo, NAT64, compatible,
    translated)."""
    out = []
    if ip.sixtofour is not None:
        out.append(ip.sixtofour)
    if ip.teredo is not None:
        out.extend(ip.teredo)  # (server, client)
    if any(ip in net for net in NAT64) or ip in IPV4_TRANSLATED or (ip in IPV4_COMPATIBLE and int(ip) > 1):
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def canonical_address(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address merely spells (mapped, compatible, translated,
    NAT64's well-known prefix), else `ip` itself: what the allow and deny lists compare."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64[0] or ip in IPV4_TRANSLATED or (ip in IPV4_COMPATIBLE and int(ip) > 1):
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_problem(ip: IPAddress, allow_private: bool) -> str | None:
    """Why the router must not connect to `ip`, or None. Private ranges (loopback,
    RFC 1918, link-local, CGNAT, unique-local) pass only with `allow_private`."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # the kernel connects to the IPv4 address itself
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates += embedded_ipv4(ip)
    for address in candidates:
        if address in METADATA_ADDRESSES:
            return "a cloud metadata address"
        if address.is_multicast:
            return "a multicast address"
        if address.is_unspecified or address in THIS_NETWORK:
            return "an unspecified address"
        if isinstance(address, ipaddress.IPv4Address) and address == ipaddress.IPv4Address("255.255.255.255"):
            return "the broadcast address"
        if allow_private:
            continue
        if address.is_loopback:
            return "a loopback address"
        if address.is_link_local:
            return "a link-local address"
        if address in CGNAT:
            return "a shared (CGNAT) address"
        if address.is_private:
            return "a private address"
        if address.is_reserved or not address.is_global:
            return "a reserved or non-public address"
    return None


def normalise_host_pattern(pattern: str) -> str:
    """A config entry: `example.com` (exactly that host), `*.example.com` or
    `.example.com` (its subdomains), or an IP address in any spelling (kept as the
    canonical address: `::ffff:127.0.0.2` and `0x7f.2` both become `127.0.0.2`)."""
    text = pattern.strip().lower()
    wildcard = text.startswith(("*.", "."))
    body = text[2:] if text.startswith("*.") else text[1:] if text.startswith(".") else text
    host, ip = normalise_host(f"[{body}]" if ":" in body else body)
    if wildcard and ip is not None:
        raise ValueError(f"{pattern!r}: a wildcard needs a host name, not an address")
    if ip is not None:
        return str(canonical_address(ip))
    return "." + host if wildcard else host


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """Normalised `host` against normalised patterns (exact, or `.suffix` for subdomains)."""
    return any(host.endswith(p) if p.startswith(".") else host == p for p in patterns)


class HostList:
    """`allow_hosts` or `deny_hosts`: host names (exact or `.suffix`) and canonical addresses."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(normalise_host_pattern(p) for p in patterns)
        self.names: list[str] = []
        self.addresses: set[IPAddress] = set()
        for p in self.patterns:
            try:
                self.addresses.add(ipaddress.ip_address(p))
            except ValueError:
                self.names.append(p)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def has_name(self, host: str) -> bool:
        return host_matches(host, self.names)

    def has_address(self, ip: IPAddress, *, carried: bool = False) -> bool:
        """`ip` or the IPv4 address it spells is listed; `carried`: also any IPv4 address
        it routes to or carries (6to4, Teredo): for the deny list, which errs on refusing."""
        if ip in self.addresses or canonical_address(ip) in self.addresses:
            return True
        return carried and isinstance(ip, ipaddress.IPv6Address) and any(
            a in self.addresses for a in embedded_ipv4(ip))


class UrlPolicy:
    """Host allow/deny lists plus the address rules, as configured in `image_urls:`."""

    def __init__(self, allow_hosts: Iterable[str] = (), deny_hosts: Iterable[str] = (),
                 allow_private_networks: bool = False) -> None:
        self.allow = HostList(allow_hosts)
        self.deny = HostList(deny_hosts)
        self.allow_private_networks = allow_private_networks

    def check_url(self, url: str) -> Target:
        """Parse `url` and check what can be checked without DNS: an IP literal completely,
        a name against the lists' names."""
        target = parse_url(url)
        if target.ip is not None:
            self.check_addresses(target, [str(target.ip)])
            return target
        if self.deny.has_name(target.host):
            raise UrlRejected(f"image URL host {target.host!r} is denied on this server")
        if self.allow and not self.allow.has_name(target.host):
            raise UrlRejected(f"image URL host {target.host!r} is not on this server's allow list")
        return target

    def check_addresses(self, target: Target, addresses: Iterable[str]) -> list[str]:
        """Every address a host resolved to (or its literal) must pass the deny list and the
        address rules, and a literal the allow list, or the URL is refused: an attacker's
        DNS answer that mixes a public and a private address must not get through. The
        message never names a resolved address (internal DNS stays private)."""
        literal = target.ip is not None
        vetted: list[str] = []
        for text in addresses:
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                raise UrlRejected(f"image URL host {target.host!r} resolved to an unusable address") from None
            if self.deny.has_address(ip, carried=True):
                where = "is" if literal else "resolves to an address"
                raise UrlRejected(f"image URL host {target.host!r} {where} denied on this server")
            if literal and self.allow and not self.allow.has_address(ip):
                raise UrlRejected(f"image URL host {target.host!r} is not on this server's allow list")
            problem = address_problem(ip, self.allow_private_networks)
            if problem is not None:
                raise UrlRejected(f"image URL host {target.host!r} resolves to {problem}; refused")
            vetted.append(str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip))
        if not vetted:
            raise UrlRejected(f"image URL host {target.host!r} did not resolve", code="image_url_unreachable")
        return vetted
