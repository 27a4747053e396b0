"""From imagery and labels to training chips: prepare_data, GeoData, labels, augmentation."""
