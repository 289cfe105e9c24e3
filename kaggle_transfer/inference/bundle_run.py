"""What a bundle's kt_predict.py runs inside the notebook: torch-free prediction from bundle.json."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import KtError
from ..fsutil import sha256


def run(bundle: Path, data_dir: str | None, out_root: Path) -> Path:
    from .pipeline import predict_submission

    spec = json.loads((Path(bundle) / "bundle.json").read_text())
    models = []
    for m in spec["models"]:
        path = Path(bundle) / m["file"]
        if sha256(path) != m["sha256"]:
            raise KtError(f"{path} does not match the sha256 recorded in bundle.json")
        models.append(path)
    manifest = predict_submission(spec["competition"], models, data_dir, out_root=out_root, label="bundle",
                                  tta=spec["tta"],
                                  overwrite=True, progress=False, blend_method=spec["blend"],
                                  weights=spec["weights"], fitted=spec["fitted"],
                                  precision=spec.get("precision", "fp32"))
    return Path(manifest["submission"])
