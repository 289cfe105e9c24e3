"""How answers look in a submission CSV, per (task kind, value format): one place for every competition.

| kind                  | index (default)                        | name                              |
|-----------------------|----------------------------------------|-----------------------------------|
| ordinal, multiclass   | `3`                                    | `rust` (a class name)             |
| multilabel            | `0 5 25` (distinct, may be blank)      | `rust scab` (names, separator)    |
| binary                | `0.731000` (a probability in [0, 1])   | —                                 |

HPA (multilabel, indices, space), SIIM-ISIC (binary), APTOS and Cassava (index) and every
YAML-described competition use the same functions; an adapter only states its kind, value format
and label separator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

VALUE_FORMATS = ("index", "name")


@dataclass(frozen=True)
class AnswerFormat:
    kind: str  # a task kind (tasks.KINDS)
    class_names: tuple[str, ...]
    value_format: str = "index"  # index | name
    separator: str = " "  # multilabel: between labels

    def label(self, value: str) -> int:
        """One label cell → class index; ValueError when it is neither a known name nor an index in range.
        An index is written as plain digits: `2.0`, `+2` or ` 2` are what a scorer may read otherwise."""
        if self.value_format == "name" and value in self.class_names:
            return self.class_names.index(value)
        if not (value.isascii() and value.isdigit()) or not 0 <= int(value) < len(self.class_names):
            raise ValueError(value)
        return int(value)

    def format(self, answers: np.ndarray) -> list[Any]:
        """Decoded answers (grades, classes, 0/1 rows, probabilities) → submission cells."""
        by_name = self.value_format == "name"
        if self.kind == "binary":
            return [f"{float(p):.6f}" for p in answers]
        if self.kind == "multilabel":
            return [
                self.separator.join(
                    self.class_names[k] if by_name else str(k) for k in np.flatnonzero(row)
                )
                for row in answers
            ]
        return [self.class_names[int(a)] if by_name else int(a) for a in answers]

    def check(self, value: str) -> bool:
        """Whether one submission cell is in the answer domain."""
        try:
            if self.kind == "binary":
                return 0.0 <= float(value) <= 1.0  # NaN fails both comparisons
            if self.kind == "multilabel":
                labels = [self.label(v) for v in value.split(self.separator) if v.strip()]
                return len(set(labels)) == len(labels)
            if self.value_format == "name":
                return value in self.class_names
            self.label(value)
            return True
        except ValueError:
            return False

    def parse(self, values: list[str]) -> np.ndarray:
        """Submission cells → the array the metric takes (inverse of format)."""
        if self.kind == "binary":
            return np.asarray([float(v) for v in values])
        if self.kind == "multilabel":
            out = np.zeros((len(values), len(self.class_names)), dtype=int)
            for i, v in enumerate(values):
                out[i, [self.label(t) for t in str(v).split(self.separator) if t.strip()]] = 1
            return out
        return np.asarray([self.label(str(v)) for v in values])
