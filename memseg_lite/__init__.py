"""memseg-lite: MemSeg (memory-based surface-defect segmentation) rebuilt from scratch.

The package is the single source of truth for the workbook in ``notebooks/``: each notebook builds
one part by hand and checks it against the module here. Subpackages follow the method's stages,
and imports flow one way, from the top of this list down (``tests/test_layout.py`` enforces it):

- ``cli``          the ``memseg-lite`` command (nothing imports it)
- ``teaching``     exercise checks, the anomaly explorer widget, workbook figures
- ``deployment``   prediction on new images
- ``experiments``  studies over many runs (the MVTec AD reproduction)
- ``training``     configuration, training data sets, the trainer
- ``evaluation``   metrics (AUROC, AU-PRO) and test-split evaluation
- ``network``      encoder, memory pool, attention, MSFF, decoder, the model, losses
- ``simulation``   Perlin noise, foreground masks, textures, the anomaly simulator
- ``datasets``     the MVTec AD layout reader, downloads, the procedural demo data
- ``core``         files, transforms, devices and seeds, checkpoint files, overlays
"""

__version__ = "0.1.0"
