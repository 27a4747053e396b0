"""From class rasters to GIS vectors: polygons, regularization, road centre lines."""
