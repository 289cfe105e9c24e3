"""Raw outputs of a model over a loader: the leaf that training, weight averaging and held-out scoring
share (a module of its own, so none of them imports another to reach it)."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn as nn


@torch.no_grad()
def predict_raw(
    model: nn.Module,
    loader,
    device: torch.device,
    dtype: torch.dtype | None,
    *,
    channels_last: bool,
    meta: torch.Tensor | None = None,
) -> np.ndarray:
    """Raw outputs (N, num_outputs) in loader order; `meta`: the encoded metadata of the dataset's rows."""
    model.eval()
    outs = []
    for x, _, rows in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        extra = () if meta is None else (meta[rows].to(device),)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            outs.append(model(x, *extra).float().cpu())
    return torch.cat(outs).numpy()
