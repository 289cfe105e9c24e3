"""Training images/s of kt's fit() vs a plain timm + torch loop on the same files.

Same arch, input size, batch size, workers, optimizer and loss; both read the PNGs from disk each
epoch with random-resized-crop + flip. Prints a table and the ratio (kt / plain). Not a test.

    python benchmarks/train_speed.py [--arch resnet18] [--size 96] [--images 256] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kaggle_transfer import config
from kaggle_transfer.competitions import synthetic
from kaggle_transfer.training.loop import fit


def plain_loop(data_dir: Path, arch: str, size: int, batch: int, workers: int, epochs: int) -> float:
    """What a competitor writes by hand: PIL + torchvision transforms + timm model, images/s of training steps."""
    import pandas as pd
    import timm
    from PIL import Image
    from torchvision import transforms as T

    df = pd.read_csv(data_dir / "train.csv")
    tf = T.Compose([T.RandomResizedCrop(size, scale=(0.65, 1.0)), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(df)

        def __getitem__(self, i):
            img = Image.open(data_dir / "train_images" / f"{df.id_code[i]}.png").convert("RGB")
            return tf(img), torch.tensor(float(df.diagnosis[i]))

    loader = torch.utils.data.DataLoader(Files(), batch_size=batch, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    model = timm.create_model(arch, pretrained=False, num_classes=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.SmoothL1Loss()
    rates = []
    for _ in range(epochs):
        model.train()
        seen, t0 = 0, time.time()
        for x, y in loader:
            loss = loss_fn(model(x).squeeze(1), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(x)
        rates.append(seen / (time.time() - t0))
    return max(rates[1:] or rates)  # the first epoch includes worker start-up


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--images", type=int, default=320)
    p.add_argument("--source-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--cache-source-size", type=int, default=1024, help="source side for the cache comparison")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic.make("aptos", Path(tmp) / "data", n_train=a.images, n_test=8, image_size=a.source_size)
        cfg = config.resolve(flags={"arch": a.arch, "pretrained": False, "size": a.size, "batch_size": a.batch,
                                    "workers": a.workers, "epochs": a.epochs, "lr": 1e-3, "split": "kfold",
                                    "folds": 20})  # 5% validation: time goes to training as in the plain loop
        import pandas as pd

        ours, plain = [], []
        for trial in range(a.trials):  # alternate the two loops: a shared 2-core VM drifts over minutes
            run = Path(tmp) / f"run{trial}"
            run.mkdir()
            fit(cfg, run, data, progress=False)
            ours.append(pd.read_csv(run / "history.csv")["train_images_per_s"].iloc[1:].max())
            plain.append(plain_loop(data, a.arch, a.size, a.batch, a.workers, a.epochs))
        ours, plain = np.array(ours), np.array(plain)
    print(f"\ntraining throughput, {a.arch} @ {a.size}px, batch {a.batch}, {a.workers} workers, "
          f"{a.source_size}px PNGs, {torch.get_num_threads()} threads")
    print(f"{'loop':<28}{'images/s':>10}")
    print(f"{'plain timm + torch (PIL)':<28}{plain.mean():>10.1f} ± {plain.std():.1f}")
    print(f"{'kt train':<28}{ours.mean():>10.1f} ± {ours.std():.1f}")
    ratios = ours / plain
    print(f"ratio kt / plain: {ratios.mean():.2f}x (per trial: {', '.join(f'{r:.2f}' for r in ratios)})")
    cache_comparison(a)


def cache_comparison(a) -> None:
    """kt train on large source images, without and with kt prepare's cache (same everything else)."""
    import pandas as pd

    from kaggle_transfer.competitions import APTOS
    from kaggle_transfer.data.cache import prepare

    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic.make("aptos", Path(tmp) / "data", n_train=a.images // 2, n_test=8,
                              image_size=a.cache_source_size)
        cfg = config.resolve(flags={"arch": a.arch, "pretrained": False, "size": a.size, "batch_size": a.batch,
                                    "workers": a.workers, "epochs": a.epochs, "lr": 1e-3, "split": "kfold",
                                    "folds": 20})
        rates = {}
        for label in ("source PNGs", "kt prepare cache"):
            if label == "kt prepare cache":
                prepare([APTOS.read_train(data)], Path(tmp) / "cache", "aptos", a.size, progress=False)
            run = Path(tmp) / label.replace(" ", "_")
            run.mkdir()
            import os

            os.environ["KT_CACHE"] = str(Path(tmp) / "cache")
            result = fit(cfg, run, data, progress=False)
            rates[label] = pd.read_csv(run / "history.csv")["train_images_per_s"].iloc[1:].max()
            assert (result["cached_rows"] > 0) == (label == "kt prepare cache")
    print(f"\nkt train on {a.cache_source_size}px PNGs, {a.arch} @ {a.size}px")
    for label, r in rates.items():
        print(f"{label:<28}{r:>10.1f}")
    print(f"ratio cached / uncached: {rates['kt prepare cache'] / rates['source PNGs']:.2f}x")


if __name__ == "__main__":
    main()
