"""The Python API: docs/python.md's worked example runs as written, and the functions are the CLI's."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_documented_example_runs(tmp_path, monkeypatch, capsys):
    code = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "python.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/python.md", "exec"), {})
    out = capsys.readouterr().out
    assert len(re.findall(r"^work/runs/aptos/\S+ qwk [01]\.\d+$", out, re.M)) == 2 and "'rows': 12" in out
    csv = next(Path("work/submissions/aptos").glob("*/submission.csv"))
    assert len(csv.read_text().splitlines()) == 13


def test_keywords_are_config_keys_and_mistakes_are_kt_errors(tmp_path):
    import kaggle_transfer as kt
    from kaggle_transfer.errors import KtError

    assert {"train", "export", "ensemble", "predict", "validate"} <= set(kt.__all__)
    with pytest.raises(KtError, match="unknown config key 'szie'"):
        kt.train("aptos", szie=32, data_dir=tmp_path)
    with pytest.raises(KtError, match="model nope.onnx not found"):
        kt.predict("aptos", "nope.onnx", data_dir=tmp_path)
