"""The competition adapter: what a contest IS, and how its files become the standard table.

Standard table (pandas): `id`, `paths` (tuple of image files), `target` (absent for test),
`group` (optional, for grouped splits), `source` ("competition" or an external source's name).
Everything downstream reads only this table.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import KtError
from ..files import contained
from ..protocol import PaperRecipe
from ..tasks import Task
from .answers import AnswerFormat


def read_csv(path: Path, columns: list[str], what: str) -> pd.DataFrame:
    """Read a competition CSV, naming the file and the missing columns when it is not as expected."""
    if not path.is_file():
        raise KtError(f"{what} not found: {path}; check --data-dir (kt download fetches the files)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise KtError(f"{path} is not a readable CSV: {' '.join(str(e).split())[:200]}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KtError(
            f"{path} lacks column(s) {', '.join(missing)}; header is {','.join(df.columns)}; "
            f"expected {','.join(columns)}"
        )
    duplicated = df[columns[0]][df[columns[0]].duplicated()] if columns else []
    if len(duplicated):
        raise KtError(
            f"{path} has duplicate {columns[0]} values, e.g. {duplicated.iloc[0]!r}; ids must be unique"
        )
    return df


def parse_int_labels(values: pd.Series, path: Path, column: str, num_classes: int) -> np.ndarray:
    """Integer labels in 0..num_classes-1; names the first offending row otherwise."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | (numeric % 1 != 0) | (numeric < 0) | (numeric >= num_classes)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise KtError(
            f"{path}: {column} must be an integer in 0..{num_classes - 1}; "
            f"row {row + 2} has {values.iloc[row]!r}"
        )
    return numeric.astype(int).to_numpy()


def check_files(table: pd.DataFrame, skip_missing: bool) -> pd.DataFrame:
    """Every image file must exist. With skip_missing (--skip-bad-images), rows whose file is missing,
    unreadable or over the pixel budget are dropped and counted instead (headers only are read)."""
    from ..data.images import probe

    if skip_missing:
        problems = [next((q for q in map(probe, paths) if q), None) for paths in table["paths"]]
        good = np.array([q is None for q in problems], dtype=bool)
        table = table[good].reset_index(drop=True)
        table.attrs["skipped_images"] = int((~good).sum())
        table.attrs["bad_images"] = [q for q in problems if q][:20]
        return table
    exists = np.array(
        [all(os.path.isfile(p) for p in paths) for paths in table["paths"]], dtype=bool
    )
    if not exists.all():
        first = next(
            p for paths in table.loc[~exists, "paths"] for p in paths if not os.path.isfile(p)
        )
        what = "missing or folders" if os.path.isdir(first) else "missing"
        raise KtError(
            f"{(~exists).sum()} image file(s) {what}, e.g. {first}; "
            "fix the data folder or pass --skip-bad-images to drop those rows"
        )
    return table


