"""Training: losses, recipes (data), the training loop, and tuning the decision settings on held-out data."""
