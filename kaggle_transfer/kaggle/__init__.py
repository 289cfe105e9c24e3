"""SUBMIT: what talks to Kaggle and what runs inside its notebooks (the runtime a bundle carries)."""
