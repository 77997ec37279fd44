"""Auto-annotated patch export: episodes of dominant emotions per tracked face become labelled PNG patches with
HOG features and a manifest, written off the video path (exporter.py). Kept light: config.py imports options."""
