"""Whole-scene classification: tile plans, the engine that runs the network, blending."""
