"""Reading data: the MVTec AD folder layout (mvtec), plain folders of your own images (folder), downloads of
MVTec AD and DTD (download) and the procedural demo categories (demo/).

May import: memseg_lite.core.
"""
