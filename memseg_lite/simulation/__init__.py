"""Stage 1, anomaly simulation (training only): Perlin masks (perlin), foreground masks (foreground),
anomaly textures (textures), the simulator that pastes them onto good images (synthesis) and
simulation settings files, saved by the anomaly explorer and read by training (settings).

May import: memseg_lite.core, memseg_lite.datasets. Never network, training or anything above.
"""
