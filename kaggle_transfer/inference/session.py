"""Load self-describing ONNX models onto the best available onnxruntime provider."""

from __future__ import annotations

import glob
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import runs
from ..config import IO_BINDING, PROVIDER_CHOICES  # the lists the CLI offers too
from ..errors import KtError
from ..files import sha256
from ..protocol import resize_of
from .half import to_fp16
from .metadata import check, check_graph, num_outputs

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
PRECISIONS = ("fp32", "fp16")


@dataclass
class OnnxModel:
    """One onnxruntime session with its kt metadata.

    With `io_binding`, `upload` places a batch on the session's device once (an OrtValue) and `run`
    binds it, so every model and TTA view that shares an input spec reuses one host-to-device copy."""

    path: Path
    session: Any
    meta: dict[str, Any]
    precision: str = "fp32"
    io_binding: bool = False

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def device(self) -> str:
        return "cuda" if self.provider in GPU_PROVIDERS else "cpu"

    @property
    def size(self) -> int:
        return int(self.meta["size"])

    @property
    def resize(self) -> str:
        """How images reach `size` (protocol.py): squash, or center_crop for --protocol paper runs."""
        return resize_of(self.meta)

    def upload(self, batch: np.ndarray) -> Any:
        """The batch on this model's device (an OrtValue) under IO binding; the array itself otherwise."""
        if not self.io_binding:
            return batch
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), self.device, 0)

    @property
    def meta_spec(self) -> dict[str, Any] | None:
        """The metadata encoding of a model with a second input `meta` (data/tabular.py); None for image-only models."""
        return self.meta.get("meta")

    def run(self, batch: Any, features: np.ndarray | None = None) -> np.ndarray:
        """Raw outputs of one batch; `features`: the rows' encoded metadata, for a model that takes them.
        A graph with symbolic dimensions is held to its metadata here: one row per image, the task's width."""
        out = self._run(batch, features)
        rows = batch.shape()[0] if callable(getattr(batch, "shape", None)) else len(batch)
        widths = {
            num_outputs(self.meta["task"], self.meta["num_classes"]),
            self.meta["num_classes"],
        }
        if (
            out.ndim not in (1, 2)
            or len(out) != rows
            or (out.ndim == 2 and out.shape[1] not in widths)
        ):
            raise KtError(
                f"{self.path}: the graph answered {rows} images with outputs of shape {out.shape}; its "
                "metadata promises one row of the task's width per image (export it again)"
            )
        return out

    def _run(self, batch: Any, features: np.ndarray | None) -> np.ndarray:
        name = self.session.get_inputs()[0].name
        extra = (
            {"meta": np.ascontiguousarray(features, dtype=np.float32)}
            if features is not None
            else {}
        )
        if not self.io_binding:
            return self.session.run(None, {name: batch, **extra})[0]
        binding = self.session.io_binding()
        if isinstance(batch, np.ndarray):
            binding.bind_cpu_input(name, np.ascontiguousarray(batch))
        else:
            binding.bind_ortvalue_input(name, batch)
        for key, value in extra.items():
            binding.bind_cpu_input(key, value)
        # (batch, outputs): small, copied once
        binding.bind_output(self.session.get_outputs()[0].name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def _gpu_present() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0"))


def provider_list(provider: str) -> list[Any]:
    """Providers to ask for, best first. `auto` asks for CUDA only where an NVIDIA device exists,
    because onnxruntime-gpu on a CPU machine logs a load error for every session otherwise.
    TensorRT falls back to CUDA, then CPU, for the nodes it cannot take, and caches its engines
    (`$KT_TRT_CACHE`, default cache/tensorrt): building one takes minutes for a large network."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in PROVIDER_CHOICES:
        raise KtError(f"--provider {provider!r} is not valid; choose {', '.join(PROVIDER_CHOICES)}")
    if provider in ("cuda", "tensorrt") and not _gpu_present():
        raise KtError(
            f"--provider {provider}: this machine has no NVIDIA GPU (no /dev/nvidia0); use "
            "--provider auto (the CPU here) or cpu"
        )
    wanted = {
        "auto": (["cuda"] if _gpu_present() else []) + ["cpu"],
        "cpu": ["cpu"],
        "cuda": ["cuda", "cpu"],
        "tensorrt": ["tensorrt", "cuda", "cpu"],
    }[provider]
    chosen = [PROVIDERS[w] for w in wanted if PROVIDERS[w] in available]
    if provider not in ("auto", "cpu") and PROVIDERS[provider] not in available:
        raise KtError(f"--provider {provider}: this onnxruntime has only {', '.join(available)}")
    if "CUDAExecutionProvider" in chosen and hasattr(ort, "preload_dlls"):
        try:  # CUDA/cuDNN from the nvidia-* wheels that torch or onnxruntime-gpu[cuda] installed
            ort.preload_dlls()
        except Exception:  # noqa: BLE001 - system CUDA may still work; the session reports what ran
            pass
    if "TensorrtExecutionProvider" in chosen:
        cache = os.environ.get("KT_TRT_CACHE") or os.path.join("cache", "tensorrt")
        os.makedirs(cache, exist_ok=True)
        chosen[0] = (
            "TensorrtExecutionProvider",
            {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache},
        )
    return chosen


def _check_started(provider: str, started: list[str], path: Path) -> None:
    """onnxruntime falls back to the CPU, with a log line at most, when the CUDA or TensorRT provider
    cannot start (libraries of another CUDA version, a busy device): asked for by name, that is an
    error; under `auto`, a note on stderr, so a run never turns slow without saying why."""
    wanted = PROVIDERS.get(provider)
    if provider in ("cuda", "tensorrt") and started[0] != wanted:
        raise KtError(
            f"--provider {provider}: onnxruntime could not start {wanted} for {path.name} and fell "
            f"back to {started[0]} (CUDA or cuDNN libraries that do not match this onnxruntime?); "
            "use --provider auto to run on what starts"
        )
    if provider == "auto" and _gpu_present() and started[0] not in GPU_PROVIDERS:
        print(
            f"note: {path.name} runs on {started[0]}: onnxruntime could not start CUDA here",
            file=sys.stderr,
        )


def usable_cpus() -> int:
    """The CPUs this process may run on (a notebook's cgroup or taskset), not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _metadata_props(path: Path) -> dict[str, str]:
    """The file's metadata_props, from an onnxruntime CPU session with graph optimisation off: as quick
    as onnx.load (0.03-0.1 s vs 0.05 s for a 45 MB resnet18) without the onnx package's 0.7 s import,
    which a notebook pays before its first prediction. The onnx package reads them where onnxruntime
    is not installed or cannot load the graph (an operator it lacks), so that file is named for what it
    is (load_model's error)."""
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.add_session_config_entry("session.disable_prepacking", "1")  # no weight copies
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return dict(session.get_modelmeta().custom_metadata_map)
    except Exception as failed:  # noqa: BLE001 - onnxruntime's own kinds; onnx says what the file is
        try:
            import onnx
        except ImportError:
            raise failed from None
        return {
            p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props
        }


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The `kt` metadata of an ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise KtError(f"model {path} not found")
    try:
        props = _metadata_props(path)
    except Exception as e:  # noqa: BLE001
        raise KtError(f"{path} is not a readable ONNX file: {type(e).__name__}") from None
    return _kt_metadata(props, path)


def _kt_metadata(props: dict[str, str], path: Path) -> dict[str, Any]:
    """The file's `kt` property, parsed and checked against the metadata schema."""
    if "kt" not in props:
        raise KtError(f"{path} has no kt metadata; export it with `kt export RUN_DIR`")
    try:
        meta = json.loads(props["kt"])
    except json.JSONDecodeError:
        raise KtError(f"{path}: its kt metadata is not valid JSON; export the run again") from None
    return check(meta, path)


def session_options(threads: int = 0):
    """onnxruntime's settings for kt's sessions (measured: benchmarks/notebook_predictor.py)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads  # 0 = onnxruntime's default (one per physical core)
    # Each session keeps its own intra-op threads, and by default they spin after a run: an ensemble's
    # idle members then burn the cores the running one needs. On the 2-core CPU machine, 3 resnet18 @ 64
    # sessions run in turn took 261 ms (spinning) vs 158 ms (not) per batch of 32, timed with session.run
    # alone; one session 55 vs 51 ms. benchmarks/predict_speed.py shows it end to end (3-model ensemble
    # 3.06-3.21x one model's time spinning, 1.89-2.15x not). The key: onnxruntime's docs,
    # performance/tune-performance/threading.md, and onnxruntime_session_options_config_keys.h.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def load_model(
    path: str | Path,
    *,
    provider: str = "auto",
    threads: int = 0,
    precision: str = "fp32",
    io_binding: str = "auto",
) -> OnnxModel:
    """A session on the best provider. `precision=fp16` converts the graph in memory (meant for CUDA:
    tensor cores, half the memory; on a CPU it runs but is slower). `io_binding=auto` binds on GPUs."""
    import onnxruntime as ort

    if precision not in PRECISIONS:
        raise KtError(
            f"precision {precision!r} is not valid; choose one of: {', '.join(PRECISIONS)}"
        )
    if io_binding not in IO_BINDING:
        raise KtError(
            f"--io-binding {io_binding!r} is not valid; choose one of: {', '.join(IO_BINDING)}"
        )
    path = Path(path)
    if not path.is_file():
        raise KtError(f"model {path} not found")
    options = session_options(threads)
    providers = provider_list(provider)
    try:
        graph = to_fp16(path) if precision == "fp16" else str(path)
        session = ort.InferenceSession(graph, options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime's own kinds (InvalidGraph, Fail, NotImplemented...)
        read_metadata(path)  # a file that is not ONNX, or not kt's, says so first
        said = " ".join(str(e).split())[:200]
        raise KtError(
            f"{path}: onnxruntime cannot load it ({type(e).__name__}: {said}); export the run again "
            "with kt export (an unknown operator, damaged weights or external data outside the "
            "file's folder)"
        ) from None
    # the metadata comes from the session: reading it with the onnx package would cost a second of
    # import (ml_dtypes) on every kt predict and in the notebook
    meta = _kt_metadata(dict(session.get_modelmeta().custom_metadata_map), path)
    if meta.get("competition_spec"):  # checked every time: never trusted because the name is known
        from .. import competitions

        competitions.register(meta["competition_spec"])
    check_graph(meta, session, path)
    _check_started(provider, session.get_providers(), path)
    # an int8 copy (kt export --int8) says so wherever the precision is shown and recorded
    model = OnnxModel(path, session, meta, "int8" if "int8" in meta else precision)
    model.io_binding = io_binding == "on" or (io_binding == "auto" and model.device == "cuda")
    return model


def expand(patterns: list[str]) -> list[Path]:
    """Model arguments may be globs (quoted or not), ONNX files, or run folders and run groups (their
    exported model.onnx files, as kt export, kt ensemble and kt evaluate take them); the order is kept,
    duplicates dropped."""
    out: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        if not matches:
            raise KtError(f"no model matches {pattern!r}")
        files = [f for m in map(Path, matches) for f in (runs.onnx_files(m) if m.is_dir() else [m])]
        out += [f for f in files if f not in out]
    return out


def int8_copy(path: str | Path) -> Path:
    """--int8: a run's model.onnx → its int8 copy (kt export --int8); any other file as named."""
    path = Path(path)
    if path.name != runs.MODEL:
        return path
    copy = path.with_name(runs.MODEL_INT8)
    if not copy.is_file():
        raise KtError(
            f"--int8: {path.parent} has no {runs.MODEL_INT8}; run kt export {path.parent} --int8"
        )
    record = read_metadata(copy).get("int8")
    if record is None:
        raise KtError(
            f"--int8: {copy} is not an int8 copy (no int8 record); run kt export {path.parent} --int8"
        )
    # the int8 copy answers for this model.onnx only: one copied in, or left from an earlier export
    if record["source_sha256"] != sha256(path):
        raise KtError(
            f"--int8: {copy} was quantised from another {runs.MODEL} than {path}'s; "
            f"run kt export {path.parent} --int8 again"
        )
    return copy


def load_ensemble(
    paths: list[str | Path],
    competition: str | None,
    *,
    provider: str = "auto",
    precision: str = "fp32",
    io_binding: str = "auto",
) -> list[OnnxModel]:
    """Load every model; all must belong to `competition` and share one task and class count."""
    if not paths:
        raise KtError(
            "no models given; pass one or more model.onnx files (kt export RUN_DIR makes them)"
        )
    models = [
        load_model(p, provider=provider, precision=precision, io_binding=io_binding) for p in paths
    ]
    first = models[0]
    for m in models:
        if competition and m.meta["competition"] != competition:
            raise KtError(
                f"{m.path} was trained for {m.meta['competition']!r}, not {competition!r}; "
                "remove it from the ensemble"
            )
        for key in ("competition", "task", "num_classes"):
            if m.meta[key] != first.meta[key]:
                raise KtError(
                    f"{m.path} has {key}={m.meta[key]!r} but {first.path} has {first.meta[key]!r}; "
                    "an ensemble needs one competition and task"
                )
    return models


def describe(model: OnnxModel) -> dict[str, Any]:
    return {
        "file": str(Path(model.path).resolve()),
        "sha256": sha256(model.path),
        "arch": model.meta["arch"],
        "size": model.size,
        "score": model.meta.get("score"),
        "provider": model.provider,
        "precision": model.precision,
        "io_binding": model.io_binding,
        "run": model.meta.get("run"),
    }
