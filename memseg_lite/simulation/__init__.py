"""Stage 1, anomaly simulation (training only): Perlin masks (perlin), foreground masks (foreground),
anomaly textures (textures) and the simulator that pastes them onto good images (synthesis).

May import: memseg_lite.core, memseg_lite.datasets. Never network, training or anything above.
"""
