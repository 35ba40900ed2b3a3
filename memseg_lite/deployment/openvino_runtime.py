"""OpenVINO: conversion, INT8 quantization and ``memseg-lite export --format openvino`` (the
``openvino`` / ``openvino-int8`` backends built on them are in :mod:`memseg_lite.deployment.fast`).

The graph is the ONNX one (:mod:`memseg_lite.deployment.export`), converted by ``openvino.convert_model``:
for the backends the network graph (normalised float ``[B, 3, H, W]`` in, maps, scores and the
near-tie flag out), for an export the whole pipeline (uint8 pixels in, the decision out; the same
inputs, outputs and metadata as the ONNX file, the metadata in the ``.xml``'s ``rt_info`` under
``memseg``).

INT8 (``int8=True``, ``--int8``): post-training quantization by NNCF (``nncf.quantize``, its default
preset: symmetric 8-bit weights per channel, activations per tensor), calibrated on up to
``CALIBRATION_IMAGES`` of the run's good training images (or ``calibration=`` images / a
folder). The memory comparison (subtractions, absolute values, sums, the argmin) and the softmax
stay in fp32 (an ignored scope): only the convolutions run in 8 bits. The maps are then not the
eager model's up to rounding: ``docs/deployment.md`` has the measured cost (AUROC, AU-PRO, map
difference). fp32 runs with ``INFERENCE_PRECISION_HINT=f32`` (no silent bf16 on CPUs that have it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from memseg_lite.core.io import list_images, read_image
from memseg_lite.deployment.export import (
    METADATA_PREFIX,
    exported_model,
    fitted_size,
)

CALIBRATION_IMAGES = 32
#: Operation types NNCF leaves in fp32: the memory comparison and everything after the decoder.
FP32_TYPES = [
    "Subtract",
    "Abs",
    "ReduceSum",
    "ReduceMean",
    "Multiply",
    "Add",
    "TopK",
    "Softmax",
    "Power",
    "Divide",
]  # those a graph lacks are skipped


def _openvino():
    try:
        import openvino
    except ImportError as error:
        raise ImportError("the OpenVINO backends need openvino: pip install 'memseg-lite[deploy]' "
                          "(or pip install openvino nncf)") from error
    return openvino


def convert_onnx(onnx_bytes: bytes):
    """An ``openvino.Model`` from ONNX bytes (through a temporary file: OpenVINO reads paths)."""
    ov = _openvino()
    with tempfile.TemporaryDirectory(prefix="memseg-ov-") as folder:
        path = Path(folder) / "model.onnx"
        path.write_bytes(onnx_bytes)
        return ov.convert_model(str(path))


def good_image_paths(payload: dict, calibration=None) -> list[Path]:
    """The images INT8 is calibrated on: ``calibration`` (a folder or a list of files), else the
    run's good training images (``train_config``); a clear error when there are none."""
    if calibration is not None and not isinstance(calibration, (list, tuple)):
        folder = Path(calibration)
        if not folder.is_dir():
            raise FileNotFoundError(f"--calibration-data {folder}: no such folder of good images")
        paths = list_images(folder)
    elif calibration is not None:
        paths = [Path(path) for path in calibration]
    else:
        from memseg_lite.datasets.folder import files_for_config

        try:
            paths = list(files_for_config(payload.get("train_config", {})).train_good)
        except (FileNotFoundError, ValueError) as error:
            raise FileNotFoundError(f"INT8 calibration needs the run's good images ({error}); pass "
                                    "--calibration-data DIR (a folder of good images)") from error
    if not paths:
        raise FileNotFoundError("INT8 calibration found no good images; pass --calibration-data DIR")
    step = max(1, len(paths) // CALIBRATION_IMAGES)  # spread over the set, not its first files
    return paths[::step][:CALIBRATION_IMAGES]


def calibration_pixels(payload: dict, calibration=None) -> list[np.ndarray]:
    """uint8 ``[1, H, W, 3]`` fitted good images (the exported pipeline's input)."""
    from memseg_lite.core.checkpoint import resize_mode
    from memseg_lite.core.transforms import fit_image

    if isinstance(calibration, np.ndarray):
        return [image[None] for image in calibration]
    size = fitted_size(payload)
    return [
        fit_image(read_image(path), size, resize_mode(payload))[None] for path in good_image_paths(payload, calibration)
    ]


def calibration_batches(payload: dict, calibration=None) -> list[np.ndarray]:
    """Normalised float ``[1, 3, H, W]`` good images (the backends' graph input), as ``preprocess`` makes them."""
    from memseg_lite.core.checkpoint import input_size, resize_mode
    from memseg_lite.core.transforms import ensure_rgb, image_to_tensor, resize_image

    if isinstance(calibration, torch.Tensor):
        return [image[None].numpy() for image in calibration.float()]
    size, crop = input_size(payload)
    return [
        image_to_tensor(resize_image(ensure_rgb(read_image(path)), size, crop, mode=resize_mode(payload)))[None].numpy()
        for path in good_image_paths(payload, calibration)
    ]


def quantize_int8(model, samples: list[np.ndarray]):
    """NNCF post-training INT8 of an ``openvino.Model`` on ``samples`` (each one input array)."""
    try:
        import nncf
    except ImportError as error:
        raise ImportError(
            "INT8 quantization needs nncf: pip install 'memseg-lite[deploy]' (or pip install nncf)"
        ) from error
    dataset = nncf.Dataset(samples)
    return nncf.quantize(
        model, dataset, subset_size=len(samples), ignored_scope=nncf.IgnoredScope(types=FP32_TYPES, validate=False)
    )


def compile_model(model, threads: int | None = None, int8: bool = False):
    ov = _openvino()
    config = {"INFERENCE_NUM_THREADS": int(threads) if threads else torch.get_num_threads(),
              "PERFORMANCE_HINT": "LATENCY"}
    if not int8:
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return ov.Core().compile_model(model, "CPU", config)


def export_openvino(checkpoint, out=None, int8: bool = False, calibration=None, thresholds=None) -> Path:
    """Write the checkpoint's pipeline (uint8 pixels in, the decision out) as OpenVINO IR: ``out``
    (``.xml``, default ``CHECKPOINT.xml``, ``CHECKPOINT-int8.xml`` with ``int8``) and its ``.bin``.
    ``int8``: NNCF-quantized on the run's good images (``calibration``: a folder instead)."""
    ov = _openvino()
    if out is None:
        if isinstance(checkpoint, dict):
            raise ValueError("out is required when checkpoint is a payload dict; pass out='model.xml'")
        out = Path(checkpoint).with_name(Path(checkpoint).stem + ("-int8" if int8 else "") + ".xml")
    out = Path(out)
    if out.suffix.lower() != ".xml":
        raise ValueError(f"--out {out}: an OpenVINO model file name must end in .xml (the weights go beside it, .bin)")
    onnx_model, _, payload = exported_model(checkpoint, thresholds)
    converted = convert_onnx(onnx_model.SerializeToString())
    metadata = {prop.key[len(METADATA_PREFIX):]: prop.value for prop in onnx_model.metadata_props}
    if int8:
        converted = quantize_int8(converted, calibration_pixels(payload, calibration))
        metadata["precision"] = "int8 (NNCF post-training, convolutions only)"
    else:
        metadata["precision"] = "fp32"
    for key, value in metadata.items():
        converted.set_rt_info(value, ["memseg", key])
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = out.with_suffix(".bin")
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
    try:  # the weights first, the .xml last: a present .xml always has its .bin
        ov.save_model(converted, str(staging / "model.xml"), compress_to_fp16=False)
        os.replace(staging / "model.bin", weights)
        os.replace(staging / "model.xml", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def read_openvino_metadata(path) -> dict[str, str]:
    """The ``memseg`` metadata of an exported ``.xml`` (the same keys as the ONNX file's)."""
    ov = _openvino()
    model = ov.Core().read_model(str(path))
    info = model.get_rt_info()
    memseg = info["memseg"] if "memseg" in info else {}
    return {key: str(memseg[key].value if hasattr(memseg[key], "value") else memseg[key]) for key in memseg}

