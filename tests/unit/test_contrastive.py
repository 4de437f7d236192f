"""The contrastive objective and its helpers, on hand-built embeddings (no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deployments.jobs.contrastive import (
    MAX_LOGIT_SCALE,
    caption_groups,
    clamp_temperature,
    contrastive_loss,
    freeze_towers,
    parameter_groups,
    retrieval_accuracy,
    warmup_cosine,
)


def test_loss_is_clip_symmetric_infonce_for_unique_captions():
    torch.manual_seed(0)
    logits = torch.randn(6, 6) * 3
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    assert torch.allclose(contrastive_loss(logits), expected)
    assert torch.allclose(contrastive_loss(logits, torch.arange(6) * 7), expected)  # all groups distinct


def test_loss_rewards_alignment_and_treats_repeated_captions_as_positives():
    aligned = torch.eye(4) * 10
    assert contrastive_loss(aligned) < contrastive_loss(torch.zeros(4, 4)) < contrastive_loss(-aligned)
    # Items 0 and 1 share a caption: image 0 matching text 1 is not an error ...
    groups = torch.tensor([5, 5, 6, 7])
    swapped = aligned[[1, 0, 2, 3]]
    assert contrastive_loss(swapped, groups) < contrastive_loss(swapped) / 1.5
    # ... and the gradient no longer pushes the two repeats apart.
    cross = aligned.clone()
    cross[0, 1] = cross[1, 0] = 10
    for use_groups, pushed_apart in ((False, True), (True, False)):
        logits = cross.clone().requires_grad_(True)
        contrastive_loss(logits, groups if use_groups else None).backward()
        assert (float(logits.grad[0, 1]) > 1e-3) is pushed_apart


def test_caption_groups_are_stable_and_ignore_case_and_spacing():
    a, b, c = caption_groups(["A red  circle", "a red circle", "a blue square"])
    assert a == b != c
    assert caption_groups(["a red circle"])[0] == a  # same id in another batch / process
    assert caption_groups(["x"]).dtype == np.int64


def test_retrieval_accuracy_counts_distinct_captions():
    text = torch.eye(3)
    groups = torch.tensor([1, 1, 2, 3])
    texts = text[[0, 0, 1, 2]]
    perfect = retrieval_accuracy(texts.clone(), texts, groups)
    assert perfect == {"i2t_top1": 1.0, "t2i_top1": 1.0}
    swapped = text[[0, 0, 2, 1]]  # images 2 and 3 look like each other's caption
    assert retrieval_accuracy(swapped, texts, groups) == {"i2t_top1": 0.5, "t2i_top1": pytest.approx(1 / 3)}


def test_schedule_warms_up_then_decays_to_zero():
    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_freezing_a_tower_and_decay_groups(model_dir):
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(model_dir)
    frozen = freeze_towers(model, ["image"])
    assert frozen == sum(p.numel() for n, p in model.named_parameters() if n.startswith(("vision_model.", "visual_projection.")))
    trainable = {id(p) for g in parameter_groups(model, 0.1) for p in g["params"]}
    assert all(id(p) not in trainable for p in model.vision_model.parameters())
    decay, no_decay = parameter_groups(model, 0.1)
    assert any(p is model.text_projection.weight for p in decay["params"])
    assert any(p is model.logit_scale for p in no_decay["params"])
    assert not any(p is model.text_model.embeddings.token_embedding.weight for p in decay["params"])
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    clamp_temperature(model)
    assert float(model.logit_scale.detach()) == pytest.approx(MAX_LOGIT_SCALE) and math.exp(MAX_LOGIT_SCALE) == pytest.approx(100)
