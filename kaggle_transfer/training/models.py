"""A timm or torchvision backbone + our head: normalisation inside the network, GeM or average pooling,
dropout, linear.

`--arch NAME` is any timm model; `--arch tv:NAME` a torchvision classification model (the study took
twelve of its nineteen models from torchvision: mlfoundations/imagenet-applications-transfer,
sample_train.py), whose own final layer is replaced by ours, as the study replaced it.

The network takes uint8 (or 0-255 float) NCHW images and normalises them itself, so the ONNX file
carries its own mean/std and inference code never has to know them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import KtError
from ..protocol import IMAGENET_MEAN, IMAGENET_STD, KT, Protocol
from .weights import check_pretrained


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


META_WIDTH = 64  # the metadata branch's embedding width


@dataclass(frozen=True)
class Head:
    """kt's head on every backbone: pooling, dropout, the metadata branch's input width."""

    pool: str = "avg"  # avg | gem
    dropout: float = 0.0
    meta_dim: int = 0  # encoded metadata columns beside the image (0: image only)
    two_class: bool = False  # a binary task trained with ce: two logits, emitting z1 - z0


def head_of(cfg, task, meta_dim: int = 0) -> Head:
    """The head a run config asks for (training and export build the same one)."""
    binary_ce = task.kind == "binary" and (cfg.loss or task.default_loss) == "ce"
    return Head(cfg.pool, cfg.dropout, meta_dim, two_class=binary_ce)


class TwoClassLogit(nn.Module):
    """Two logits (B, 2) → the one logit z1 - z0 (B, 1) a binary task reads (tasks.py)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z[:, 1:2] - z[:, 0:1]


@dataclass(frozen=True)
class Backbone:
    """Where the backbone's weights come from, and its own regularisation."""

    pretrained: bool = False  # ImageNet weights through timm's or torchvision's cache
    weights: str | None = None  # a local backbone state dict; wins over pretrained
    drop_path: float = 0.0  # stochastic depth rate of timm backbones (timm's drop_path_rate)


class Net(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        num_outputs: int,
        head: Head,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        emits: str,
        bgr: bool = False,
        pooled_norm: nn.Module | None = None,
    ):
        super().__init__()
        pool, dropout, meta_dim = head.pool, head.dropout, head.meta_dim
        self.backbone = backbone
        # what the backbone returns: a feature map (CNNs: pooled here), pooled features (ViT-like
        # backbones pool their own tokens; torchvision models), or the outputs themselves (the
        # released SqueezeNet head)
        self.tokens = emits != "map"
        logits = emits == "logits"
        self.pool = GeM() if pool == "gem" else nn.AdaptiveAvgPool2d(1)
        # the backbone's own head norm (ConvNeXt's LayerNorm), applied to the pooled features as the
        # backbone was trained: timm's NormMlpClassifierHead pools, then normalises
        self.pooled_norm = pooled_norm
        self.dropout = nn.Dropout(dropout)
        # image + metadata: an embedding of the encoded columns (data/tabular.py) joins the pooled image features
        # before the head, as the SIIM-ISIC winners' metadata branch did
        self.meta_dim = meta_dim
        self.meta_branch = (
            nn.Sequential(nn.Linear(meta_dim, META_WIDTH), nn.SiLU()) if meta_dim else None
        )
        width = backbone.num_features + (META_WIDTH if meta_dim else 0)
        # num_features measured (feature_width); `logits`: the backbone ends in its own classifier
        # (the released SqueezeNet head), which emits the outputs itself
        if logits:
            self.head = TwoClassLogit() if head.two_class else nn.Identity()
        elif head.two_class:
            self.head = nn.Sequential(nn.Linear(width, 2), TwoClassLogit())
        else:
            self.head = nn.Linear(width, num_outputs)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0, persistent=False)
        # --protocol paper: the study's loaders fed B, G, R (protocol.py); the input stays RGB and the
        # graph reorders it, so every consumer of the ONNX file gets it right without knowing
        self.bgr = bgr
        self.register_buffer("order", torch.tensor([2, 1, 0]), persistent=False)

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        if self.bgr:
            x = x.index_select(1, self.order)
        x = (x.float() - self.mean) / self.std
        features = self.backbone(x)
        if not self.tokens:
            features = self.pool(features)
            if self.pooled_norm is not None:
                features = self.pooled_norm(features.view(*features.shape[:2], 1, 1))
            features = features.flatten(1)
        if self.meta_branch is not None:
            if meta is None:
                raise KtError(
                    "this model has a metadata branch: it needs the encoded metadata beside the image"
                )
            features = torch.cat([features, self.meta_branch(meta.float())], dim=1)
        return self.head(self.dropout(features))


