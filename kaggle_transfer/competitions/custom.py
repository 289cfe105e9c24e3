"""Any image-classification competition described by one small YAML — no Python needed.

    name: plant-pathology            # folder names; required
    slug: plant-pathology-2021-fgvc8 # Kaggle slug (optional)
    submit_via: csv                  # csv | notebook | none
    task: multiclass                 # multiclass | multilabel | binary | ordinal
    metric: accuracy                 # optional; default: accuracy, macro_f1, roc_auc, qwk by task
    classes: [healthy, rust, scab]   # or num_classes: N
    train_csv: train.csv
    id_column: image
    target_column: labels            # names or indices; multilabel: joined by label_separator
    # target_columns: [healthy, rust, scab]  # multilabel as one 0/1 column per class instead
    label_separator: " "
    image_pattern: train_images/{id}          # {id}, and {channel} when `channels` is given
    test_image_pattern: test_images/{id}
    # channels: [red, green, blue, yellow]
    test_csv: test.csv               # or only sample_submission, whose first column lists the test ids
    sample_submission: sample_submission.csv
    submission_columns: [image, labels]   # default [id_column, target_column]
    value_format: name               # multiclass/multilabel answers as class names (name) or indices (index)
    group_column: patient            # optional: grouped splits
    meta_columns: {age: numeric, site: category}  # optional: tabular inputs beside the image (--set meta=true);
                                     # read from train_csv and test_csv
    recipe: {arch: resnet50, size: 384}   # optional RunConfig defaults

Paths are relative to the data folder. Every error names the key at fault.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from ..data import tabular
from ..errors import KtError
from ..files import read_yaml
from ..metrics import METRICS
from ..tasks import KINDS, Task
from .answers import VALUE_FORMATS
from .base import Competition, KaggleFacts, check_files, read_csv, with_meta

DEFAULT_METRIC = {
    "multiclass": "accuracy",
    "multilabel": "macro_f1",
    "binary": "roc_auc",
    "ordinal": "qwk",
}
KEYS = {
    "name",
    "slug",
    "title",
    "submit_via",
    "task",
    "metric",
    "classes",
    "num_classes",
    "train_csv",
    "id_column",
    "target_column",
    "target_columns",
    "label_separator",
    "image_pattern",
    "test_image_pattern",
    "channels",
    "test_csv",
    "sample_submission",
    "submission_columns",
    "value_format",
    "group_column",
    "recipe",
    "meta_columns",
}
REQUIRED = ("name", "task", "train_csv", "id_column", "image_pattern")
FILE_KEYS = ("train_csv", "test_csv", "sample_submission", "image_pattern", "test_image_pattern")
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# the type every key must have; a list's items are strings (class names, column names, channel names)
TYPES: dict[str, type] = {
    "name": str,
    "slug": str,
    "title": str,
    "submit_via": str,
    "task": str,
    "metric": str,
    "classes": list,
    "num_classes": int,
    "train_csv": str,
    "id_column": str,
    "target_column": str,
    "target_columns": list,
    "label_separator": str,
    "image_pattern": str,
    "test_image_pattern": str,
    "channels": list,
    "test_csv": str,
    "sample_submission": str,
    "submission_columns": list,
    "value_format": str,
    "group_column": str,
    "recipe": dict,
    "meta_columns": dict,
}
TYPE_WORDS = {str: "a string", int: "an integer", list: "a list", dict: "a mapping"}
PATTERN_FIELDS = ("id", "channel")


def parse_pattern(pattern: str, where: str) -> list[tuple[str, str | None]]:
    """A file pattern as (literal text, field) parts: fields are {id} and {channel} only, with no
    conversion, format spec, index or attribute (a spec like {id:>100000000} would pad every path to
    100 MB). Every pattern, from a YAML or from a model file's metadata, is parsed here once."""
    import string

    try:
        parts = list(string.Formatter().parse(pattern))
    except ValueError as e:
        raise KtError(
            f"{where} is {pattern!r}: {e}; write fields as {{id}} or {{channel}}"
        ) from None
    out = []
    for literal, field, spec, conversion in parts:
        if field is not None and (field not in PATTERN_FIELDS or spec or conversion):
            shown = (
                "{"
                + field
                + (f"!{conversion}" if conversion else "")
                + (f":{spec}" if spec else "")
                + "}"
            )
            raise KtError(
                f"{where} has the field {shown[:40]!r}; only {{id}} and {{channel}} are allowed, "
                "without format specs, conversions, indices or attributes"
            )
        out.append((literal, field))
    return out


