"""The study's 19 ImageNet models, each from the library the study took it from, with its ImageNet top-1.

Sources: the study's released training script (mlfoundations/imagenet-applications-transfer,
sample_train.py) builds twelve models from torchvision (`pretrained=True`, the IMAGENET1K_V1 weights)
and seven from timm (default tags at the time). Top-1 for the torchvision ones is torchvision's own
weights metadata (`get_model_weights(name).IMAGENET1K_V1.meta["_metrics"]`, checked in the tests);
for the timm ones timm's results/results-imagenet.csv (huggingface/pytorch-image-models, commit
0173a139) for the tag listed. ConvNeXt-Tiny keeps the `fb_in1k` tag: timm's default tag for it has
since become an ImageNet-22k fine-tune, which is not the model the study used.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import KtError

TIMM_RESULTS = "timm results/results-imagenet.csv @0173a139"
TORCHVISION = "torchvision IMAGENET1K_V1 weights metadata"


@dataclass(frozen=True)
class Arch:
    paper_name: str
    arch: str  # kt's --arch: a timm name with its pretrained tag, or tv:<torchvision name>
    top1: float
    source: str

    @property
    def library(self) -> str:
        return "torchvision" if self.arch.startswith("tv:") else "timm"


PAPER19 = [
    Arch("AlexNet", "tv:alexnet", 56.522, TORCHVISION),
    Arch("SqueezeNet 1.1", "tv:squeezenet1_1", 58.178, TORCHVISION),
    Arch("ShuffleNetV2 0.5", "tv:shufflenet_v2_x0_5", 60.552, TORCHVISION),
    Arch("MobileNetV3-Small", "tv:mobilenet_v3_small", 67.668, TORCHVISION),
    Arch("MnasNet 0.5", "tv:mnasnet0_5", 67.734, TORCHVISION),
    Arch("ShuffleNetV2 1.0", "tv:shufflenet_v2_x1_0", 69.362, TORCHVISION),
    Arch("VGG13-BN", "tv:vgg13_bn", 71.586, TORCHVISION),
    Arch("DeiT-Tiny", "deit_tiny_patch16_224.fb_in1k", 72.172, TIMM_RESULTS),
    Arch("VGG16-BN", "tv:vgg16_bn", 73.360, TORCHVISION),
    Arch("DenseNet121", "tv:densenet121", 74.434, TORCHVISION),
    Arch("ResNet-50", "tv:resnet50", 76.130, TORCHVISION),
    Arch("EfficientNet-B0", "efficientnet_b0.ra_in1k", 77.694, TIMM_RESULTS),
    Arch("ResNeXt50-32x4d", "tv:resnext50_32x4d", 77.618, TORCHVISION),
    Arch("ResNet-152", "tv:resnet152", 78.312, TORCHVISION),
    Arch("DeiT-Small", "deit_small_patch16_224.fb_in1k", 79.844, TIMM_RESULTS),
    Arch("Inception-ResNet-v2", "inception_resnet_v2.tf_in1k", 80.462, TIMM_RESULTS),
    Arch("ConvNeXt-Tiny", "convnext_tiny.fb_in1k", 82.698, TIMM_RESULTS),
    Arch("PNASNet-5-Large", "pnasnet5large.tf_in1k", 82.782, TIMM_RESULTS),
    Arch("EfficientNet-B4", "efficientnet_b4.ra2_in1k", 83.414, TIMM_RESULTS),
]
TOP1 = {a.arch: a for a in PAPER19}


def resolve_archs(spec: str) -> list[str]:
    """`paper19` (all 19, each from the study's library) or a comma list of timm or tv: names."""
    if spec == "paper19":
        return [a.arch for a in PAPER19]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise KtError(
            "--archs needs paper19 or a comma-separated list of timm (or tv:torchvision) model names"
        )
    return names


def imagenet_top1(arch: str) -> tuple[float | None, str]:
    """(top-1, source) for a model of the table, by full name or by base name."""
    entry = TOP1.get(arch) or next(
        (a for a in PAPER19 if a.arch.split(".")[0] == arch.split(".")[0]), None
    )
    return (entry.top1, entry.source) if entry else (None, "not in the study's table")
