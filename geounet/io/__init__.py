"""Reading and writing rasters and vectors: windows, padding, statistics, geo helpers."""
