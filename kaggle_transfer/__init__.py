"""kaggle_transfer: from a Kaggle image competition's files to a validated submission.

The CLI is `kt`; in a notebook the same steps are functions (docs/python.md):
`kaggle_transfer.train`, `export`, `ensemble`, `predict`, `validate`."""

__version__ = "0.1.0"
__all__ = ["ensemble", "export", "predict", "train", "validate", "__version__"]


def __getattr__(name: str):
    """The API's functions, loaded on first use: `import kaggle_transfer` (and `kt --help`) stay light."""
    if name in __all__[:-1]:
        from . import api  # defers pandas and what api.py loads

        return getattr(api, name)
    raise AttributeError(f"module 'kaggle_transfer' has no attribute {name!r}")
