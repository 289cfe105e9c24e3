"""The study's 19 ImageNet models under their timm names, with ImageNet top-1 and its source.

Top-1 for models in timm: timm's results/results-imagenet.csv (huggingface/pytorch-image-models,
commit 0173a139), for the pretrained tag listed, which matches the study's torchvision weights where
timm carries them (`.tv_in1k`). Four models of the study are not in timm and one has no ImageNet
weights there: they are listed with torchvision's documented top-1 and `timm: None`, and `paper19`
trains the 14 that timm can load.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import KtError

TIMM_RESULTS = "timm results/results-imagenet.csv @0173a139"
TORCHVISION = "torchvision model docs (not trainable through timm)"


@dataclass(frozen=True)
class Arch:
    paper_name: str
    timm: str | None          # timm name with pretrained tag; None where timm cannot provide it
    top1: float
    source: str


PAPER19 = [
    Arch("AlexNet", None, 56.522, TORCHVISION),
    Arch("SqueezeNet 1.1", None, 58.178, TORCHVISION),
    Arch("ShuffleNetV2 0.5", None, 60.552, TORCHVISION),
    Arch("MobileNetV3-Small", "mobilenetv3_small_100.lamb_in1k", 67.656, TIMM_RESULTS),
    Arch("MnasNet 0.5", None, 67.734, TORCHVISION + "; timm's mnasnet_050 has no weights"),
    Arch("ShuffleNetV2 1.0", None, 69.362, TORCHVISION),
    Arch("VGG13-BN", "vgg13_bn.tv_in1k", 71.588, TIMM_RESULTS),
    Arch("DeiT-Tiny", "deit_tiny_patch16_224.fb_in1k", 72.172, TIMM_RESULTS),
    Arch("VGG16-BN", "vgg16_bn.tv_in1k", 73.370, TIMM_RESULTS),
    Arch("DenseNet121", "densenet121.tv_in1k", 74.764, TIMM_RESULTS),
    Arch("ResNet-50", "resnet50.tv_in1k", 76.130, TIMM_RESULTS),
    Arch("EfficientNet-B0", "efficientnet_b0.ra_in1k", 77.694, TIMM_RESULTS),
    Arch("ResNeXt50-32x4d", "resnext50_32x4d.tv_in1k", 77.618, TIMM_RESULTS),
    Arch("ResNet-152", "resnet152.tv_in1k", 78.322, TIMM_RESULTS),
    Arch("DeiT-Small", "deit_small_patch16_224.fb_in1k", 79.844, TIMM_RESULTS),
    Arch("Inception-ResNet-v2", "inception_resnet_v2.tf_in1k", 80.462, TIMM_RESULTS),
    Arch("ConvNeXt-Tiny", "convnext_tiny.fb_in1k", 82.698, TIMM_RESULTS),
    Arch("PNASNet-5-Large", "pnasnet5large.tf_in1k", 82.782, TIMM_RESULTS),
    Arch("EfficientNet-B4", "efficientnet_b4.ra2_in1k", 83.414, TIMM_RESULTS),
]
TOP1 = {a.timm: a for a in PAPER19 if a.timm}


def resolve_archs(spec: str) -> list[str]:
    """`paper19` or a comma list of timm names."""
    if spec == "paper19":
        return [a.timm for a in PAPER19 if a.timm]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise KtError("--archs needs paper19 or a comma-separated list of timm model names")
    return names


def imagenet_top1(arch: str) -> tuple[float | None, str]:
    """(top-1, source) for a model of the table, by full name or by base name."""
    entry = TOP1.get(arch) or next((a for a in PAPER19 if a.timm and a.timm.split(".")[0] == arch), None)
    return (entry.top1, entry.source) if entry else (None, "not in the study's table")
