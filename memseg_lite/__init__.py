"""memseg-lite: MemSeg (memory-based surface-defect segmentation) rebuilt from scratch.

The package is the single source of truth for the workbook in ``notebooks/``:
each notebook builds one part by hand and checks it against the module here.

Modules, in the order the workbook meets them:

- ``demo_data``   procedural demo categories in the MVTec AD layout
- ``perlin``      Perlin noise and Perlin masks (numpy and batched torch)
- ``foreground``  foreground masks per category (fixed thresholds, Otsu)
- ``textures``    the anomaly texture source (DTD or a procedural bank) and its augmentations
- ``synthesis``   the anomaly simulator (texture and structure anomalies, blending)
- ``widgets``     the interactive anomaly explorer
- ``encoder``     the ResNet18 feature extractor (frozen stem..layer3)
- ``memory``      the memory bank and the difference information
- ``attention``   spatial attention maps and coordinate attention
- ``msff``        multi-scale feature fusion
- ``decoder``     the U-Net decoder
- ``model``       the assembled MemSeg network
- ``losses``      focal loss, L1 loss and their combination
- ``data``        the MVTec-layout reader and the training / validation data sets
- ``train``       the trainer (config, checkpoints, resume)
- ``metrics``     image / pixel AUROC and AU-PRO
- ``evaluate``    test-split evaluation with figures
"""

__version__ = "0.1.0"
