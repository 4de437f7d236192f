"""Turn the many OpenAI/infinity/Jina input spellings into typed items.

Every rejection names the exact `param` (e.g. `input[2].image_url.url`) so clients can
find the bad element in a long list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Union

from .errors import APIError


@dataclass(frozen=True)
class TextItem:
    text: str
    param: str


@dataclass(frozen=True)
class TokensItem:
    ids: tuple[int, ...]
    param: str


@dataclass(frozen=True)
class ImageItem:
    """An image reference as sent: data URI, raw base64 or URL. Decoding happens later."""

    source: str
    param: str


Item = Union[TextItem, TokensItem, ImageItem]
Modality = Literal["text", "image"]


def _is_int_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(type(v) is int for v in value)


def _image_from_part(part: dict[str, Any], param: str) -> ImageItem:
    image_url = part.get("image_url")
    if isinstance(image_url, dict):
        url = image_url.get("url")
        where = f"{param}.image_url.url"
    else:
        url = image_url
        where = f"{param}.image_url"
    if not isinstance(url, str) or not url:
        raise APIError.invalid("an image_url part needs a non-empty string url", param=where)
    return ImageItem(url, where)


def parse_item(value: Any, param: str, modality: Modality) -> Item:
    """One element of `input` (or a query/document): string, token ids, or an object."""
    if isinstance(value, str):
        if not value:
            raise APIError.invalid("input strings must not be empty", param=param)
        return ImageItem(value, param) if modality == "image" else TextItem(value, param)
    if _is_int_list(value):
        return TokensItem(tuple(value), param)
    if isinstance(value, dict):
        kind = value.get("type")
        if kind == "image_url" or (kind is None and "image_url" in value):
            return _image_from_part(value, param)
        if kind in (None, "text") and "text" in value and "image" not in value:
            text = value["text"]
            if not isinstance(text, str) or not text:
                raise APIError.invalid("`text` must be a non-empty string", param=f"{param}.text")
            return TextItem(text, f"{param}.text")
        if kind in (None, "image") and "image" in value and "text" not in value:
            image = value["image"]
            if not isinstance(image, str) or not image:
                raise APIError.invalid("`image` must be a non-empty string (data URI or base64)", param=f"{param}.image")
            return ImageItem(image, f"{param}.image")
        raise APIError.invalid(
            "an input object must be {'text': ...}, {'image': ...} or {'type': 'image_url', 'image_url': {'url': ...}}",
            param=param,
        )
    if isinstance(value, list) and not value:
        raise APIError.invalid("token arrays must not be empty", param=param)
    raise APIError.invalid(
        f"unsupported input of type {type(value).__name__}: expected a string, an array of token ids or an object",
        param=param,
    )


def parse_input(value: Any, modality: Modality = "text", param: str = "input") -> list[Item]:
    """The `input` field of /v1/embeddings: a string, a token array, or a list of items."""
    if isinstance(value, str):
        return [parse_item(value, param, modality)]
    if not isinstance(value, list):
        raise APIError.invalid("`input` must be a string or an array", param=param)
    if not value:
        raise APIError.invalid("`input` must not be empty", param=param)
    if _is_int_list(value):  # one pre-tokenized text, as OpenAI accepts
        return [TokensItem(tuple(value), param)]
    return [parse_item(v, f"{param}[{i}]", modality) for i, v in enumerate(value)]
