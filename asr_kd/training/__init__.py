"""Training: the LightningModule, the run builders, resume state, and the two runs."""
