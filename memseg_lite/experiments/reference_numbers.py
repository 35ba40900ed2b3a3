"""Published MVTec AD results to compare with (means over the 15 categories, in %).

Sources, from the method note: the MemSeg paper (arXiv 2205.00908); the authors' released
weights as measured in their issue #4; TooTouch/MemSeg, with the checkpoint picked on the test
set (optimistic) and the last checkpoint; DRAEM for context. ``None``: not reported.
"""

from __future__ import annotations

REPORTED = [
    {"source": "MemSeg paper", "image_auroc": 99.56, "pixel_auroc": 98.84, "aupro": None},
    {"source": "MemSeg official weights (issue #4)", "image_auroc": 99.56, "pixel_auroc": 98.84, "aupro": 87.6},
    {"source": "TooTouch, checkpoint picked on test set", "image_auroc": 98.30, "pixel_auroc": 94.96, "aupro": 96.15},
    {"source": "TooTouch, last checkpoint (step 5000)", "image_auroc": 97.43, "pixel_auroc": 93.81, "aupro": 95.04},
    {"source": "DRAEM", "image_auroc": 98.0, "pixel_auroc": 97.3, "aupro": None},
]
