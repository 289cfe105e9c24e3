"""timm backbone + our head: normalisation inside the network, GeM or average pooling, dropout, linear.

The network takes uint8 (or 0-255 float) NCHW images and normalises them itself, so the ONNX file
carries its own mean/std and inference code never has to know them.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import KtError


class GeM(nn.Module):
    """Generalised-mean pooling (Radenović et al.), p learned. p=1 is average, large p tends to max."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        # p is kept > 1 via softplus: p <= 1 turns GeM into min-like pooling and NaNs in fp16
        self.raw_p = nn.Parameter(torch.tensor([float(p - 1)]).expm1().log())
        self.eps = eps

    @property
    def p(self) -> torch.Tensor:
        return F.softplus(self.raw_p) + 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.to(x.dtype)
        return x.clamp(min=self.eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


class Net(nn.Module):
    def __init__(self, backbone: nn.Module, num_outputs: int, pool: str, dropout: float,
                 *, mean: tuple[float, ...], std: tuple[float, ...], tokens: bool):
        super().__init__()
        self.backbone = backbone
        self.tokens = tokens  # ViT-like backbones pool their own tokens and return (B, C)
        self.pool = GeM() if pool == "gem" else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.num_features, num_outputs)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        features = self.backbone(x)
        if not self.tokens:
            features = self.pool(features).flatten(1)
        return self.head(self.dropout(features))


def check_arch(arch: str) -> None:
    import timm

    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise KtError(f"unknown --arch {arch!r}{hint} (timm.list_models() lists them all)")


def build_model(arch: str, num_outputs: int, *, pool: str = "avg", dropout: float = 0.0, in_chans: int = 3,
                pretrained: bool = False, weights: str | None = None) -> Net:
    """Build the network. `weights` (a local backbone state dict) wins over `pretrained` (timm's hub)."""
    import timm

    check_arch(arch)
    try:
        backbone = timm.create_model(arch, pretrained=pretrained and not weights, num_classes=0, in_chans=in_chans)
    except (OSError, RuntimeError, ValueError) as e:
        if pretrained and not weights:
            raise KtError(f"could not load pretrained weights for {arch} ({type(e).__name__}: {str(e)[:160]}); "
                          "offline? pass --weights FILE or --no-pretrained") from None
        raise
    # ViT-style models keep `global_pool` as a string ('token'/'avg') and pool their own tokens;
    # CNNs hold a pooling module, which we replace by ours (avg or GeM)
    tokens = isinstance(getattr(backbone, "global_pool", None), str)
    if tokens and pool == "gem":
        raise KtError(f"--pool gem needs a convolutional feature map; {arch} pools tokens; use --pool avg")
    if not tokens:
        backbone.reset_classifier(0, global_pool="")
    if weights:
        load_backbone_weights(backbone, weights)
    cfg = backbone.pretrained_cfg or {}
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    if len(mean) != in_chans:  # e.g. 4-channel HPA: extend with the mean of the RGB statistics
        mean = (tuple(mean) + (sum(mean) / len(mean),) * in_chans)[:in_chans]
        std = (tuple(std) + (sum(std) / len(std),) * in_chans)[:in_chans]
    return Net(backbone, num_outputs, pool, dropout, mean=mean, std=std, tokens=tokens)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file (weights_only: no code runs on load)."""
    path = Path(path)
    if not path.is_file():
        raise KtError(f"--weights {path} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise KtError(f"--weights {path} is not a readable state dict: {type(e).__name__}: {str(e)[:200]}") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise KtError(f"--weights {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a timm-format checkpoint into the backbone; the classifier is ours, so its keys are dropped."""
    from timm.models import adapt_input_conv

    state = read_state_dict(path)
    own = backbone.state_dict()
    matched = {}
    for key, value in state.items():
        if key not in own:
            continue
        if value.shape != own[key].shape and value.ndim == 4 and value.shape[1] != own[key].shape[1]:
            value = adapt_input_conv(own[key].shape[1], value)  # e.g. RGB weights into a 4-channel stem
        if value.shape == own[key].shape:
            matched[key] = value
    if len(matched) < 0.5 * len(own):
        raise KtError(f"--weights {path} matches only {len(matched)} of {len(own)} backbone tensors; "
                      "is it a checkpoint of this --arch?")
    backbone.load_state_dict(matched, strict=False)
