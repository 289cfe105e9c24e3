"""ruff stays clean on the package, the tests and the benchmarks (CI runs only `make test`), the package
is formatted by `ruff format`, and its code lines are as dense as well-kept libraries' (at most 5 % past
100 columns, none past 120)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> str:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is a dev extra: pip install -e .[dev]")
    return ruff


def test_ruff_is_clean():
    out = subprocess.run([_ruff(), "check", "kaggle_transfer", "tests", "benchmarks"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]


def test_the_package_is_formatted():
    out = subprocess.run([_ruff(), "format", "--check", "kaggle_transfer"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, f"run `make format`:\n{out.stdout[-2000:]}"


def test_code_lines_are_dense_not_wide():
    code = [(path, n, line) for path in (ROOT / "kaggle_transfer").rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")]
    wide = [(p, n) for p, n, line in code if len(line) > 100]
    assert len(wide) / len(code) <= 0.05, f"{len(wide)} of {len(code)} code lines pass 100 columns"
    assert not [f"{p.relative_to(ROOT)}:{n}" for p, n, line in code if len(line) > 120]
