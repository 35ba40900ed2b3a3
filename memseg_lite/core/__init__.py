"""Plumbing every stage shares: image files and atomic writes (io), resizing and tensors (transforms),
device, seeds and autocast (runtime), checkpoint files (checkpoint), anomaly-map overlays (overlays).

May import: nothing else from memseg_lite.
"""