TORCHVISION = "tv:"


def check_arch(arch: str) -> None:
    import timm

    if arch.startswith(TORCHVISION):
        import torchvision

        name = arch.removeprefix(TORCHVISION)
        known = torchvision.models.list_models(module=torchvision.models)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
            raise KtError(
                f"unknown --arch {arch!r}: not a torchvision classification model"
                f"{'; close matches: ' + ', '.join(TORCHVISION + c for c in close) if close else ''}"
            )
        return
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise KtError(f"unknown --arch {arch!r}{hint} (timm.list_models() lists them all)")


def build_model(
    arch: str,
    num_outputs: int,
    *,
    head: Head = Head(),
    backbone: Backbone = Backbone(),
    in_chans: int = 3,
    size: int = 224,
    proto: Protocol = KT,
) -> Net:
    """Build the network for `size`-pixel inputs. `backbone.weights` (a local state dict) wins over
    `backbone.pretrained` (timm's or torchvision's weights, through each library's cache). The
    protocol's `bgr` and `imagenet_stats` are --protocol paper's channel order and normalisation."""
    pool, bgr, imagenet_stats = head.pool, proto.bgr, proto.imagenet_stats
    pretrained, weights, drop_path = backbone.pretrained, backbone.weights, backbone.drop_path
    if bgr and in_chans != 3:
        raise KtError(f"a B, G, R input order needs 3 channels, not {in_chans}")
    # the study's SqueezeNet keeps torchvision's head with a new 1x1 conv (sample_train.py l.80-81:
    # `net.classifier[1] = nn.Conv2d(512, num_classes, kernel_size=(1,1), stride=(1,1))`): dropout,
    # conv, ReLU on the logits, average pool
    released_head = proto.name == "paper" and arch.startswith(TORCHVISION + "squeezenet")
    if released_head and (head.meta_dim or head.dropout):
        raise KtError(
            f"{arch} under --protocol paper keeps the study's own head (its dropout 0.5, no "
            "metadata branch): leave --dropout at 0 and meta off, or use --protocol kt"
        )
    check_arch(arch)
    use_hub = pretrained and not weights
    if use_hub:  # offline and not cached: one line in seconds, not a minute of download retries
        check_pretrained(arch)
    try:
        if arch.startswith(TORCHVISION):
            if drop_path:
                raise KtError(f"--drop-path is a timm backbone's; {arch} is torchvision's")
            net = _torchvision_backbone(
                arch.removeprefix(TORCHVISION),
                in_chans,
                use_hub,
                classes=(2 if head.two_class else num_outputs) if released_head else None,
            )
            tokens = True
        else:
            net, tokens = _timm_backbone(arch, in_chans, use_hub, size, drop_path)
    except (OSError, RuntimeError, ValueError) as e:
        if use_hub:
            raise KtError(
                f"could not load pretrained weights for {arch} ({type(e).__name__}: {str(e)[:160]}); "
                "offline? pass --weights FILE or --no-pretrained"
            ) from None
        raise
    if tokens and pool == "gem":
        raise KtError(
            f"--pool gem needs a convolutional feature map; {arch} pools its own features; use --pool avg"
        )
    if weights:
        load_backbone_weights(net, weights)
    pooled_norm = None if tokens else _take_pooled_norm(net)
    # the width the head sees, measured: a declared num_features can be the wrong one (timm's VGG and
    # MobileNetV3 add a wider pre-logits layer after it)
    net.num_features = feature_width(net, in_chans, size)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    mean, std = (
        tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    )
    if imagenet_stats:  # every model of the study was normalised with ImageNet's statistics
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    if len(mean) != in_chans:  # e.g. 4-channel HPA: extend with the mean of the RGB statistics
        mean = (tuple(mean) + (sum(mean) / len(mean),) * in_chans)[:in_chans]
        std = (tuple(std) + (sum(std) / len(std),) * in_chans)[:in_chans]
    return Net(
        net,
        num_outputs,
        head,
        mean=mean,
        std=std,
        emits="logits" if released_head else "pooled" if tokens else "map",
        bgr=bgr,
        pooled_norm=pooled_norm,
    )