def fill(parts: list[tuple[str, str | None]], **values: str) -> str:
    """The path a parsed pattern names for these values: literal text and the values, joined."""
    return "".join(literal + (str(values[field]) if field else "") for literal, field in parts)


def _check_patterns(spec: dict, where: str) -> None:
    """Both patterns name each image by {id} (a test pattern without it would answer every id from one
    file), and use {channel} exactly when the competition lists channels."""
    for key in ("image_pattern", "test_image_pattern"):
        if spec.get(key) is None:
            continue
        fields = {field for _, field in parse_pattern(spec[key], f"{where}: key {key!r}") if field}
        if "id" not in fields:
            raise KtError(
                f"{where}: key {key!r} must contain {{id}}, e.g. {key.split('_')[0]}_images/{{id}}.jpg"
            )
        if ("channel" in fields) != bool(spec.get("channels")):
            raise KtError(
                f"{where}: key {key!r} and key 'channels' go together: {{channel}} in the pattern "
                "needs a channels list, and a channels list needs {channel} in the pattern"
            )


def _check_columns(spec: dict, where: str) -> None:
    """Class and channel names distinct and non-empty; metadata never a label, id or group column."""
    for key in ("classes", "channels", "target_columns", "submission_columns"):
        names = [str(v) for v in spec.get(key) or []]
        if len(set(names)) != len(names) or any(not n.strip() for n in names):
            raise KtError(f"{where}: key {key!r} lists a name twice or an empty one: {names[:8]}")
    sep = spec.get("label_separator", " ")
    if spec["task"] == "multilabel" and any(sep in str(c) for c in spec.get("classes") or []):
        raise KtError(
            f"{where}: a class name contains the label separator {sep!r}; rename it or change "
            "'label_separator'"
        )
    if spec["task"] == "binary" and len(spec.get("classes") or ["0", "1"]) != 2:
        raise KtError(
            f"{where}: key 'classes' lists {len(spec['classes'])} names; a binary task has two"
        )
    if spec.get("submission_columns") is not None and len(spec["submission_columns"]) != 2:
        raise KtError(
            f"{where}: key 'submission_columns' must name two columns: the id and the answer"
        )
    declared = spec.get("meta_columns") or {}
    if not all(isinstance(k, str) for k in declared):
        raise KtError(
            f"{where}: key 'meta_columns' must map column names (strings) to numeric or category"
        )
    labels = {
        spec.get("target_column"),
        spec.get("id_column"),
        spec.get("group_column"),
        *(spec.get("target_columns") or []),
    } - {None}
    if set(declared) & labels:
        raise KtError(
            f"{where}: key 'meta_columns' declares {sorted(set(declared) & labels)[0]!r}, a label, id or "
            "group column: as an input it would leak the answer; remove it"
        )
    if spec.get("slug") is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]{1,98}", spec["slug"]):
        raise KtError(
            f"{where}: key 'slug' is {spec['slug']!r}; a Kaggle slug has lower-case letters, digits "
            "and dashes"
        )
    if isinstance(spec.get("recipe"), dict) and {"competition", "competition_file"} & set(
        spec["recipe"]
    ):
        raise KtError(
            f"{where}: key 'recipe' may not set competition or competition_file (the YAML is the "
            "competition)"
        )


def _check_types(spec: dict, where: str) -> None:
    for key, kind in TYPES.items():
        value = spec.get(key)
        if value is None:
            continue
        wrong = not isinstance(value, kind) or (kind is int and isinstance(value, bool))
        if kind is list and not wrong:
            wrong = not value or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
            )
        if wrong:
            raise KtError(
                f"{where}: key {key!r} is {str(value)[:60]!r}; it must be {TYPE_WORDS[kind]}"
                + (" of names" if kind is list else "")
            )
    if (
        "num_classes" in spec
        and spec["num_classes"] is not None
        and not 2 <= spec["num_classes"] <= 100_000
    ):
        raise KtError(
            f"{where}: key 'num_classes' is {spec['num_classes']}; it must be between 2 and 100000"
        )
    if spec.get("label_separator") == "":
        raise KtError(f"{where}: key 'label_separator' is empty; use ' ' or another separator")


