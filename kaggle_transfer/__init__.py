"""kaggle_transfer: from a Kaggle image competition's files to a validated submission.

The CLI is `kt`; in a notebook the same steps are functions (docs/python.md):
`kaggle_transfer.train`, `export`, `ensemble`, `predict`, `validate`."""

import os

__version__ = "0.1.0"

# onnxruntime 1.29 and later start a telemetry uploader on Linux and macOS when the runtime is created,
# which writes a session file (.ses) into $TMPDIR and tries to reach Microsoft's collector, also in an
# offline Kaggle notebook. kt turns it off before any onnxruntime import unless the variable is already
# set; both names, because onnxruntime's own source renamed it (ORT_DISABLE_TELEMETRY in 1.31's binary,
# ORT_TELEMETRY_DISABLED in core/platform/telemetry_environment.h since). docs/prediction.md says so.
for _name in ("ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED"):
    os.environ.setdefault(_name, "1")
del _name
__all__ = ["ensemble", "export", "predict", "train", "validate", "__version__"]


def __getattr__(name: str):
    """The API's functions, loaded on first use: `import kaggle_transfer` (and `kt --help`) stay light."""
    if name in __all__[:-1]:
        from . import api  # defers pandas and what api.py loads

        return getattr(api, name)
    raise AttributeError(f"module 'kaggle_transfer' has no attribute {name!r}")