def _take_pooled_norm(backbone: nn.Module) -> nn.Module | None:
    """A timm head that normalises its pooled features (ConvNeXt's NormMlpClassifierHead: pool →
    LayerNorm → fc) would, once its pooling is ours, normalise every position instead (logits then
    differ from timm's own model by up to 0.9 on the same weights). Its norm moves after our pool."""
    head = getattr(backbone, "head", None)
    norm = getattr(head, "norm", None)
    if not isinstance(norm, nn.Module) or isinstance(norm, nn.Identity):
        return None
    if not hasattr(head, "global_pool"):
        return None
    head.norm = nn.Identity()
    return norm


def _timm_backbone(
    arch: str, in_chans: int, pretrained: bool, size: int, drop_path: float = 0.0
) -> tuple[nn.Module, bool]:
    import timm

    extra = {"drop_path_rate": drop_path} if drop_path else {}
    try:
        backbone = timm.create_model(
            arch, pretrained=pretrained, num_classes=0, in_chans=in_chans, **extra
        )
    except TypeError as e:  # a model without stochastic depth refuses the keyword
        if not extra or "drop_path_rate" not in str(e):
            raise
        raise KtError(f"--drop-path: {arch} has no stochastic depth; leave it at 0") from None
    # ViT-style models keep `global_pool` as a string ('token'/'avg') and pool their own tokens;
    # CNNs hold a pooling module, which we replace by ours (avg or GeM)
    tokens = isinstance(getattr(backbone, "global_pool", None), str)
    if not tokens:
        backbone.reset_classifier(0, global_pool="")
    elif tuple((backbone.pretrained_cfg or {}).get("input_size", (0, size, size))[1:]) != (
        size,
        size,
    ):
        # a ViT is built for its input side (its position embedding is resized when weights load)
        backbone = timm.create_model(
            arch, pretrained=pretrained, num_classes=0, in_chans=in_chans, img_size=size
        )
    return backbone, tokens


def _torchvision_backbone(
    name: str, in_chans: int, pretrained: bool, classes: int | None = None
) -> nn.Module:
    """A torchvision model without its final layer, returning pooled features (B, C). Weights: the
    ImageNet-1K V1 weights the study loaded (`pretrained=True` in its torchvision). `classes`
    (SqueezeNet): keep its conv head with a new 1x1 conv of that many outputs, as the study did."""
    import torchvision

    if in_chans != 3:
        raise KtError(f"tv:{name} takes 3 channels; use a timm --arch or --set channels=rgb")
    model = torchvision.models.get_model(name, weights="IMAGENET1K_V1" if pretrained else None)
    # its head is a 1x1 conv + ReLU + pool: keep the pooled 512 features, or the head itself
    if name.startswith("squeezenet") and classes:
        model.classifier[1] = nn.Conv2d(512, classes, kernel_size=1)
    elif name.startswith("squeezenet"):
        model.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    elif isinstance(getattr(model, "fc", None), nn.Linear):
        model.fc = nn.Identity()
    elif isinstance(getattr(model, "classifier", None), nn.Linear):
        model.classifier = nn.Identity()
    elif isinstance(getattr(model, "classifier", None), nn.Sequential) and isinstance(
        model.classifier[-1], nn.Linear
    ):
        # VGG, AlexNet, MobileNetV3, MnasNet keep their hidden layers
        model.classifier[-1] = nn.Identity()
    else:
        raise KtError(f"tv:{name}: kt does not know where its classifier is; use a timm --arch")
    return model


def feature_width(backbone: nn.Module, in_chans: int, size: int) -> int:
    """Channels (or features) the backbone gives for one image of `size` pixels, by a dummy forward."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.zeros(1, in_chans, size, size))
    backbone.train(was_training)
    return int(out.shape[1])


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
        raise KtError(
            f"--weights {path} is not a readable state dict: {type(e).__name__}: {str(e)[:200]}"
        ) from None
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
        if (
            value.shape != own[key].shape
            and value.ndim == 4
            and value.shape[1] != own[key].shape[1]
        ):
            # e.g. RGB weights into a 4-channel stem
            value = adapt_input_conv(own[key].shape[1], value)
        if value.shape == own[key].shape:
            matched[key] = value
    if len(matched) < 0.5 * len(own):
        raise KtError(
            f"--weights {path} matches only {len(matched)} of {len(own)} backbone tensors; "
            "is it a checkpoint of this --arch?"
        )
    backbone.load_state_dict(matched, strict=False)
