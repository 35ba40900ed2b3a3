"""Plumbing every stage shares: image files, atomic writes and staged folder swaps (io), image sizes (sizes),
resizing and tensors (transforms), device, seeds and autocast (runtime), checkpoint files and the input size
they record (checkpoint), anomaly-map overlays (overlays), the MEMSEG_OFFLINE switch (offline).

May import: nothing else from memseg_lite.
"""
