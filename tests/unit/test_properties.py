"""Property tests (hypothesis): whatever a client sends, decoding and request parsing either
succeed with a well-formed result or fail with the intended error type (which the router
turns into a 4xx envelope), never anything else. Also: every spelling of an IPv4 address
means that address, no IPv6 wrapper launders a blocked IPv4 address, and a deny entry
catches its address in every spelling, as a literal or as a resolved address."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from support.helpers import encode, natural_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

from deployments.preprocess.image_spec import ImageSpec
from deployments.preprocess.images import ImageError, ImageLimits, decode_image_source, open_rgb, resize_and_crop
from deployments.preprocess.url_policy import UrlPolicy, UrlRejected, address_problem, parse_url
from deployments.protocol.classify import ClassifyRequest
from deployments.protocol.embeddings import EmbeddingRequest
from deployments.protocol.errors import APIError
from deployments.protocol.inputs import ImageItem, TextItem, TokensItem, parse_input
from deployments.protocol.labels import PromptLimits, build_prompts

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = ImageLimits(max_image_bytes=2**20, max_image_pixels=2_000_000, max_aspect_ratio=20)
SPEC = ImageSpec(16, None, (16, 16))


def _seed_images() -> list[bytes]:
    img = natural_image(24, 18, seed=5)
    out = [encode(img, fmt) for fmt in ("PNG", "JPEG", "WEBP", "BMP", "TIFF")]
    out.append(encode(img.convert("P"), "GIF"))
    out.append(encode(img.convert("RGBA"), "PNG"))
    out.append(encode(Image.new("CMYK", (9, 7)), "JPEG"))
    out.append(encode(Image.new("I;16", (9, 7)), "PNG"))
    return out


SEEDS = _seed_images()


@st.composite
def mangled_images(draw) -> bytes:
    """A valid image of some format, then truncated, bit-flipped, spliced or padded."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "splice", "pad", "header"]))
        if kind == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "splice":
            other = draw(st.sampled_from(SEEDS))
            data = data[: len(data) // 2] + bytearray(other[len(other) // 2:])
        elif kind == "pad":
            data += draw(st.binary(max_size=64))
        elif kind == "header" and len(data) > 24:  # dimensions and flags live in the first bytes
            i = draw(st.integers(0, 23))
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


def _check_decoded(data: bytes) -> None:
    try:
        img = open_rgb(data, SPEC, LIMITS)
    except ImageError as exc:
        assert exc.status in (400, 413)
        return
    assert img.mode == "RGB" and img.width * img.height <= LIMITS.max_image_pixels
    assert resize_and_crop(img, SPEC).shape == (16, 16, 3)


@FAST
@given(mangled_images())
def test_any_mangled_image_decodes_or_is_refused_cleanly(data):
    _check_decoded(data)


@FAST
@given(st.binary(max_size=256))
def test_any_bytes_decode_or_are_refused_cleanly(data):
    _check_decoded(data)


@FAST
@given(st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=200).map(lambda b: "data:image/png;base64," + base64.urlsafe_b64encode(b).decode()),
    st.from_regex(r"(data:[a-z/]*(;base64)?,)?[A-Za-z0-9+/=_\- \n%]{0,80}", fullmatch=True),
))
def test_any_image_source_string_decodes_or_is_refused_cleanly(source):
    try:
        data = decode_image_source(source, LIMITS)
    except ImageError as exc:
        assert exc.status in (400, 413)
        return
    assert isinstance(data, bytes) and 0 < len(data) <= LIMITS.max_image_bytes


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                         st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.sampled_from(["text", "image", "type", "image_url", "url", "x"]),
                                                 inner, max_size=4)), max_leaves=20)


@FAST
@given(json_values, st.sampled_from(["text", "image"]))
def test_any_json_input_parses_to_items_or_a_400(value, modality):
    try:
        items = parse_input(value, modality)
    except APIError as exc:
        assert exc.status_code == 400 and exc.param and exc.param.startswith("input")
        return
    assert items and all(isinstance(it, (TextItem, TokensItem, ImageItem)) for it in items)
    for it in items:
        if isinstance(it, TextItem):
            assert isinstance(it.text, str) and it.text
        elif isinstance(it, ImageItem):
            assert isinstance(it.source, str) and it.source


request_bodies = st.dictionaries(
    st.sampled_from(["model", "input", "labels", "hypothesis_template", "templates", "top_k", "modality",
                     "truncate", "encoding_format", "dimensions", "extra"]),
    json_values, max_size=8)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_bodies)
def test_any_json_body_validates_or_is_a_validation_error(body):
    for model in (ClassifyRequest, EmbeddingRequest):
        try:
            request = model.model_validate(body)
        except ValidationError:
            continue
        try:
            parse_input(request.input, request.modality)
            if isinstance(request, ClassifyRequest):
                build_prompts(request.labels, PromptLimits(50, 10, 100, 200, 2000), hypothesis_template=request.hypothesis_template,
                              templates=request.templates)
        except APIError as exc:
            assert exc.status_code == 400


any_code_points = st.text(st.characters(blacklist_categories=()), max_size=40)  # lone surrogates included


@FAST
@given(any_code_points)
def test_strict_json_decodes_only_text_that_can_be_written_again(text):
    """What the router's body decoder (serving/json_body.py) accepts, its encoder can write."""
    import asyncio
    import json

    import orjson

    from deployments.serving.json_body import StrictJSONRequest

    body = json.dumps({"input": [text]}).encode()  # lone surrogates travel as escapes

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        decoded = asyncio.run(StrictJSONRequest({"type": "http", "method": "POST", "headers": []}, receive).json())
    except json.JSONDecodeError:
        assert any(0xD800 <= ord(c) <= 0xDFFF for c in text)
        return
    assert decoded == {"input": [text]}
    assert orjson.loads(orjson.dumps(decoded)) == decoded


