"""kaggle_transfer: from a Kaggle image competition's files to a validated submission."""

__version__ = "0.1.0"
