"""The official `openai` Python client, unchanged, against the service."""

from __future__ import annotations

import numpy as np
import pytest
from support.helpers import HUB_ID, b64, cosine, data_uri, encode, natural_image

PNG = encode(natural_image(64, 48, seed=3))


@pytest.fixture(scope="module")
def openai_client(server):
    import openai

    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_text_default_base64_and_float(openai_client, reference):
    texts = ["a photo of a cat", "a photo of a dog"]
    default = openai_client.embeddings.create(model=HUB_ID, input=texts)  # SDK asks for base64
    floats = openai_client.embeddings.create(model=HUB_ID, input=texts, encoding_format="float")
    expected = reference.texts(texts)
    for d, f, e in zip(default.data, floats.data, expected):
        assert cosine(d.embedding, e) >= 0.9999
        np.testing.assert_allclose(d.embedding, f.embedding, rtol=0, atol=1e-7)
    assert default.usage.prompt_tokens == sum(len(reference.token_ids(t)) for t in texts)
    assert default.model == HUB_ID


def test_images_as_input_items(openai_client, reference):
    items = [{"type": "image_url", "image_url": {"url": data_uri(PNG)}}, {"image": b64(PNG)}, "a cat"]
    out = openai_client.embeddings.create(model=HUB_ID, input=items)
    assert cosine(out.data[0].embedding, reference.image(PNG)) >= 0.9999
    assert cosine(out.data[1].embedding, reference.image(PNG)) >= 0.9999
    assert cosine(out.data[2].embedding, reference.texts(["a cat"])[0]) >= 0.9999


def test_images_via_extra_body(openai_client, reference):
    out = openai_client.embeddings.create(model=HUB_ID, input=[b64(PNG)], extra_body={"modality": "image"})
    assert cosine(out.data[0].embedding, reference.image(PNG)) >= 0.9999


def test_errors_surface_as_sdk_exceptions(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError) as exc:
        openai_client.embeddings.create(model="missing/model", input="x")
    assert exc.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as exc:
        openai_client.embeddings.create(model=HUB_ID, input=["x" * 10, "word " * 100], extra_body={"truncate": False})
    assert exc.value.body["param"] == "input[1]"
