"""The study's networks as its released code built them (mlfoundations/imagenet-applications-transfer,
sample_train.py), on the same random weights: ConvNeXt's head pools, then normalises; SqueezeNet keeps
its conv head under --protocol paper; a binary task trained with two-class cross-entropy. The released
constructions are copied here for comparison only, each cited to its line."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torchvision

from kaggle_transfer import competitions
from kaggle_transfer.protocol import Protocol
from kaggle_transfer.training.builders import build_loss
from kaggle_transfer.training.models import Backbone, Head, build_model

PAPER = Protocol("paper", imagenet_stats=True)  # ImageNet statistics, RGB: the comparison's input side
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def released_input(x: torch.Tensor) -> torch.Tensor:
    """The released loaders' ToTensor() then Normalize(mean, std)."""
    return (x.float() / 255 - MEAN) / STD


def test_convnext_pools_then_normalises_as_timms_own_head():
    torch.manual_seed(0)
    # sample_train.py: net = timm.create_model('convnext_tiny', pretrained=pretrained, num_classes=num_classes)
    released = timm.create_model("convnext_tiny", num_classes=5).eval()
    ours = build_model("convnext_tiny", 5, size=64, proto=PAPER).eval()
    state = released.state_dict()
    ours.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")}, strict=False)
    with torch.no_grad():
        released.head.norm.weight.normal_(1, 0.5)  # a trained norm is not the identity
        released.head.norm.bias.normal_(0, 0.5)
    ours.pooled_norm.load_state_dict(released.head.norm.state_dict())
    ours.head.load_state_dict(released.head.fc.state_dict())
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        want = released(released_input(x))
        got = ours(x)
        # what kt built before: the norm on every position, then the pool
        features = released.forward_features(released_input(x))
        per_position = released.head.fc(released.head.norm(features).mean(dim=(2, 3)))
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert (per_position - want).abs().max() > 1e-2  # so the comparison can tell the two apart


def test_a_timm_checkpoint_fills_convnexts_pooled_norm(tmp_path):
    source = timm.create_model("convnext_tiny", num_classes=0)
    with torch.no_grad():
        source.head.norm.weight.uniform_(0.5, 2.0)
    torch.save(source.state_dict(), tmp_path / "convnext.pt")
    ours = build_model("convnext_tiny", 3, size=64, backbone=Backbone(weights=str(tmp_path / "convnext.pt")))
    assert torch.equal(ours.pooled_norm.weight, source.head.norm.weight)


def test_squeezenet_keeps_its_conv_head_under_the_paper_protocol():
    torch.manual_seed(0)
    # sample_train.py: net = torchvision.models.squeezenet1_1(pretrained=pretrained)
    #                  net.classifier[1] = nn.Conv2d(512, num_classes, kernel_size=(1,1), stride=(1,1))
    released = torchvision.models.squeezenet1_1()
    released.classifier[1] = nn.Conv2d(512, 5, kernel_size=(1, 1), stride=(1, 1))
    released.eval()
    ours = build_model("tv:squeezenet1_1", 5, size=64, proto=PAPER).eval()
    ours.backbone.load_state_dict(released.state_dict())
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(ours(x), released(released_input(x)), atol=1e-5)
        assert (ours(x) >= 0).all()  # the released head's ReLU on the logits
    kt_head = build_model("tv:squeezenet1_1", 5, size=64)  # kt's own protocol: pooled features, linear
    assert isinstance(kt_head.head, nn.Linear)
    with pytest.raises(Exception, match="dropout"):
        build_model("tv:squeezenet1_1", 5, size=64, proto=PAPER, head=Head(dropout=0.2))


def test_two_class_cross_entropy_is_bce_on_the_logit_difference():
    """SIIM-ISIC under the study's protocol: a head of two logits trained with CrossEntropyLoss; kt's
    binary task reads z1 - z0. Loss and every gradient equal the released formulation's."""
    task = competitions.get("siim_isic").task
    torch.manual_seed(0)
    ours = build_model("test_resnet", 1, size=32, head=Head(two_class=True))
    twin = build_model("test_resnet", 1, size=32, head=Head(two_class=True))
    twin.load_state_dict(ours.state_dict())
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    for smoothing in (0.0, 0.1):
        for m in (ours, twin):
            m.zero_grad()
        out = ours(x)
        assert out.shape == (6, 1)
        loss = build_loss("ce", task, smoothing)(out.squeeze(1), y.float())
        loss.backward()
        # the released: logits = net(inputs).view(-1, num_classes); nn.CrossEntropyLoss()(logits, labels)
        features = twin.backbone((x.float() - twin.mean) / twin.std)
        logits = twin.head[0](twin.pool(features).flatten(1))
        reference = nn.CrossEntropyLoss(label_smoothing=smoothing)(logits, y)
        reference.backward()
        assert loss.item() == pytest.approx(reference.item(), abs=1e-6)
        for (name, a), (_, b) in zip(ours.named_parameters(), twin.named_parameters(), strict=True):
            assert torch.allclose(a.grad, b.grad, atol=1e-6), name
        prob = torch.sigmoid(out.squeeze(1))
        assert torch.allclose(prob, logits.softmax(1)[:, 1], atol=1e-6)


def test_two_class_and_released_heads_export_with_parity(tmp_path):
    from kaggle_transfer.training.export import _export_graph, parity

    for name, model in (("two", build_model("test_resnet", 1, size=32, head=Head(two_class=True))),
                        ("sq", build_model("tv:squeezenet1_1", 5, size=64, proto=PAPER))):
        model.eval()
        size = 32 if name == "two" else 64
        example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
        _export_graph(model, (example,), tmp_path / f"{name}.onnx", 18)
        assert np.isfinite(diff := parity(model, tmp_path / f"{name}.onnx", 3, size)) and diff < 1e-4
