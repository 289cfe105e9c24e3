"""A finished run's best weights scored on its competition's labelled held-out splits (CCT-20's
cis_test and trans_test; HPA's test_val under the study's split file), with the run's own channels,
resize and decoding, and the decoding parameters (HPA's thresholds) fitted on its validation rows.

The study's CCT-20 protocol (released sample_train.py): select the epoch on cis_val, report that
epoch's accuracy on cis_test; trans_test (locations never seen in training) is the benchmark's point.
"""

from __future__ import annotations

from pathlib import Path

from .. import competitions, protocol, runs
from ..data import tabular
from ..files import contained, read_json, write_json
from .builders import pick_device
from .evaluate import predict_raw
from .export import load_run_model


def run_features(run_dir: Path, table):
    """The rows' metadata encoded with the run's fitted encoding (a tensor), or None for an image-only run."""
    import torch

    spec = tabular.load(run_dir)
    return None if spec is None else torch.from_numpy(tabular.encode(spec, table)[0])


def score_splits(
    run_dir: str | Path, data_dir: str | Path, *, progress: bool = False
) -> dict[str, float]:
    """{split: score} over the competition's evaluation splits (empty when it has none), written to
    heldout.json in the run folder and read back from there on a second call."""
    import torch
    from torch.utils.data import DataLoader

    from .dataset import ImageDataset

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    if (run_dir / runs.HELDOUT).is_file():
        return read_json(run_dir / runs.HELDOUT, what="held-out scores")
    cfg = runs.load_config(run_dir)
    comp = competitions.for_config(cfg)
    splits = comp.heldout_splits(data_dir, cfg)
    if not splits:
        return {}
    model, _ = load_run_model(run_dir)
    device = pick_device(cfg.device)
    model = model.to(device).eval()
    proto = protocol.for_run(cfg, comp)
    channels = comp.select_channels(protocol.channels(cfg, comp))
    fitted = (runs.load_oof(run_dir) or {}).get("fitted") or {}
    task = comp.task.trained_with(cfg.loss)
    scores = {}
    for split in splits:
        table = contained(comp.read(data_dir, split), data_dir, f"{comp.name} {split}")
        dataset = ImageDataset(
            table, cfg.size, channels=channels, crop=cfg.fundus_crop, resize=proto.resize
        )
        loader = DataLoader(dataset, batch_size=cfg.batch_size, num_workers=min(cfg.workers, 4))
        features = run_features(run_dir, table)
        with torch.inference_mode():
            raw = predict_raw(model, loader, device, None, channels_last=False, meta=features)
        raw = raw.squeeze(1) if task.num_outputs == 1 else raw
        scores[split] = float(task.score(task.targets(table["target"]), raw, fitted))
    write_json(run_dir / runs.HELDOUT, scores)
    return scores
