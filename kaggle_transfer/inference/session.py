"""Load self-describing ONNX models onto the best available onnxruntime provider."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import KtError
from ..fsutil import sha256

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass
class OnnxModel:
    path: Path
    session: Any
    meta: dict[str, Any]

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    def run(self, batch) -> Any:
        return self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]


def _gpu_present() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0"))


def provider_list(provider: str) -> list[str]:
    """Providers to ask for, best first. `auto` asks for CUDA only where an NVIDIA device exists,
    because onnxruntime-gpu on a CPU machine logs a load error for every session otherwise."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "auto":
        wanted = (["cuda"] if _gpu_present() else []) + ["cpu"]
    elif provider in PROVIDERS:
        wanted = [provider] if provider == "cpu" else [provider, "cpu"]
    else:
        raise KtError(f"--provider {provider!r} is not valid; choose auto, {', '.join(PROVIDERS)}")
    chosen = [PROVIDERS[w] for w in wanted if PROVIDERS[w] in available]
    if provider not in ("auto", "cpu") and PROVIDERS[provider] not in available:
        raise KtError(f"--provider {provider}: this onnxruntime has only {', '.join(available)}")
    if "CUDAExecutionProvider" in chosen and hasattr(ort, "preload_dlls"):
        try:  # CUDA/cuDNN from the nvidia-* wheels that torch or onnxruntime-gpu[cuda] installed
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - system CUDA may still work; the session reports what ran
            pass
    return chosen


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The `kt` metadata of an ONNX file, without building a session."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise KtError(f"model {path} not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        raise KtError(f"{path} is not a readable ONNX file: {type(e).__name__}") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if "kt" not in props:
        raise KtError(f"{path} has no kt metadata; export it with `kt export RUN_DIR`")
    return json.loads(props["kt"])


def load_model(path: str | Path, provider: str = "auto", threads: int = 0) -> OnnxModel:
    import onnxruntime as ort

    path = Path(path)
    meta = read_metadata(path)
    if meta.get("competition_spec"):
        from .. import competitions

        if meta["competition"] not in competitions.CUSTOM:
            competitions.register(meta["competition_spec"])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads  # 0 = onnxruntime's default (one per physical core)
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=provider_list(provider))
    return OnnxModel(path, session, meta)


def expand(patterns: list[str]) -> list[Path]:
    """Model arguments may be globs (quoted or not); the order is kept, duplicates dropped."""
    out: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise KtError(f"no model matches {pattern!r}")
        out += [Path(m) for m in matches if Path(m) not in out]
    return out


def load_ensemble(paths: list[str | Path], competition: str | None, provider: str = "auto") -> list[OnnxModel]:
    """Load every model; all must belong to `competition` and share one task and class count."""
    if not paths:
        raise KtError("no models given; pass one or more model.onnx files (kt export RUN_DIR makes them)")
    models = [load_model(p, provider) for p in paths]
    first = models[0]
    for m in models:
        if competition and m.meta["competition"] != competition:
            raise KtError(f"{m.path} was trained for {m.meta['competition']!r}, not {competition!r}; "
                          "remove it from the ensemble")
        for key in ("competition", "task", "num_classes"):
            if m.meta[key] != first.meta[key]:
                raise KtError(f"{m.path} has {key}={m.meta[key]!r} but {first.path} has {first.meta[key]!r}; "
                              "an ensemble needs one competition and task")
    return models


def describe(model: OnnxModel) -> dict[str, Any]:
    return {"file": str(model.path), "sha256": sha256(model.path), "arch": model.meta["arch"],
            "size": model.size, "score": model.meta.get("score"), "provider": model.provider,
            "run": model.meta.get("run")}
