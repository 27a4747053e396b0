"""Networks, model files, losses and the training loop."""