def _need(spec: dict, key: str, where: str) -> Any:
    if key not in spec or spec[key] in (None, ""):
        raise KtError(f"{where}: key {key!r} is required")
    return spec[key]


def check_spec(spec: Any, where: str) -> dict[str, Any]:
    """Validate a competition YAML; every problem names its key."""
    if not isinstance(spec, dict):
        raise KtError(f"{where} must be a mapping of keys (name, task, train_csv, ...)")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise KtError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(KEYS))}"
        )
    for key in REQUIRED:
        _need(spec, key, where)
    _check_types(spec, where)
    _check_patterns(spec, where)
    _check_columns(spec, where)
    if not isinstance(spec["name"], str) or not NAME.fullmatch(spec["name"]):
        raise KtError(
            f"{where}: key 'name' is {spec['name']!r}; use lower-case letters, digits, '_' and '-' "
            "(it names folders: runs/<name>/, submissions/<name>/)"
        )
    for key in FILE_KEYS:  # read from the data folder, never from elsewhere
        value = spec.get(key)
        if value is not None and (
            not isinstance(value, str)
            or Path(value).is_absolute()
            or ".." in Path(value.replace("{id}", "x").replace("{channel}", "x")).parts
        ):
            raise KtError(
                f"{where}: key {key!r} is {value!r}; give a path relative to the data folder, "
                "without '..'"
            )
    if spec["task"] not in KINDS:
        raise KtError(f"{where}: key 'task' is {spec['task']!r}; valid: {', '.join(KINDS)}")
    if spec.get("metric", DEFAULT_METRIC[spec["task"]]) not in METRICS:
        raise KtError(f"{where}: key 'metric' is {spec['metric']!r}; valid: {', '.join(METRICS)}")
    if spec.get("submit_via", "csv") not in ("csv", "notebook", "none"):
        raise KtError(f"{where}: key 'submit_via' must be csv, notebook or none")
    if "target_column" not in spec and "target_columns" not in spec:
        raise KtError(
            f"{where}: key 'target_column' (or 'target_columns' for one column per label) is required"
        )
    if "target_columns" in spec and spec["task"] != "multilabel":
        raise KtError(f"{where}: key 'target_columns' is for multilabel tasks; use 'target_column'")
    classes = spec.get("classes") or spec.get("target_columns")
    if spec["task"] == "binary":
        classes = classes or ["0", "1"]
    if not classes and not spec.get("num_classes"):
        raise KtError(f"{where}: key 'classes' (a list of names) or 'num_classes' is required")
    if classes is not None and not isinstance(classes, list):
        raise KtError(f"{where}: key 'classes' must be a list")
    if not spec.get("test_csv") and not spec.get("sample_submission"):
        raise KtError(f"{where}: key 'test_csv' or 'sample_submission' is required (the test ids)")
    if spec.get("value_format", "index") not in VALUE_FORMATS:
        raise KtError(f"{where}: key 'value_format' must be index or name")
    if spec.get("meta_columns") is not None:
        tabular.check_declared(spec["meta_columns"], f"{where} key 'meta_columns'")
        if not spec.get("test_csv"):
            raise KtError(
                f"{where}: key 'meta_columns' needs 'test_csv' (the test rows' metadata come from it)"
            )
    if not isinstance(spec.get("recipe", {}), dict):
        raise KtError(f"{where}: key 'recipe' must be a mapping of config keys")
    out = dict(spec)
    out["classes"] = (
        [str(c) for c in classes] if classes else [str(k) for k in range(int(spec["num_classes"]))]
    )
    return out


