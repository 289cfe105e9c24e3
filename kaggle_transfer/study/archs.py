"""The study's 19 ImageNet models, each from the library the study took it from, with its ImageNet top-1.

Sources: the study's released training script (mlfoundations/imagenet-applications-transfer,
sample_train.py) builds twelve models from torchvision (`pretrained=True`, the IMAGENET1K_V1 weights)
and seven from timm (default tags at the time). Top-1 for the torchvision ones is torchvision's own
weights metadata (`get_model_weights(name).IMAGENET1K_V1.meta["_metrics"]`, checked in the tests);
for the timm ones timm's results/results-imagenet.csv (huggingface/pytorch-image-models, commit
0173a139) for the tag listed. ConvNeXt-Tiny keeps the `fb_in1k` tag: timm's default tag for it has
since become an ImageNet-22k fine-tune, which is not the model the study used; its number is timm's
evaluation at 224 px, the side the released code fine-tuned it at (82.066; the 0173a139 file lists it
only at 288 px, 82.698).

Under the study's protocol each model trains at the dataset's side (256 px, EuroSAT 224) except the
DeiTs, which the released call (`timm.create_model('deit_tiny_patch16_224', ...)`, no img_size) only
runs at 224 (sample_train.py: `img_size = 256 # may need to change to 224 for certain models`).

Two more sets: `appendix-g` (the paper's Appendix G: ResNet-50 pre-trained with standard, AugMix and
RandAugment augmentation, and DeiT-Tiny/Small; fine-tune each with `--vary augment=...` in kt study
ablate) and `clip` (CLIP image towers from timm, fine-tuned by LP-FT as the paper did).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import KtError

TIMM_RESULTS = "timm results/results-imagenet.csv @0173a139"
TIMM_RESULTS_2025 = "timm results/results-imagenet.csv @4e5207c7 (rows at 224 px)"
TORCHVISION = "torchvision IMAGENET1K_V1 weights metadata"
CLIP_FT = (
    "timm results/results-imagenet.csv @4e5207c7: this tower fine-tuned on ImageNet-1k "
    "(.openai_ft_in1k); the tower itself has no ImageNet head"
)


@dataclass(frozen=True)
class Arch:
    paper_name: str
    arch: str  # kt's --arch: a timm name with its pretrained tag, or tv:<torchvision name>
    top1: float | None
    source: str
    size: int | None = None  # the side the released code ran it at, where not the dataset's
    options: tuple[tuple[str, object], ...] = ()  # config the paper trained it with (CLIP: lp_ft)

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
    Arch("DeiT-Tiny", "deit_tiny_patch16_224.fb_in1k", 72.172, TIMM_RESULTS, size=224),
    Arch("VGG16-BN", "tv:vgg16_bn", 73.360, TORCHVISION),
    Arch("DenseNet121", "tv:densenet121", 74.434, TORCHVISION),
    Arch("ResNet-50", "tv:resnet50", 76.130, TORCHVISION),
    Arch("EfficientNet-B0", "efficientnet_b0.ra_in1k", 77.694, TIMM_RESULTS),
    Arch("ResNeXt50-32x4d", "tv:resnext50_32x4d", 77.618, TORCHVISION),
    Arch("ResNet-152", "tv:resnet152", 78.312, TORCHVISION),
    Arch("DeiT-Small", "deit_small_patch16_224.fb_in1k", 79.844, TIMM_RESULTS, size=224),
    Arch("Inception-ResNet-v2", "inception_resnet_v2.tf_in1k", 80.462, TIMM_RESULTS),
    Arch("ConvNeXt-Tiny", "convnext_tiny.fb_in1k", 82.066, TIMM_RESULTS_2025),
    Arch("PNASNet-5-Large", "pnasnet5large.tf_in1k", 82.782, TIMM_RESULTS),
    Arch("EfficientNet-B4", "efficientnet_b4.ra2_in1k", 83.414, TIMM_RESULTS),
]
# Appendix G: one architecture, three pre-training augmentations (timm's tags: tv_in1k is
# torchvision's weights, am_in1k AugMix + JSD, ram_in1k RandAugment + JSD: timm's training docs,
# hfdocs/source/training_script.mdx), and the two DeiTs; top-1 at 224 px
APPENDIX_G = [
    Arch("ResNet-50 (standard)", "resnet50.tv_in1k", 76.156, TIMM_RESULTS_2025),
    Arch("ResNet-50 (AugMix)", "resnet50.am_in1k", 79.004, TIMM_RESULTS_2025),
    Arch("ResNet-50 (RandAugment)", "resnet50.ram_in1k", 79.034, TIMM_RESULTS_2025),
    Arch("DeiT-Tiny", "deit_tiny_patch16_224.fb_in1k", 72.190, TIMM_RESULTS_2025, size=224),
    Arch("DeiT-Small", "deit_small_patch16_224.fb_in1k", 79.856, TIMM_RESULTS_2025, size=224),
]
# CLIP image towers (OpenAI weights in timm), fine-tuned by LP-FT as the paper's CLIP rows were; each
# at its own side (the position embedding is the pretraining one)
LP_FT = (("lp_ft", True),)
CLIP = [
    Arch("CLIP ViT-B/32", "vit_base_patch32_clip_224.openai", 81.944, CLIP_FT, 224, LP_FT),
    Arch("CLIP ViT-B/16", "vit_base_patch16_clip_224.openai", 85.282, CLIP_FT, 224, LP_FT),
    Arch("CLIP ViT-L/14", "vit_large_patch14_clip_224.openai", 87.858, CLIP_FT, 224, LP_FT),
    Arch(
        "CLIP ViT-L/14-336px",
        "vit_large_patch14_clip_336.openai",
        88.260,
        "timm results/results-imagenet.csv @4e5207c7 (336 px): this tower fine-tuned on ImageNet-12k, "
        "then 1k (.openai_ft_in12k_in1k; timm has no 1k-only fine-tune of it)",
        336,
        LP_FT,
    ),
]
SETS = {"paper19": PAPER19, "appendix-g": APPENDIX_G, "clip": CLIP}
TOP1 = {a.arch: a for a in PAPER19}
KNOWN = {a.arch: a for group in (CLIP, APPENDIX_G, PAPER19) for a in group}


def resolve_archs(spec: str) -> list[str]:
    """A named set (paper19: the study's 19, each from its library; appendix-g; clip) or a comma list
    of timm or tv: names."""
    if spec in SETS:
        return [a.arch for a in SETS[spec]]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise KtError(
            f"--archs needs one of {', '.join(SETS)} or a comma-separated list of timm (or "
            "tv:torchvision) model names"
        )
    return names


def _entry(arch: str) -> Arch | None:
    return KNOWN.get(arch) or next(
        (a for a in PAPER19 if a.arch.split(".")[0] == arch.split(".")[0]), None
    )


def imagenet_top1(arch: str) -> tuple[float | None, str]:
    """(top-1, source) for a model of the tables, by full name or (the 19) by base name."""
    entry = _entry(arch)
    return (entry.top1, entry.source) if entry else (None, "not in the study's table")


def released_size(arch: str) -> int | None:
    """The side the study ran this model at where it is not the dataset's (DeiT, CLIP towers)."""
    entry = KNOWN.get(arch)
    return entry.size if entry else None


def arch_options(arch: str) -> dict[str, object]:
    """Config the paper trained this model with (the CLIP towers: LP-FT)."""
    entry = KNOWN.get(arch)
    return dict(entry.options) if entry else {}