def random_uuid(rng: np.random.Generator) -> str:
    """A UUID-shaped id drawn from `rng` (the synthetic layouts' image ids, as HPA and CCT-20 name them)."""
    h = "".join(rng.choice(list("0123456789abcdef"), 32))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def with_meta(table: pd.DataFrame, df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """The declared metadata columns of the CSV rows, kept in the standard table under their own names."""
    for name in columns:
        table[name] = df[name].to_numpy() if name in df.columns else np.nan
    return table


@dataclass(frozen=True)
class KaggleFacts:
    """How a contest meets Kaggle: where its files come from and how an answer is submitted."""

    slug: str | None = None  # the competition's slug; None for a local dataset
    submit_via: str = "csv"  # csv | notebook (code competition) | none
    daily_limit: int = 5  # submissions a day when the client cannot tell (Kaggle's usual limit)
    accelerator: str = (
        "gpu"  # code competitions: what the prediction notebook asks for (gpu | none)
    )
    hidden_test_images: int = 0  # code competitions: the hidden test set's size (for estimates)
    download_hint: str | None = None  # where the files come from when not from Kaggle


@dataclass(frozen=True)
class Evaluation:
    """Labelled test splits beside the training data (local datasets: CCT-20's cis/trans tests)."""

    splits: tuple[str, ...] = ()  # what `kt evaluate` scores
    reported: str | None = None  # the one the study reports (CCT-20: cis_test, HPA: test_val)


@dataclass
class Competition:
    """Facts about one contest, grouped: the data's columns and classes, `kaggle` (slug, submission),
    `paper` (the study's loader and split seed), `evaluation` (held-out splits), the answers' format
    (`answers`). A subclass implements one hook, `read(data_dir, split)`."""

    name: str
    title: str
    task: Task
    kaggle: KaggleFacts
    id_column: str
    target_column: str
    class_names: list[str]
    channels: tuple[str, ...] = ("red", "green", "blue")
    external: dict[str, str] = field(default_factory=dict)  # source name -> one-line description
    default_split: str = "paper"  # used when the run does not choose one
    paper: PaperRecipe = PaperRecipe()  # what the study's released loader does (--protocol paper)
    # tabular columns beside the image (data/tabular.py)
    meta_columns: dict[str, str] = field(default_factory=dict)
    value_format: str = "index"  # answers as class indices or names (answers.py)
    label_separator: str = " "  # multilabel answers: between labels
    evaluation: Evaluation = Evaluation()
    # the layout kt demo and the tests write (its generator, defined beside the adapter), and its
    # external sources' (name -> generator); competitions/synthetic.py finds them here
    synthetic: Callable[..., Path] | None = None
    synthetic_external: dict[str, Callable[..., Path]] = field(default_factory=dict)
    # a competition described by a YAML: its checked description, and the file it came from
    spec: dict[str, Any] | None = None
    spec_file: str | None = None

    @property
    def in_chans(self) -> int:
        return len(self.channels)

    def configure(self, **options: Any) -> Competition:
        """A copy with reading options applied (e.g. CCT-20's keep_empty). Most contests have none."""
        return self

    def select_channels(self, spec: str | None) -> list[int]:
        """Indices into `channels` from letters such as `rgb` or `rgby` (None: all, in order)."""
        if not spec:
            return list(range(self.in_chans))
        letters = [c[0] for c in self.channels]
        bad = [ch for ch in spec if ch not in letters]
        if bad or len(set(spec)) != len(spec):
            raise KtError(
                f"--set channels={spec} is not valid for {self.name}; letters of "
                f"{'/'.join(self.channels)}, e.g. {''.join(letters)}"
            )
        return [letters.index(ch) for ch in spec]

    def test_ids(self, data_dir: Path) -> list[str]:
        """The ids a submission must cover: the sample submission's, else the test table's."""
        sample = self.sample_submission(data_dir)
        if sample is not None:
            return list(sample.iloc[:, 0])
        return list(self.read_test(data_dir, skip_bad_images=True)["id"])

    @property
    def answers(self) -> AnswerFormat:
        return AnswerFormat(
            self.task.kind, tuple(self.class_names), self.value_format, self.label_separator
        )

    def parse_answers(self, values: list[str]) -> np.ndarray:
        """Submission cells → the array the metric takes (inverse of format_answers)."""
        return self.answers.parse(values)

    def format_answers(self, answers: np.ndarray) -> list[Any]:
        return self.answers.format(answers)

    def check_answer(self, value: str) -> bool:
        """Whether one submission cell is in the value domain (e.g. an integer grade 0-4)."""
        return self.answers.check(value)

    def read(self, data_dir: Path, split: str, skip_bad_images: bool = False) -> pd.DataFrame:
        """The standard table of `split` ("train", "test", or one of `evaluation.splits`): the one hook."""
        raise NotImplementedError

    def heldout_splits(self, data_dir: Path, cfg) -> tuple[str, ...]:
        """The labelled splits a finished run is scored on beside its validation rows: rows that run
        never trained on (CCT-20's test files; HPA's test_val under the study's split file)."""
        return self.evaluation.splits

    def read_train(self, data_dir: Path, skip_bad_images: bool = False) -> pd.DataFrame:
        return contained(
            self.read(data_dir, "train", skip_bad_images), data_dir, f"{self.name} train"
        )

    def read_test(self, data_dir: Path, skip_bad_images: bool = False) -> pd.DataFrame:
        """The test rows. --skip-bad-images is applied here for every adapter (one that lists its test
        folder rather than a CSV never checked its files itself)."""
        table = contained(
            self.read(data_dir, "test", skip_bad_images), data_dir, f"{self.name} test"
        )
        if skip_bad_images and "skipped_images" not in table.attrs:
            table = check_files(table, True)
        return table

    def kaggle_slug(self) -> str:
        """The Kaggle slug, or a one-line error saying where the files come from instead."""
        if not self.kaggle.slug:
            raise KtError(
                f"{self.name} is not a Kaggle competition: {self.kaggle.download_hint}"
                if self.kaggle.download_hint
                else f"{self.name} has no Kaggle slug in its description (add `slug:` to its YAML)"
            )
        return self.kaggle.slug

    def read_external(self, source: str, external_dir: Path) -> pd.DataFrame:
        raise KtError(
            f"{self.name} has no external source {source!r}; "
            f"valid: {', '.join(self.external) or 'none'}"
        )

    def sample_submission(self, data_dir: Path) -> pd.DataFrame | None:
        path = Path(data_dir) / "sample_submission.csv"
        return read_csv(path, [], f"{self.name} sample submission") if path.is_file() else None

    def submission_frame(self, ids: list[str], answers: np.ndarray) -> pd.DataFrame:
        """Decoded answers → the competition's submission columns."""
        return pd.DataFrame({self.id_column: ids, self.target_column: self.format_answers(answers)})

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "slug": self.kaggle.slug,
            "task": self.task.kind,
            "metric": self.task.metric,
            "submit_via": self.kaggle.submit_via,
            "classes": len(self.class_names),
            "channels": self.in_chans,
            "external": sorted(self.external),
        }