def load_spec(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise KtError(f"competition file {path} not found")
    spec = read_yaml(path, what="competition file")
    return check_spec(spec, str(path))


class CustomCompetition(Competition):
    def _label_index(self, value: str, where: str) -> int:
        names = self.class_names
        if value in names:
            return names.index(value)
        try:
            k = int(float(value))
        except ValueError:
            raise KtError(
                f"{where}: label {value!r} is neither a class name nor an index"
            ) from None
        if not 0 <= k < len(names):
            raise KtError(f"{where}: label {value!r} is outside 0..{len(names) - 1}")
        return k

    def _targets(self, df: pd.DataFrame, path: Path) -> list:
        spec, kind = self.spec, self.task.kind
        if "target_columns" in spec:
            return [
                tuple(
                    k for k, c in enumerate(spec["target_columns"]) if str(row[c]) in ("1", "1.0")
                )
                for _, row in df.iterrows()
            ]
        col = spec["target_column"]
        where = [f"{path} row {n + 2} ({col})" for n in range(len(df))]
        if kind == "multilabel":
            sep = spec.get("label_separator", " ")
            return [
                tuple(sorted({self._label_index(v, w) for v in str(t).split(sep) if v.strip()}))
                for t, w in zip(df[col], where, strict=True)
            ]
        return [self._label_index(str(t), w) for t, w in zip(df[col], where, strict=True)]

    def _paths(self, data_dir: Path, pattern: str, ids: pd.Series) -> list[tuple[str, ...]]:
        parts = parse_pattern(pattern, f"competition {self.name}: image pattern")
        channels = self.spec.get("channels") or [None]
        return [tuple(str(data_dir / fill(parts, id=i, channel=c)) for c in channels) for i in ids]

    def read(self, data_dir: Path, split: str, skip_bad_images: bool = False) -> pd.DataFrame:
        return (self._train if split == "train" else self._test)(Path(data_dir), skip_bad_images)

    def _train(self, data_dir: Path, skip_bad_images: bool) -> pd.DataFrame:
        data_dir, spec = Path(data_dir), self.spec
        columns = [spec["id_column"]] + (spec.get("target_columns") or [spec["target_column"]])
        columns += [spec["group_column"]] if spec.get("group_column") else []
        path = data_dir / spec["train_csv"]
        df = read_csv(path, columns + list(self.meta_columns), f"{self.name} train_csv")
        table = pd.DataFrame(
            {
                "id": df[spec["id_column"]].to_numpy(),
                "paths": self._paths(data_dir, spec["image_pattern"], df[spec["id_column"]]),
                "source": "competition",
                "target": self._targets(df, path),
            }
        )
        if spec.get("group_column"):
            table["group"] = df[spec["group_column"]].to_numpy()
        return check_files(with_meta(table, df, self.meta_columns), skip_bad_images)

    def _test(self, data_dir: Path, skip_bad_images: bool) -> pd.DataFrame:
        data_dir, spec = Path(data_dir), self.spec
        key = "test_csv" if spec.get("test_csv") else "sample_submission"
        id_col = spec["id_column"] if key == "test_csv" else self.id_column
        df = read_csv(
            data_dir / spec[key],
            [id_col] + (list(self.meta_columns) if key == "test_csv" else []),
            f"{self.name} {key}",
        )
        pattern = spec.get("test_image_pattern") or spec["image_pattern"]
        table = pd.DataFrame(
            {
                "id": df[id_col].to_numpy(),
                "paths": self._paths(data_dir, pattern, df[id_col]),
                "source": "competition",
            }
        )
        return check_files(with_meta(table, df, self.meta_columns), skip_bad_images)

    def sample_submission(self, data_dir: Path) -> pd.DataFrame | None:
        name = self.spec.get("sample_submission")
        path = Path(data_dir) / name if name else None
        return (
            read_csv(path, [], f"{self.name} sample submission")
            if path and path.is_file()
            else None
        )


def from_spec(spec: dict[str, Any]) -> CustomCompetition:
    columns = spec.get("submission_columns") or [
        spec["id_column"],
        spec.get("target_column", "target"),
    ]
    comp = CustomCompetition(
        name=str(spec["name"]),
        title=spec.get("title", spec["name"]),
        task=Task(
            spec["task"], len(spec["classes"]), spec.get("metric", DEFAULT_METRIC[spec["task"]])
        ),
        kaggle=KaggleFacts(slug=spec.get("slug"), submit_via=spec.get("submit_via", "csv")),
        id_column=columns[0],
        target_column=columns[1],
        class_names=spec["classes"],
        channels=tuple(spec.get("channels") or ("red", "green", "blue")),
        value_format=spec.get("value_format", "index"),
        label_separator=spec.get("label_separator", " "),
        meta_columns=dict(spec.get("meta_columns") or {}),
        spec=spec,
    )
    return comp
