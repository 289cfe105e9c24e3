"""The torch Dataset over the standard table. Yields uint8 CHW tensors; the model normalises,
so only a quarter of the bytes cross to the GPU and evaluation pixels equal ONNX inference's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from . import images


class ImageDataset(Dataset):
    def __init__(self, table: pd.DataFrame, size: int, targets: np.ndarray | None = None, transform=None,
                 channels: list[int] | None = None, crop: bool = False):
        self.paths = list(table["paths"])
        # rows read from kt prepare's cache were cropped when cached; the rest are cropped here
        cached = table["cached"].to_numpy() if "cached" in table.columns else np.zeros(len(table), bool)
        self.crop = [crop and not c for c in cached]
        self.channels = channels  # indices into the decoded channels (e.g. rgb of HPA's rgby)
        self.size = size
        self.targets = targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = images.read_image(self.paths[i], reduce_to=self.size)
        if self.crop[i]:
            img = images.fundus_crop(img)
        if self.channels is not None and len(self.channels) != img.shape[2]:
            img = np.ascontiguousarray(img[..., self.channels])
        img = self.transform(image=img)["image"] if self.transform is not None else images.resize(img, self.size)
        x = torch.from_numpy(images.to_chw(img))
        y = torch.as_tensor(self.targets[i]) if self.targets is not None else torch.tensor(0)
        return x, y, i
