"""Image decoding and preprocessing: limits, formats, and pixel parity with transformers."""

from __future__ import annotations

import io

import numpy as np
import pytest
from support.helpers import b64, data_uri, encode, natural_image
from PIL import Image

from deployments.preprocess.image_spec import ImageSpec
from deployments.preprocess.images import (
    ImageError,
    ImageLimits,
    decode_image_source,
    open_rgb,
    prepare_image,
    resize_and_crop,
)

LIMITS = ImageLimits()


def test_spec_parses_old_new_and_nested_spellings():
    old = ImageSpec.from_preprocessor_config({"size": 224, "crop_size": 224, "resample": 3})
    new = ImageSpec.from_preprocessor_config({"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224}})
    nested = ImageSpec.from_preprocessor_config({"image_processor": {"size": {"shortest_edge": 224},
                                                                     "crop_size": {"height": 224, "width": 224}}})
    assert old == new == nested and old.input_hw == (224, 224)
    squash = ImageSpec.from_preprocessor_config({"size": {"height": 336, "width": 336}, "do_center_crop": False})
    assert squash.input_hw == (336, 336) and squash.shortest_edge is None
    assert ImageSpec.from_dict(squash.to_dict()) == squash


@pytest.mark.parametrize("size", [(97, 61), (61, 97), (32, 32), (20, 13), (300, 40)])
def test_pixels_match_transformers_processor(reference, model_dir, size):
    from deployments.backends.checkpoint import Checkpoint

    spec = Checkpoint.open(str(model_dir)).image_spec()
    img = natural_image(*size, seed=sum(size))
    ours = resize_and_crop(img, spec).astype(np.float32)
    scale, bias = spec.channel_affine()
    ours = ours * np.array(scale, dtype=np.float32) + np.array(bias, dtype=np.float32)
    theirs = reference.processor(images=img, return_tensors="np").pixel_values[0].transpose(1, 2, 0)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_sources_data_uri_raw_and_urlsafe_base64():
    raw = encode(natural_image(40, 30), "PNG")
    assert decode_image_source(data_uri(raw), LIMITS) == raw
    assert decode_image_source(b64(raw), LIMITS) == raw
    import base64

    assert decode_image_source(base64.urlsafe_b64encode(raw).decode().rstrip("="), LIMITS) == raw


@pytest.mark.parametrize(
    "source, message",
    [
        ("https://example.com/cat.jpg", "URLs are not enabled"),
        ("data:image/png,notbase64", "must be base64"),
        ("%%%not base64%%%", "neither a data URI nor valid base64"),
        ("", "image is empty"),
        ("data:image/png;base64,", "image is empty"),
    ],
)
def test_bad_sources_are_refused(source, message):
    with pytest.raises(ImageError, match=message):
        decode_image_source(source, LIMITS)


def test_oversize_source_is_413_before_decoding():
    with pytest.raises(ImageError) as exc:
        decode_image_source("A" * 4000, ImageLimits(max_image_bytes=1000))
    assert exc.value.status == 413


def test_pixel_bomb_is_refused_before_decode():
    bomb = encode(Image.new("L", (6000, 6000)), "PNG")  # compresses to a few KB
    assert len(bomb) < 100_000
    with pytest.raises(ImageError, match="pixel limit") as exc:
        open_rgb(bomb, ImageSpec(224, None, (224, 224)), ImageLimits(max_image_pixels=10_000_000))
    assert exc.value.status == 413


@pytest.mark.parametrize("payload", [b"GIF89a", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"hello world"])
def test_corrupt_images_are_refused(payload):
    with pytest.raises(ImageError):
        open_rgb(payload, ImageSpec(224, None, (224, 224)), LIMITS)


def test_truncated_jpeg_is_refused():
    data = encode(natural_image(200, 150), "JPEG")
    with pytest.raises(ImageError):
        open_rgb(data[: len(data) // 2], ImageSpec(224, None, (224, 224)), LIMITS)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    out = open_rgb(encode(rgba, "PNG"), ImageSpec(8, None, (8, 8)), LIMITS)
    assert out.mode == "RGB" and out.getpixel((3, 3)) == (255, 255, 255)
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert open_rgb(encode(pal, "PNG", transparency=0), ImageSpec(8, None, (8, 8)), LIMITS).getpixel((0, 0)) == (255,) * 3


def test_exif_orientation_is_applied():
    img = natural_image(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    out = open_rgb(encode(img, "JPEG", exif=exif), ImageSpec(20, None, (20, 20)), LIMITS)  # no draft downscale
    assert out.size == (20, 40)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    arr = np.full((8, 8), 32768, dtype=np.uint16)
    img = Image.fromarray(arr)
    out = open_rgb(encode(img, "PNG"), ImageSpec(8, None, (8, 8)), LIMITS)
    assert out.getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_and_animated_gif_first_frame():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    assert open_rgb(encode(cmyk, "JPEG"), ImageSpec(8, None, (8, 8)), LIMITS).getpixel((8, 8))[0] > 200
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    first = open_rgb(buf.getvalue(), ImageSpec(8, None, (8, 8)), LIMITS)
    assert first.getpixel((8, 8))[0] > 200 and first.getpixel((8, 8))[2] < 50


def test_jpeg_draft_only_for_large_images():
    spec = ImageSpec(32, None, (32, 32))
    small = encode(natural_image(60, 50), "JPEG")
    assert open_rgb(small, spec, LIMITS).size == (60, 50)  # < 2x target: decoded in full
    large = encode(natural_image(640, 480), "JPEG")
    decoded = open_rgb(large, spec, LIMITS)
    assert decoded.size == (80, 60)  # DCT-domain 1/8, still >= the target's short side
    assert prepare_image(large, spec, LIMITS).shape == (32, 32, 3)
