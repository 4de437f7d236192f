"""The real `huggingface_hub.InferenceClient`, unchanged, against POST /models/{model_id},
and the real `openai` client next to it on the same service."""

from __future__ import annotations

import numpy as np
import pytest
from support.helpers import HUB_ID, b64, cosine, encode, natural_image

IMAGE = encode(natural_image(80, 64, seed=70))
LABELS = ["a cat", "a dog", "a car", "a tree"]


@pytest.fixture(scope="module")
def client_may_post():
    """huggingface_hub refuses every request, even to a local URL, while HF_HUB_OFFLINE=1
    (the suite's guard against downloads). Lift it in this test process only: the
    replicas keep theirs, and this client posts only to the service under test."""
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield


@pytest.fixture(scope="module")
def hf_client(server, client_may_post):
    from huggingface_hub import InferenceClient

    return InferenceClient(model=f"{server}/models/{HUB_ID}")


def test_zero_shot_image_classification_default_template(hf_client, reference):
    out = hf_client.zero_shot_image_classification(IMAGE, candidate_labels=LABELS)
    expected = reference.zero_shot([IMAGE], [f"This is a photo of {label}." for label in LABELS])[0]
    assert [o.label for o in out] == [LABELS[j] for j in np.argsort(-expected, kind="stable")]
    assert np.abs(np.array([o.score for o in out]) - np.sort(expected)[::-1]).max() <= 1e-5


def test_zero_shot_image_classification_custom_template(hf_client, reference):
    out = hf_client.zero_shot_image_classification(IMAGE, candidate_labels=LABELS, hypothesis_template="art of {}")
    expected = reference.zero_shot([IMAGE], [f"art of {label}" for label in LABELS])[0]
    scores = {o.label: o.score for o in out}
    assert np.abs(np.array([scores[label] for label in LABELS]) - expected).max() <= 1e-5
    assert abs(sum(scores.values()) - 1) <= 1e-5


def test_hf_route_errors(client, server, client_may_post):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as exc:
        InferenceClient(model=f"{server}/models/nobody/nothing").zero_shot_image_classification(
            IMAGE, candidate_labels=LABELS)
    assert exc.value.response.status_code == 404
    r = client.post(f"/models/{HUB_ID}", json={"inputs": b64(IMAGE), "parameters": {"candidate_labels": ["a", "a"]}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "parameters.candidate_labels[1]"
    r = client.post(f"/models/{HUB_ID}", json={"inputs": b64(IMAGE),
                                               "parameters": {"candidate_labels": ["a", "b"], "hypothesis_template": "x"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "parameters.hypothesis_template"


def test_openai_client_beside_it(server, reference):
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    out = client.embeddings.create(model=HUB_ID, input=[{"image": b64(IMAGE)}, "a cat"])
    assert cosine(out.data[0].embedding, reference.image(IMAGE)) >= 0.9999
    assert cosine(out.data[1].embedding, reference.texts(["a cat"])[0]) >= 0.9999
    # The SDK's generic POST reaches the classify endpoint too.
    body = client.post("/classify", cast_to=object, body={"model": HUB_ID, "input": [{"image": b64(IMAGE)}],
                                                          "labels": LABELS})
    assert body["data"][0]["prediction"] in LABELS
