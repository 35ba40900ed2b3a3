"""Stage 2, the network: the frozen ResNet18 encoder (encoder), the memory pool and difference information
(memory, selection), spatial and coordinate attention (attention), multi-scale feature fusion (msff), the U-Net
decoder (decoder), the assembled MemSeg and its loading from a checkpoint (model) and its losses (losses).

May import: memseg_lite.core. Never simulation, training or anything above.
"""
