"""Reading data: the MVTec AD folder layout (mvtec), downloads of MVTec AD and DTD (download) and the
procedural demo categories (demo/).

May import: memseg_lite.core.
"""
