"""Images, splits, augmentation, datasets and synthetic competition data."""