@FAST
@given(st.lists(any_code_points, min_size=2, max_size=6), st.lists(any_code_points.map(lambda t: t + "{}"), min_size=1,
                                                                     max_size=4), st.integers(1, 60), st.integers(1, 300))
def test_prompt_sets_are_within_their_character_limits_or_refused(labels, templates, max_prompt, max_total):
    limits = PromptLimits(50, 10, 100, max_prompt, max_total)
    try:
        prompts = build_prompts(labels, limits, templates=templates)
    except APIError as exc:
        assert exc.status_code in (400, 413)
        return
    assert all(len(p) <= max_prompt for p in prompts.prompts)
    assert sum(len(p) for p in prompts.prompts) <= max_total


@FAST
@given(st.text(max_size=120) | st.from_regex(r"https?://[a-z0-9.:\[\]@%-]{0,40}(/[ -~]{0,20})?", fullmatch=True))
def test_any_url_parses_or_is_refused_cleanly(url):
    try:
        target = parse_url(url)
    except UrlRejected as exc:
        assert exc.status == 400
        return
    assert target.scheme in ("http", "https") and 0 < target.port < 65536 and target.host
    assert parse_url(target.url) == target  # normal form is stable


def spellings(ip: ipaddress.IPv4Address) -> list[str]:
    """Ways C resolvers read the same IPv4 address."""
    n = int(ip)
    a, b, c, d = ip.packed
    return [str(n), hex(n), "0" + oct(n)[2:], f"{a}.{(b << 16) | (c << 8) | d}", f"{a}.{b}.{(c << 8) | d}",
            f"{hex(a)}.{hex(b)}.{hex(c)}.{hex(d)}", f"0{oct(a)[2:]}.{b}.{c}.{d}"]


@FAST
@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_every_ipv4_spelling_is_checked_as_the_same_address(ip):
    policy = UrlPolicy()
    expected = address_problem(ip, allow_private=False)
    for spelling in spellings(ip):
        try:
            target = policy.check_url(f"http://{spelling}/")
        except UrlRejected as exc:
            assert expected is not None and expected in str(exc), (spelling, exc)
            continue
        assert expected is None and target.ip == ip, spelling


@FAST
@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address))
def test_no_ipv6_wrapper_launders_a_blocked_ipv4_address(ip):
    if address_problem(ip, allow_private=False) is None:
        return
    n = int(ip)
    wrappers = [
        ipaddress.IPv6Address((0xFFFF << 32) | n),  # mapped
        ipaddress.IPv6Address((0x2002 << 112) | (n << 80)),  # 6to4
        ipaddress.IPv6Address((0x64FF9B << 96) | n),  # NAT64
    ]
    if n > 1:
        wrappers.append(ipaddress.IPv6Address(n))  # compatible
    for wrapped in wrappers:
        assert address_problem(wrapped, allow_private=False) is not None, wrapped


@pytest.mark.parametrize("size", [(1, 60), (60, 1), (3000, 2)])
def test_aspect_ratio_bombs_are_refused_before_decoding(size):
    data = encode(Image.new("L", size), "PNG")
    with pytest.raises(ImageError, match="aspect ratio"):
        open_rgb(data, SPEC, LIMITS)
    ok = encode(Image.new("L", (40, 2)), "PNG")  # 20:1 is at the limit
    assert open_rgb(ok, SPEC, LIMITS).size == (40, 2)


def test_formats_can_be_narrowed():
    png_only = ImageLimits(formats=frozenset({"PNG"}))
    assert open_rgb(SEEDS[0], SPEC, png_only).mode == "RGB"
    with pytest.raises(ImageError, match="format JPEG is not supported"):
        open_rgb(SEEDS[1], SPEC, png_only)


FULLWIDTH = str.maketrans("0123456789.x", "０１２３４５６７８９．ｘ")


def aliases(ip: ipaddress.IPv4Address) -> list[str]:
    """URL hosts that reach, or carry, `ip`: its IPv4 spellings (ASCII and fullwidth) and
    the IPv6 addresses that spell it (mapped, translated, NAT64, compatible) or embed it (6to4)."""
    n = int(ip)
    v6 = [(0xFFFF << 32) | n, (0xFFFF << 16 << 32) | n, (0x64FF9B << 96) | n, (0x2002 << 112) | (n << 80)]
    if n > 1:
        v6.append(n)  # compatible (:: and ::1 are themselves)
    return spellings(ip) + [s.translate(FULLWIDTH) for s in spellings(ip)] + [f"[{ipaddress.IPv6Address(a)}]" for a in v6]


@FAST
@given(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address), st.sampled_from(["literal", "resolved"]))
def test_a_deny_entry_catches_its_address_in_every_spelling(ip, how):
    for entry in (str(ip), f"::ffff:{ip}", spellings(ip)[0].translate(FULLWIDTH)):
        policy = UrlPolicy(deny_hosts=[entry], allow_private_networks=True)
        for host in aliases(ip):
            if how == "resolved":  # a name whose DNS answer is that address, in IPv6 form or not
                target = policy.check_url("http://name.example/")
                address = host.strip("[]") if host.startswith("[") else str(ip)
                check = lambda: policy.check_addresses(target, ["93.184.216.34", address])  # noqa: E731
            else:
                check = lambda: policy.check_url(f"http://{host}/")  # noqa: E731
            with pytest.raises(UrlRejected, match="denied|refused") as exc:
                check()
            assert exc.value.status == 400, (entry, host)
