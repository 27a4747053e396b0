"""What users call: ``UnetClassifier``, workflows behind the CLI, the demo and sample data."""
