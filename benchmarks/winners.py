"""The winners' second half, measured over seeds on real data with scarce labels: pseudo-labels,
knowledge distillation, SWA, MixUp/CutMix, and image + metadata, each against the same run without it.

Data: scikit-learn's digits (1,797 real images, 10 classes) as a Kaggle-shaped folder; only
`--labelled` of the 1,347 training images keep their label, the rest become an unlabelled folder;
the 450 test images are scored against their held-out labels. Every model: test_resnet @ 32 px from
scratch on the CPU. Per seed:

- baseline: one model on fold 0 of a 3-fold split of the labelled rows;
- teacher: three such models, each a 3-fold group (out-of-fold outputs on every labelled row),
  blended by kt ensemble (greedy);
- +pseudo: the baseline plus the teacher's pseudo-labels of the unlabelled folder (kt pseudo);
- +distill: the baseline distilled from the teacher (--teacher, alpha 0.5, T 2), with the pseudo rows;
- +swa / +swa, lr held / +mixup: the baseline with --set swa_epochs=3, with swa_epochs=5 and swa_lr=1e-3
  (SWA's constant schedule), or with --set mix=mixup;
- metadata: a 10-class task whose CSV adds a noisy numeric column (label x 10 + N(0, 15)); image
  alone vs image + metadata (--set meta=true);
- lesions: the synthetic SIIM-ISIC task (lesion images, patients, blank sexes and sites) with its age
  column redrawn to depend on the label (40 + 15 x malignant + N(0, 15), as melanoma risk rises with
  age); validation ROC AUC of image alone vs image + metadata on a patient-grouped 4-fold split.

    python benchmarks/winners.py [--seeds 3] [--epochs 15] [--labelled 0.15]

Batches of 16 (200 labelled images make 13 steps an epoch). The README's table is this script's output.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


def _digits(root: Path, labelled: float, seed: int, *, meta: bool = False) -> Path:
    """The digits folder with only a share of training labels kept (the others' images moved to
    unlabelled/), or with a metadata column that carries label information."""
    from kaggle_transfer.data.digits import make_digits

    data = make_digits(root)
    train = pd.read_csv(data / "train.csv", dtype={"id": str})
    spec = yaml.safe_load((data / "digits.yaml").read_text())
    if meta:
        rng = np.random.default_rng(seed)
        test, truth = pd.read_csv(data / "test.csv", dtype=str), pd.read_csv(data / "test_labels.csv", dtype=str)
        train["age"] = (train["label"] * 10 + rng.normal(0, 15, len(train))).round(1)
        test["age"] = (truth["label"].astype(int) * 10 + rng.normal(0, 15, len(test))).round(1)
        test.to_csv(data / "test.csv", index=False)
        spec["meta_columns"] = {"age": "numeric"}
    keep = train.groupby("label", group_keys=False).sample(frac=labelled, random_state=seed)
    unlabelled = data / "unlabelled"
    unlabelled.mkdir()
    for i in train.loc[~train.index.isin(keep.index), "id"]:
        (data / "train_images" / f"{i}.png").rename(unlabelled / f"{i}.png")
    keep.to_csv(data / "train.csv", index=False)
    (data / "digits.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return data


class Bench:
    def __init__(self, data: Path, root: Path, seed: int, epochs: int):
        from kaggle_transfer import competitions, config

        self.data, self.root, self.seed = data, root, seed
        self.comp = competitions.get(str(data / "digits.yaml"))
        self.base = config.resolve(self.comp.spec["recipe"], {
            "competition": self.comp.name, "competition_file": self.comp.spec_file, "seed": seed, "epochs": epochs,
            "split": "kfold", "folds": 3, "fold": 0, "workers": 2, "batch_size": 16})

    def train(self, name: str, **changes) -> Path:
        from kaggle_transfer.training.export import export
        from kaggle_transfer.training.loop import fit

        run = self.root / name
        run.mkdir(parents=True)
        fit(dataclasses.replace(self.base, **changes), run, self.data, progress=False)
        export(run)
        return run

    def group(self, name: str, **changes) -> Path:
        from kaggle_transfer.training.cv import fit_group
        from kaggle_transfer.training.export import export_runs

        run = self.root / name
        fit_group(dataclasses.replace(self.base, **changes), run, self.data, [0, 1, 2], progress=False)
        list(export_runs(run))
        return run

    def test(self, models: list[Path] | None = None, spec: Path | None = None) -> tuple[float, float]:
        """(held-out accuracy, predict seconds) of kt predict on the 450 test images."""
        from kaggle_transfer.inference.pipeline import predict_submission
        from kaggle_transfer.inference.predictor import Choice, RunOptions, load_predictor
        from kaggle_transfer.training.demo import hidden_label_score

        choice = Choice(models=[str(m) for m in models or []], ensemble=spec)
        predictor = load_predictor(self.comp.name, choice, RunOptions(progress=False, threads=2))
        manifest = predict_submission(predictor, self.data, out_root=self.root / "subs", label=f"t{time.time_ns()}")
        return hidden_label_score(self.comp, self.data, Path(manifest["submission"])), manifest["seconds"]


SWA_HELD = {"swa_epochs": 5, "swa_lr": 1e-3}  # SWA's constant schedule over the last 5 epochs


def swa_only(seed: int, epochs: int, labelled: float, tmp: Path) -> dict[str, float]:
    """The scarce-label baseline and its two SWA variants alone (`--parts swa`)."""
    from kaggle_transfer import runs

    b = Bench(_digits(tmp / f"swa_digits{seed}", labelled, seed), tmp / f"swa_runs{seed}", seed, epochs)
    baseline = b.train("baseline")
    out = {"baseline": b.test([baseline / "model.onnx"])[0]}
    for name, changes in (("+swa", {"swa_epochs": min(3, epochs)}), ("+swa, lr held", SWA_HELD)):
        run = b.train(name.strip("+").replace(", ", "_").replace(" ", "_"), **changes)
        out[name] = b.test([run / "model.onnx"])[0]
        swa = runs.read_metrics(run)["swa"]
        out[f"{name} val gain"] = swa["score"] - runs.read_metrics(baseline)["score"]
        out[f"{name} kept"] = float(swa["selected"])
        out[f"{name} weights"] = b.test([_swa_model(run)])[0]  # the SWA weights themselves, kept or not
    return out


def _swa_model(run: Path) -> Path:
    """An exported copy of the run whose best.pt is its swa.pt."""
    import shutil

    from kaggle_transfer.training.export import export

    copy = run.with_name(run.name + "_weights")
    shutil.copytree(run, copy)
    shutil.copyfile(copy / "swa.pt", copy / "best.pt")
    return Path(export(copy)["path"])


def scarce_labels(seed: int, epochs: int, labelled: float, tmp: Path) -> dict[str, float]:
    from kaggle_transfer import runs
    from kaggle_transfer.inference import ensemble
    from kaggle_transfer.inference.predictor import Choice, RunOptions, load_predictor
    from kaggle_transfer.inference.pseudo import pseudo_label

    data = _digits(tmp / f"digits{seed}", labelled, seed)
    b = Bench(data, tmp / f"runs{seed}", seed, epochs)
    out = {}
    baseline = b.train("baseline")
    out["baseline"], out["baseline_predict_s"] = b.test([baseline / "model.onnx"])
    for name, changes in (("+swa", {"swa_epochs": min(3, epochs)}), ("+swa, lr held", SWA_HELD),
                          ("+mixup", {"mix": "mixup"})):
        run = b.train(name.strip("+").replace(", ", "_").replace(" ", "_"), **changes)
        out[name] = b.test([run / "model.onnx"])[0]
    swa = runs.read_metrics(b.root / "swa")["swa"]  # the SWA weights on validation, kept or not
    out["swa_val_gain"] = swa["score"] - runs.read_metrics(baseline)["score"]
    out["swa_selected"] = float(swa["selected"])
    teachers = [b.group(f"teacher{k}", seed=seed * 10 + k) for k in range(3)]
    spec = Path(ensemble.build(b.comp.name, teachers, method="greedy", out=b.root / "teacher.json")["path"])
    out["teacher"], out["teacher_predict_s"] = b.test(spec=spec)
    teacher = load_predictor(str(data / "digits.yaml"), Choice(ensemble=spec), RunOptions(progress=False, threads=2))
    table = pseudo_label(teacher, images=data / "unlabelled", out=b.root / "pseudo.csv")
    out["pseudo_rows"] = table["kept"]
    pseudo = [f"pseudo={table['path']}"]
    out["+pseudo"] = b.test([b.train("pseudo", external=pseudo) / "model.onnx"])[0]
    distilled = b.train("distill", teacher=str(spec), external=pseudo)
    out["+distill"], out["distill_predict_s"] = b.test([distilled / "model.onnx"])
    return out


def metadata(seed: int, epochs: int, tmp: Path) -> dict[str, float]:
    data = _digits(tmp / f"meta{seed}", 0.3, seed, meta=True)
    b = Bench(data, tmp / f"meta_runs{seed}", seed, epochs)
    return {"image only": b.test([b.train("image") / "model.onnx"])[0],
            "image + metadata": b.test([b.train("meta", meta=True) / "model.onnx"])[0]}


def lesions(seed: int, epochs: int, tmp: Path) -> dict[str, float]:
    from kaggle_transfer import config
    from kaggle_transfer.competitions import synthetic
    from kaggle_transfer.training.loop import fit

    data = synthetic.make("siim_isic", tmp / f"siim{seed}", n_train=400, n_test=8, image_size=64, seed=seed)
    train = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(seed)
    train["age_approx"] = (40 + 15 * train["target"].astype(int) + rng.normal(0, 15, len(train))).round().astype(int)
    train.to_csv(data / "train.csv", index=False)
    out = {}
    for name, meta in (("lesions image only", False), ("lesions image + metadata", True)):
        cfg = config.resolve(flags={"competition": "siim_isic", "arch": "test_resnet", "pretrained": False,
                                    "size": 48, "epochs": epochs, "batch_size": 32, "lr": 3e-3, "workers": 2,
                                    "seed": seed, "split": "kfold", "folds": 4, "meta": meta})
        run = tmp / f"siim_runs{seed}" / name.replace(" ", "_").replace("+", "and")
        run.mkdir(parents=True)
        out[name] = fit(cfg, run, data, progress=False)["score"]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--labelled", type=float, default=0.15, help="share of the training images that keep labels")
    p.add_argument("--parts", default="digits,lesions",
                   help="digits (scarce labels and metadata), lesions, swa (the SWA rows alone)")
    a = p.parse_args()
    parts = a.parts.split(",")
    rows: list[dict[str, float]] = []
    meta_rows: list[dict[str, float]] = []
    lesion_rows: list[dict[str, float]] = []
    swa_rows: list[dict[str, float]] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.seeds):
            if "digits" in parts:
                rows.append(scarce_labels(seed, a.epochs, a.labelled, Path(tmp)))
                meta_rows.append(metadata(seed, a.epochs, Path(tmp)))
            if "lesions" in parts:
                lesion_rows.append(lesions(seed, a.epochs, Path(tmp)))
            if "swa" in parts:
                swa_rows.append(swa_only(seed, a.epochs, a.labelled, Path(tmp)))
                print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in swa_rows[-1].items()), flush=True)
            done = {**(rows[-1] if rows else {}), **(meta_rows[-1] if meta_rows else {}),
                    **(lesion_rows[-1] if lesion_rows else {})}
            print(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in done.items()), flush=True)
    if swa_rows:
        swa_frame = pd.DataFrame(swa_rows)
        print(f"\nSWA on scarce-label digits, held-out accuracy over {a.seeds} seeds (mean ± std)")
        for name in swa_frame.columns:
            print(f"{name:<26} {swa_frame[name].mean():+.4f} ± {swa_frame[name].std(ddof=0):.4f}")
    if lesion_rows:
        lesion_frame = pd.DataFrame(lesion_rows)
        print(f"\nsynthetic SIIM-ISIC lesions, 400 images, age depends on the label; validation ROC AUC over {a.seeds} "
              f"seeds (test_resnet @ 48 px, {a.epochs} epochs)")
        for name in lesion_frame.columns:
            print(f"{name:<26} {lesion_frame[name].mean():.4f} ± {lesion_frame[name].std(ddof=0):.4f}")
    if not rows:
        print(f"\n{(time.time() - t0) / 60:.1f} min in all")
        return
    frame, meta_frame = pd.DataFrame(rows), pd.DataFrame(meta_rows)
    print(f"\ndigits, {a.labelled:.0%} of the 1,347 training labels kept, test_resnet @ 32 px from scratch, "
          f"{a.epochs} epochs, {a.seeds} seeds; held-out accuracy on 450 test images (mean ± std)")
    print(f"{'run':<18} {'accuracy':>17} {'vs baseline':>12}")
    for name in ("baseline", "+swa", "+swa, lr held", "+mixup", "+pseudo", "+distill", "teacher"):
        d = frame[name] - frame["baseline"]
        print(f"{name:<18} {frame[name].mean():.4f} ± {frame[name].std(ddof=0):.4f} "
              f"{d.mean():+.4f} ± {d.std(ddof=0):.4f}")
    print(f"SWA weights on validation vs the best epoch: {frame['swa_val_gain'].mean():+.4f} ± "
          f"{frame['swa_val_gain'].std(ddof=0):.4f}; kept as best.pt in {int(frame['swa_selected'].sum())} of "
          f"{len(frame)} runs")
    teacher_s, distill_s = frame["teacher_predict_s"].mean(), frame["distill_predict_s"].mean()
    print(f"pseudo rows kept: {frame['pseudo_rows'].mean():.0f}; predict time on 450 images: teacher "
          f"{teacher_s:.2f} s (9 ONNX files), distilled {distill_s:.2f} s (1 file): {teacher_s / distill_s:.1f}x")
    print("\nmetadata (a numeric column = label x 10 + N(0, 15); 30% of labels kept):")
    for name in meta_frame.columns:
        print(f"{name:<18} {meta_frame[name].mean():.4f} ± {meta_frame[name].std(ddof=0):.4f}")
    print(f"\n{(time.time() - t0) / 60:.1f} min in all")


if __name__ == "__main__":
    main()
