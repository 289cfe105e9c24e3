"""The rows a run trains and validates on: the competition's table, its split into folds, external
rows (training only), and kt prepare's cache where it holds a copy. Read once per run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import competitions, protocol, runs
from ..config import RunConfig
from ..data import tabular
from ..data.cache import use_cache
from ..data.ids import keys
from ..data.splits import TRAIN_ONLY, assign_folds, paper_shards, read_split_file
from ..errors import KtError
from ..files import contained, write_json
from ..inference.ensemble import load_spec
from .models import check_arch
from .targets import PSEUDO, add_pseudo, pseudo_file, read_pseudo


def load_tables(
    cfg: RunConfig,
    data_dir: Path,
    *,
    external_dirs: dict[str, str],
    skip_bad_images: bool,
    cache: Path | None = None,
    train_table: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Competition rows plus external rows (training only), with a `fold` column; paths point into
    kt prepare's cache where it holds an up-to-date copy. `train_table`: the competition rows when
    the caller has read them already (the CSV is read once per run)."""
    comp = competitions.for_config(cfg)
    table = (
        comp.read_train(data_dir, skip_bad_images) if train_table is None else train_table.copy()
    )
    if cfg.split_file:
        splits = read_split_file(cfg.split_file).set_index("key")["split"]
        table = table.drop(columns=["split"], errors="ignore")
        # ids meet as data/ids.py compares them
        table["split"] = [splits.get(k) for k in keys(table["id"])]
        if table["split"].isna().any():
            missing = table.loc[table["split"].isna(), "id"].iloc[0]
            raise KtError(f"--split-file {cfg.split_file} has no row for id {missing!r}")
    seed = comp.paper.seed if cfg.split_seed is None else cfg.split_seed
    split = cfg.split or comp.default_split
    table["fold"] = assign_folds(table, split, cfg.folds, seed)  # on the competition rows alone
    sharded = split == "paper" and "official_fold" in table.columns  # SIIM-ISIC's tfrecord layout
    skipped = {"competition": int(table.attrs.get("skipped_images", 0))}
    dropped = 0
    for source in cfg.external:
        pseudo = pseudo_file(source)
        if pseudo is not None:  # kt pseudo's table: training rows only, never a labelled id
            extra, overlap = add_pseudo(
                table, read_pseudo(pseudo, comp, root=external_dirs.get(PSEUDO))
            )
            dropped += overlap
            table = pd.concat([table, extra.assign(fold=TRAIN_ONLY)], ignore_index=True)
            continue
        if source not in external_dirs:
            raise KtError(f"--external {source} needs --external-dir {source}=DIR")
        extra = contained(
            comp.read_external(source, Path(external_dirs[source])),
            Path(external_dirs[source]),
            f"--external-dir {source}",
        )
        skipped[source] = int(extra.attrs.get("skipped_images", 0))
        table = pd.concat([table, extra.assign(fold=TRAIN_ONLY)], ignore_index=True)
    if sharded and cfg.external:
        # the study's shard split covers the external year too (SIIM-ISIC's 2019 copy, when it has shards);
        # otherwise external rows only ever train
        table["fold"] = paper_shards(table, seed, table["fold"].to_numpy().copy())
    attrs = {"skipped_images": skipped, "pseudo_dropped": dropped}
    table.attrs.update(attrs)
    if cfg.cache:
        side = protocol.cache_side(cfg)  # --protocol paper crops as from the originals
        table = use_cache(table, runs.cache_root(cache), comp.name, side, crop=cfg.fundus_crop)
        table.attrs.update(attrs)
    return table


def preflight(cfg: RunConfig, data_dir: Path, skip_bad_images: bool = False) -> pd.DataFrame:
    """Cheap checks before a run folder is made: arch, loss and the training table (files included).
    Returns the competition's rows, for fit() to reuse."""
    comp = check_config(cfg)
    return comp.read_train(data_dir, skip_bad_images)


def check_config(cfg: RunConfig):
    """The checks of a config that need no image: arch, protocol and channels, loss, metadata,
    pseudo tables, teacher, split file, the --init and --weights files. Returns the competition."""
    comp = competitions.for_config(cfg)
    check_arch(cfg.arch)
    # a channel choice the protocol cannot feed fails before any image is read
    protocol.for_run(cfg, comp)
    comp.select_channels(protocol.channels(cfg, comp))
    comp.task.check_loss(cfg.loss or comp.task.default_loss)
    if cfg.meta and not comp.meta_columns:
        raise KtError(
            f"--set meta=true: {comp.name} declares no metadata columns (a competition YAML: meta_columns:)"
        )
    # a damaged pseudo table or teacher spec fails before the run folder exists
    for source in cfg.external:
        if pseudo_file(source) is not None:
            read_pseudo(pseudo_file(source), comp)
    if cfg.teacher:
        load_spec(cfg.teacher)
    if cfg.split_file:  # a duplicated or conflicting id, too
        read_split_file(cfg.split_file)
    if cfg.init and not Path(cfg.init).exists():  # a run folder or its best.pt
        raise KtError(f"--init {cfg.init} not found")
    if cfg.weights and not Path(cfg.weights).is_file():
        raise KtError(f"--weights {cfg.weights} not found")
    return comp


def meta_inputs(
    cfg: RunConfig, comp, train_rows: pd.DataFrame, val_rows: pd.DataFrame, run_dir: Path | None
):
    """(width, training rows' features, validation rows' features) of --set meta=true, as CPU tensors
    indexed by a dataset's row positions; (0, None, None) when off. The encoding is fitted on the
    training rows and written to run_dir/meta.json with the rows missing per column."""
    import torch

    if not cfg.meta:
        return 0, None, None
    spec = tabular.fit(comp.meta_columns, train_rows)
    (train, gaps), (val, val_gaps) = (
        tabular.encode(spec, train_rows),
        tabular.encode(spec, val_rows),
    )
    if run_dir is not None:
        write_json(
            Path(run_dir) / runs.TABULAR,
            {**spec, "missing": {"train": gaps, "validation": val_gaps}},
        )
    return spec["width"], torch.from_numpy(train), torch.from_numpy(val)
