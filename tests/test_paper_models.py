"""Every model of the study builds at the study's 256 px from the library it came from, trains one step
and (one per family) exports to ONNX with parity. Random weights: no download."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kaggle_transfer.study.archs import PAPER19
from kaggle_transfer.training.models import build_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("arch", [a.arch for a in PAPER19], ids=[a.paper_name for a in PAPER19])
def test_every_paper_model_trains_a_step_at_256(arch):
    torch.manual_seed(0)
    model = build_model(arch.split(".")[0] if not arch.startswith("tv:") else arch, 5, size=256)
    x = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    assert model.head.weight.grad is not None and torch.isfinite(model.head.weight.grad).all()
    assert any(p.grad is not None for p in model.backbone.parameters())  # the backbone trains too


@pytest.mark.parametrize("arch", ["tv:mobilenet_v3_small", "deit_tiny_patch16_224", "efficientnet_b0"])
def test_one_model_per_family_exports_with_parity(arch, tmp_path):
    from kaggle_transfer.training.export import _export_graph, parity

    torch.manual_seed(0)
    model = build_model(arch, 1, size=256).eval()
    example = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    _export_graph(model, (example,), tmp_path / "m.onnx", 18)
    diff = parity(model, tmp_path / "m.onnx", 3, 256)
    assert np.isfinite(diff) and diff < 1e-4
