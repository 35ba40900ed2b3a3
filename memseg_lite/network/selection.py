"""The readings of "the closest memory sample" (torch-free, so the CLI can list them quickly).

- ``paper``: one memory sample for all levels, the smallest summed L2 distance (DI* = argmin_i sum DI_i);
- ``official``: the authors' code, the closest sample per level;
- ``tootouch``: TooTouch/MemSeg, one sample by the squared error averaged over levels.

:mod:`memseg_lite.network.memory` implements them.
"""

SELECTION_RULES = ("paper", "official", "tootouch")
