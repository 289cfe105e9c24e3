"""Training steps/s with channels_last vs the default (contiguous NCHW) layout, same model and batch.

kt train uses channels_last on CUDA and on the CPU (oneDNN); this is the measurement behind that.

    python benchmarks/channels_last.py [--archs resnet18,efficientnet_b0] [--size 96] [--batch 32] [--steps 6]
"""

from __future__ import annotations

import argparse

import torch
from timing import calls_per_s


def steps_per_s(arch: str, size: int, batch: int, steps: int, channels_last: bool, device: torch.device) -> float:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=1).to(device)
    x, y = torch.randn(batch, 3, size, size, device=device), torch.randn(batch, device=device)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = torch.nn.functional.smooth_l1_loss(model(x).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return calls_per_s(step, steps, cuda=device.type == "cuda", warmup=2)  # warm-up: oneDNN/cuDNN choose kernels


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--archs", default="resnet18,efficientnet_b0,convnext_nano")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"\ntraining steps/s, {a.size}px, batch {a.batch}, {device}, {torch.get_num_threads()} threads")
    print(f"{'arch':<20}{'NCHW':>8}{'channels_last':>15}{'ratio':>8}")
    for arch in a.archs.split(","):
        rates: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(2):  # alternate the layouts: a shared VM drifts over minutes
            for layout in rates:
                rates[layout].append(steps_per_s(arch, a.size, a.batch, a.steps, layout, device))
        plain, last = max(rates[False]), max(rates[True])
        print(f"{arch:<20}{plain:>8.2f}{last:>15.2f}{last / plain:>7.2f}x")


if __name__ == "__main__":
    main()
