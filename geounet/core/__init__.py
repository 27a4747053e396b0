"""Foundations every layer uses: errors, choice types, classes, paths and the version."""
