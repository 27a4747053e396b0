"""Accuracy: pixel metrics, building objects and reports."""
