"""The torch Dataset over the standard table. Yields uint8 CHW tensors; the model normalises,
so only a quarter of the bytes cross to the GPU and evaluation pixels equal ONNX inference's.

Training augmentations are a function of (seed, epoch, row) alone: `EpochSampler` hands the dataset
`(epoch, row)` keys and the dataset seeds the transform from them. So the same run augments the same
way with 0 or 16 workers, and a resumed run sees exactly the images an uninterrupted one would, even
though persistent workers are never re-initialised between epochs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import images


def sample_seed(seed: int, epoch: int, row: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, row]).generate_state(1)[0])


class EpochSampler(Sampler):
    """Wraps a sampler of row indices; yields (epoch, row). `set_epoch` runs in the main process, so it
    reaches persistent workers through the keys rather than through their (stale) dataset copies."""

    def __init__(self, base: Sampler):
        self.base, self.epoch = base, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.base)

    def __len__(self) -> int:
        return len(self.base)


class ImageDataset(Dataset):
    def __init__(
        self,
        table: pd.DataFrame,
        size: int,
        *,
        targets: np.ndarray | None = None,
        transform=None,
        channels: list[int] | None = None,
        crop: bool = False,
        seed: int = 0,
        resize: str = "squash",
    ):
        self.paths = list(table["paths"])
        # rows read from kt prepare's cache were cropped when cached; the rest are cropped here
        cached = (
            table["cached"].to_numpy() if "cached" in table.columns else np.zeros(len(table), bool)
        )
        self.crop = [crop and not c for c in cached]
        self.channels = channels  # indices into the decoded channels (e.g. rgb of HPA's rgby)
        self.size = size
        self.resize = resize  # evaluation: squash | center_crop (protocol.py)
        self.targets = targets
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]):
        epoch, i = key if isinstance(key, tuple) else (None, key)
        if epoch is not None and self.transform is not None:
            s = sample_seed(self.seed, epoch, i)
            self.transform.set_random_seed(s)
            random.seed(s)  # timm's RandAugment/AugMix draw from these
            np.random.seed(s)
        img = images.read_image(self.paths[i], reduce_to=self.size)
        if self.crop[i]:
            img = images.fundus_crop(img)
        if self.channels is not None and len(self.channels) != img.shape[2]:
            img = np.ascontiguousarray(img[..., self.channels])
        img = (
            self.transform(image=img)["image"]
            if self.transform is not None
            else images.fit_to(img, self.size, self.resize)
        )
        x = torch.from_numpy(images.to_chw(img))
        y = torch.as_tensor(self.targets[i]) if self.targets is not None else torch.tensor(0)
        return x, y, i


def seed_everything(seed: int) -> None:
    """Python, numpy and torch's global generators (weights init); per-sample draws use sample_seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    # OpenCV's own threads would oversubscribe the cores the workers already use; augmentation
    # randomness is seeded per sample from (seed, epoch, row) in ImageDataset, not per worker
    import cv2

    cv2.setNumThreads(0)


def make_loader(
    dataset,
    batch_size: int,
    workers: int,
    train: bool,
    *,
    generator: torch.Generator | None,
    pin: bool,
    sampler=None,
    keep_last: bool = False,
) -> DataLoader:
    """Training: shuffled through EpochSampler (augmentations keyed by (seed, epoch, row)); evaluation: in order."""
    if train:  # (epoch, row) keys: augmentations independent of workers and of resumes
        sampler = EpochSampler(
            sampler or torch.utils.data.RandomSampler(dataset, generator=generator)
        )
    # the loader's own generator: its worker base seed must not be drawn from the global RNG (dropout
    # masks) nor from the shuffle's generator, or a resumed epoch would draw differently
    # the last partial batch is dropped only when this process sees more rows than one batch (under DDP
    # a rank sees its share, not the dataset), so a small dataset still trains
    # `keep_last` (--protocol paper: the study's DataLoader kept it) keeps it unless it is one row,
    # which batch norm cannot train on
    rows = len(sampler) if sampler is not None else len(dataset)
    drop = train and rows > batch_size and (not keep_last or rows % batch_size == 1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        sampler=sampler,
        drop_last=drop,
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=_worker_init,
        persistent_workers=workers > 0,
        generator=torch.Generator(),
    )
