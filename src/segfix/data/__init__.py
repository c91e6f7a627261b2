"""Data: the dataset registry (label formats and the ignore rule), files (images, label images, atomic
writes), readers of labelled image folders, augmentation, and the bundled example."""
