"""Run a memseg-lite ONNX export on image files with numpy, OpenCV and ONNX Runtime only.

    python examples/onnx_runner.py runs/button/best.onnx photo1.png photo2.jpg

The graph does the normalisation, the network and the decision; the one step a runtime does
itself is fitting each image to the network size (``memseg.image_size`` ``HxW``) the way the model
was trained (``memseg.resize``), and mapping the anomaly map back to the image's own pixels.
No memseg_lite import: copy this file next to your model. ``tests/test_export.py`` checks that it
gives ``memseg-lite predict``'s verdicts, scores and maps.
"""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import onnxruntime


def fit(image: np.ndarray, height: int, width: int, mode: str) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """uint8 ``h x w x 3`` RGB -> ``H x W x 3`` and where the content sits: ``(top, left, content_h, content_w)``.

    ``letterbox``: scale ``min(H / h, W / w)``, content ``round(h * scale) x round(w * scale)``
    (Python's round, at least 1 pixel), centred (``top = (H - content_h) // 2``), padding 0
    (black); an image with the network's aspect ratio fills it exactly. ``stretch``: resized to
    ``H x W``. Shrinking uses ``cv2.INTER_AREA``, enlarging ``cv2.INTER_LINEAR``.
    """
    h, w = image.shape[:2]
    if mode == "stretch" or h * width == w * height:
        content_h, content_w = height, width
    else:
        scale = min(height / h, width / w)
        content_h, content_w = min(height, max(1, round(h * scale))), min(width, max(1, round(w * scale)))
    if (content_h, content_w) != (h, w):
        shrink = content_h * content_w < h * w
        image = cv2.resize(image, (content_w, content_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    top, left = (height - content_h) // 2, (width - content_w) // 2
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    canvas[top : top + content_h, left : left + content_w] = image
    return canvas, (top, left, content_h, content_w)


def unfit(values: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """A network-size map back to the image's ``(h, w)``: cut the padding away, resize bilinearly."""
    top, left, content_h, content_w = box
    values = np.ascontiguousarray(values[top : top + content_h, left : left + content_w], dtype=np.float32)
    if values.shape != tuple(shape):
        values = cv2.resize(values, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return values


class OnnxRunner:
    def __init__(self, model_path: str, threads: int = 1):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        self.metadata = {key[len("memseg."):]: value for key, value in
                         self.session.get_modelmeta().custom_metadata_map.items() if key.startswith("memseg.")}
        self.height, self.width = (int(side) for side in self.metadata["image_size"].split("x"))
        self.mode = self.metadata["resize"]
        self.pixel_threshold = float(self.metadata["pixel_threshold"])

    def predict(self, image: np.ndarray) -> dict:
        """One uint8 RGB image (any size) -> verdict, scores, anomaly map and mask at its own size."""
        fitted, box = fit(image, self.height, self.width, self.mode)
        names = [output.name for output in self.session.get_outputs()]
        values = self.session.run(None, {"images": fitted[None]})  # None: every output, in get_outputs() order
        outputs = dict(zip(names, values, strict=True))
        anomaly_map = unfit(outputs["anomaly_map"][0], box, image.shape[:2])
        return {
            "verdict": "defective" if bool(outputs["defective"][0]) else "normal",
            "score": float(outputs["score"][0]),
            "normalised_score": float(outputs["normalised_score"][0]),
            "anomaly_map": anomaly_map,  # float32 [h, w]
            "mask": np.where(anomaly_map >= self.pixel_threshold, 255, 0).astype(np.uint8),  # as predict writes it
        }


def read_rgb(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read the image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python examples/onnx_runner.py MODEL.onnx IMAGE [IMAGE ...]")
    runner = OnnxRunner(sys.argv[1])
    for path in sys.argv[2:]:
        result = runner.predict(read_rgb(path))
        print(json.dumps({"path": path, "verdict": result["verdict"], "score": round(result["score"], 6),
                          "normalised_score": round(result["normalised_score"], 6),
                          "defect_fraction": round(float((result["mask"] > 0).mean()), 6)}))
