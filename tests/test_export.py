"""ONNX export and the fast inference backends: same maps, scores and verdicts as the eager model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from memseg_lite.core.checkpoint import save_checkpoint
from memseg_lite.deployment.export import (
    DeployedMemSeg,
    export_onnx,
    fold_batchnorms,
    read_metadata,
)
from memseg_lite.deployment.fast import BACKENDS, default_backend, load_fast_model
from memseg_lite.network.model import build_memseg

onnxruntime = pytest.importorskip("onnxruntime")

SIZE = 64


def tiny_model(selection_rule: str = "paper", seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    memory = torch.randn(4, 3, SIZE, SIZE, generator=generator)
    model = build_memseg(memory, backbone_weights="none", selection_rule=selection_rule, device="cpu", seed=seed)
    # An untrained decoder gives maps near 0.5 everywhere; spread its output so maps and scores vary.
    with torch.no_grad():
        model.decoder.head.weight.mul_(50.0)
    return model.eval()


def inputs(batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, SIZE, SIZE, generator=generator) * torch.linspace(0.5, 2.0, batch).view(-1, 1, 1, 1)


def eager(model, images):
    with torch.no_grad():
        maps = torch.softmax(model(images), dim=1)[:, 1]
    return maps, model.image_score(maps)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from memseg_lite.deployment.inferencer import preprocess

    model = tiny_model()
    _, scores = eager(model, preprocess(_pixels(6, seed=1), SIZE))
    image_threshold = float(scores.median())  # verdicts split these images
    payload = {
        "model_config": model.config(), "model": model.state_dict(), "step": 7,
        "train_config": {"image_size": SIZE, "center_crop": None, "resize": "letterbox"},
        "thresholds": {"image": image_threshold, "pixel": 0.5, "source": "validation", "rule": "test",
                       "details": {"calibration_data": "/home/someone/data/good"}},
    }
    path = save_checkpoint(payload, tmp_path_factory.mktemp("run") / "best.pt")
    return path, model, image_threshold


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    path, _, _ = checkpoint
    return export_onnx(path, tmp_path_factory.mktemp("export") / "model.onnx")


def test_folding_removes_batchnorms_and_keeps_the_output():
    model = tiny_model()
    network = DeployedMemSeg(model, fold=False)
    folded = DeployedMemSeg(model, fold=True)
    assert folded.folded >= 20  # stem, every ResNet conv, MSFF, attention, decoder
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in network.modules()) == folded.folded
    images = inputs(2, seed=3)
    reference_maps, reference_scores = eager(model, images)
    with torch.no_grad():
        maps, scores = folded(images)
    assert (maps - reference_maps).abs().max() < 1e-4
    assert (scores - reference_scores).abs().max() < 1e-4
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_folding_needs_eval_mode():
    layer = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorms(layer)
    layer.eval()
    layer[1].running_mean.uniform_(-1, 1)
    layer[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    expected = layer(x)
    assert fold_batchnorms(layer) == 1 and isinstance(layer[1], nn.Identity)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rule", ["official", "tootouch"])
def test_deployed_network_follows_every_selection_rule(rule):
    model = tiny_model(rule, seed=2)
    images = inputs(3, seed=4)
    reference_maps, reference_scores = eager(model, images)
    with torch.no_grad():
        maps, scores = DeployedMemSeg(model)(images)
    assert (maps - reference_maps).abs().max() < 1e-4
    assert (scores - reference_scores).abs().max() < 1e-4


def _session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _pixels(batch: int, seed: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("batch", [1, 3])
def test_exported_graph_takes_pixels_and_gives_the_decision(checkpoint, exported, batch):
    from memseg_lite.deployment.inferencer import preprocess
    from memseg_lite.evaluation.thresholds import normalise_scores

    _, model, image_threshold = checkpoint
    pixels = _pixels(batch, seed=10 + batch)
    maps, scores, normalised, mask, defective = _session(exported).run(None, {"images": pixels})
    reference_maps, reference_scores = eager(model, preprocess(pixels, SIZE))
    assert maps.shape == mask.shape == (batch, SIZE, SIZE) and scores.shape == normalised.shape == (batch,)
    assert mask.dtype == np.uint8 and defective.dtype == np.bool_
    assert np.abs(maps - reference_maps.numpy()).max() < 1e-4
    assert np.abs(scores - reference_scores.numpy()).max() < 1e-4
    np.testing.assert_allclose(normalised, normalise_scores(reference_scores.numpy(), image_threshold), atol=1e-5)
    np.testing.assert_array_equal(defective, reference_scores.numpy() >= image_threshold)
    np.testing.assert_array_equal(mask, np.where(maps >= 0.5, 255, 0))


def test_verdicts_split_and_agree(checkpoint, exported):
    from memseg_lite.deployment.inferencer import preprocess

    _, model, image_threshold = checkpoint
    pixels = _pixels(6, seed=1)  # the images the threshold was set on: half above, half below
    _, scores, _, _, defective = _session(exported).run(None, {"images": pixels})
    _, reference = eager(model, preprocess(pixels, SIZE))
    assert 0 < defective.sum() < len(defective)
    np.testing.assert_array_equal(defective, reference.numpy() >= image_threshold)


def test_declared_shapes_and_metadata(checkpoint, exported):
    import onnx

    _, _, image_threshold = checkpoint
    graph = onnx.load(str(exported)).graph
    shapes = {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
              for value in [*graph.input, *graph.output]}
    assert shapes == {"images": ["batch", SIZE, SIZE, 3], "anomaly_map": ["batch", SIZE, SIZE], "score": ["batch"],
                      "normalised_score": ["batch"], "mask": ["batch", SIZE, SIZE], "defective": ["batch"]}
    metadata = read_metadata(exported)
    assert metadata["image_size"] == f"{SIZE}x{SIZE}" and metadata["resize"] == "letterbox"
    assert json.loads(metadata["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert json.loads(metadata["center_crop"]) is None
    assert float(metadata["image_threshold"]) == image_threshold and float(metadata["pixel_threshold"]) == 0.5
    thresholds = json.loads(metadata["thresholds"])
    assert thresholds["source"] == "validation"
    # No host's folders in a model file: the calibration data's absolute path is reduced to its name.
    assert thresholds["details"]["calibration_data"] == "good"
    assert "/data/" not in exported.read_bytes().decode("latin1")
    assert metadata["top_k"] == "100" and metadata["memory_size"] == "4"


def test_export_needs_thresholds(tmp_path):
    model = tiny_model()
    payload = {"model_config": model.config(), "model": model.state_dict(), "train_config": {"image_size": SIZE}}
    with pytest.raises(ValueError, match="no thresholds.*calibrate"):
        export_onnx(payload, tmp_path / "plain.onnx")
    given = tmp_path / "thresholds.json"
    given.write_text(json.dumps({"image": 0.4, "pixel": 0.6}))
    metadata = read_metadata(export_onnx(payload, tmp_path / "plain.onnx", thresholds=given))
    assert metadata["resize"] == "stretch" and float(metadata["image_threshold"]) == 0.4  # older checkpoints stretched


def test_export_errors(tmp_path, checkpoint):
    path, _, _ = checkpoint
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(path, tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="not a memseg-lite model checkpoint"):
        export_onnx({"step": 1}, tmp_path / "m.onnx")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp"))  # nothing half-written


# --------------------------------------------------------------------------------------------
# The reference runner (examples/onnx_runner.py: numpy, OpenCV, ONNX Runtime) against predict
# --------------------------------------------------------------------------------------------
def _runner_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "onnx_runner.py"
    spec = importlib.util.spec_from_file_location("onnx_runner", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("crop", [None, 64])
def test_reference_runner_matches_predict_on_letterboxed_images(tmp_path, crop):
    import ast
    from pathlib import Path

    import cv2

    from memseg_lite.deployment.inferencer import Inferencer
    from memseg_lite.deployment.predict import predict_images

    source = (Path(__file__).resolve().parents[1] / "examples" / "onnx_runner.py").read_text()
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [type("A", (), {"name": node.module})])
    }
    assert "memseg_lite" not in imported  # a standalone runner
    height, width = 64, 96
    generator = torch.Generator().manual_seed(5)
    network_size = (crop, crop) if crop else (height, width)
    model = build_memseg(
        torch.randn(4, 3, *network_size, generator=generator), backbone_weights="none", device="cpu", seed=5
    )
    with torch.no_grad():
        model.decoder.head.weight.mul_(50.0)
    model.eval()
    rng = np.random.default_rng(3)
    # Shrunk (INTER_AREA), enlarged (INTER_LINEAR), exact, tall and wide: all letterboxed into 64 x 96.
    shapes = [(48, 80), (120, 60), (64, 96), (30, 200), (200, 150), (97, 31)]
    folder = tmp_path / "images"
    folder.mkdir()
    for number, shape in enumerate(shapes):
        picture = cv2.GaussianBlur(rng.integers(0, 256, (*shape, 3), dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(str(folder / f"image{number}.png"), picture)
    payload = {"model_config": model.config(), "model": model.state_dict(), "step": 1,
               "train_config": {"image_size": [height, width], "center_crop": crop, "resize": "letterbox"}}
    run = tmp_path / "run"
    save_checkpoint(payload, run / "best.pt")
    scores = [
        r.score for r in Inferencer(run / "best.pt", device="cpu", backend="eager").predict(sorted(folder.iterdir()))
    ]
    payload["thresholds"] = {"image": float(np.median(scores)), "pixel": 0.5, "source": "test", "rule": "median"}
    checkpoint_path = save_checkpoint(payload, run / "best.pt")
    model_path = export_onnx(checkpoint_path)
    report = predict_images([folder], checkpoint_path, device="cpu", backend="eager", keep_arrays=True)
    runner = _runner_module().OnnxRunner(str(model_path))
    verdicts = []
    for result in report.results:
        mine = runner.predict(result.image)
        assert mine["anomaly_map"].shape == result.anomaly_map.shape == result.image.shape[:2]
        assert np.abs(mine["anomaly_map"] - result.anomaly_map).max() < 1e-4
        assert mine["verdict"] == result.verdict and abs(mine["score"] - result.score) < 1e-5
        assert abs(mine["normalised_score"] - result.normalised_score) < 1e-5
        assert (mine["mask"] != result.mask).mean() < 1e-3  # pixels at the threshold within rounding
        verdicts.append(mine["verdict"])
    assert len(set(verdicts)) == 2  # the threshold splits the images: verdicts of both kinds were compared


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["folded", "onnx", "eager", "openvino"])
def test_exact_backends_match_the_eager_model(checkpoint, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    path, model, _ = checkpoint
    runner = load_fast_model(path, device="cpu", backend=backend)
    assert runner.payload["step"] == 7
    for batch in (1, 3):
        images = inputs(batch, seed=20 + batch)
        maps, scores = runner(images)
        reference_maps, reference_scores = eager(model, images)
        assert maps.dtype == torch.float32 and maps.shape == (batch, SIZE, SIZE)
        assert (maps - reference_maps).abs().max() < 1e-4
        assert (scores - reference_scores).abs().max() < 1e-4
        maps += 1  # ordinary tensors (not inference-mode ones): callers may change them


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_graph_backends_hand_near_ties_to_the_eager_model(backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    model, images = tied_model("paper")
    runner = BACKENDS[backend](model, {}, torch.device("cpu"))
    maps, scores = runner(images)
    reference_maps, reference_scores = eager(model, images)
    assert runner.exact_selections == 1
    assert (maps - reference_maps).abs().max() < 1e-4 and (scores - reference_scores).abs().max() < 1e-4


def test_openvino_int8_is_close_and_calibrates_on_good_images(checkpoint):
    pytest.importorskip("nncf")
    from memseg_lite.deployment.fast import OpenVinoBackend

    path, model, _ = checkpoint
    calibration = inputs(6, seed=50)
    runner = OpenVinoBackend(model, {}, torch.device("cpu"), int8=True, calibration=calibration)
    assert runner.int8 and not runner.exact_ties
    images = inputs(3, seed=51)
    maps, scores = runner(images)
    reference_maps, reference_scores = eager(model, images)
    difference = (maps - reference_maps).abs()
    assert 0 < float(difference.max()) < 0.5  # quantized: not the fp32 numbers, but the same maps roughly
    assert float(difference.mean()) < 0.05
    with pytest.raises(FileNotFoundError, match="calibration"):
        OpenVinoBackend(model, {"train_config": {"data_root": "/nonexistent", "category": "x"}}, None, int8=True)


def test_openvino_export_matches_the_onnx_export(checkpoint, exported, tmp_path):
    ov = pytest.importorskip("openvino")
    from memseg_lite.deployment.openvino_runtime import export_openvino, read_openvino_metadata

    path, _, _ = checkpoint
    out = export_openvino(path, tmp_path / "model.xml")
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    metadata = read_openvino_metadata(out)
    assert metadata["image_threshold"] == read_metadata(exported)["image_threshold"] and metadata["precision"] == "fp32"
    compiled = ov.Core().compile_model(str(out), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    pixels = _pixels(2, seed=60)
    got = {output.get_any_name(): value for output, value in compiled(pixels).items()}
    session = _session(exported)
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, {"images": pixels}), strict=True))  # run(None): every output, in order
    assert np.abs(got["anomaly_map"] - expected["anomaly_map"]).max() < 1e-4
    np.testing.assert_array_equal(got["defective"], expected["defective"])
    with pytest.raises(ValueError, match=r"\.xml"):
        export_openvino(path, tmp_path / "model.onnx")


def test_backend_registry_and_choice(checkpoint):
    from memseg_lite.cli import BACKEND_CHOICES
    from memseg_lite.deployment.fast import FoldedTorchBackend
    from memseg_lite.deployment.inferencer import BACKENDS as INFERENCER_BACKENDS

    assert default_backend("cpu") == "folded"
    assert INFERENCER_BACKENDS is BACKENDS  # one registry
    assert set(BACKENDS) == set(BACKEND_CHOICES) == {"fast", "eager", "folded", "onnx", "openvino", "openvino-int8"}
    with pytest.raises(ValueError, match="unknown backend"):
        load_fast_model(checkpoint[0], device="cpu", backend="tensorrt")
    assert isinstance(load_fast_model(checkpoint[0], device="cpu"), FoldedTorchBackend)
    with pytest.raises(ValueError, match="threads"):
        load_fast_model(checkpoint[0], device="cpu", backend="eager", threads=0)


def test_default_path_calls_no_private_torch_operators():
    """The modules of the default path (fast -> folded) and the export use public torch APIs only."""
    import inspect

    import memseg_lite.deployment.export as export_module
    import memseg_lite.deployment.fast as fast_module
    import memseg_lite.deployment.inferencer as inferencer_module
    import memseg_lite.network.memory as memory_module

    for module in (export_module, fast_module, inferencer_module, memory_module):
        source = inspect.getsource(module)
        assert "torch.ops." not in source and "mkldnn" not in source, module.__name__
        assert "torch._" not in source.replace("torch._C", ""), module.__name__


def test_cli_export(checkpoint, tmp_path, capsys):
    from memseg_lite.cli import main

    path, _, _ = checkpoint
    out = tmp_path / "cli.onnx"
    assert main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and read_metadata(out)["image_size"] == f"{SIZE}x{SIZE}"
    assert str(out) in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(tmp_path / "nothing.pt")]) == 1
    assert "nothing.pt" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(path), "--int8"]) == 1  # INT8 is OpenVINO's
    assert "--format openvino" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", str(path), "--format", "tflite"])
    if pytest.importorskip("openvino"):
        xml = tmp_path / "cli.xml"
        assert main(["export", "--checkpoint", str(path), "--format", "openvino", "--out", str(xml)]) == 0
        assert xml.is_file() and xml.with_suffix(".bin").is_file()


@pytest.mark.parametrize("backend", ["folded", "onnx"])
def test_backends_plug_into_the_inferencer(checkpoint, backend):
    from memseg_lite.deployment.inferencer import Inferencer

    path, _, _ = checkpoint
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(3)]  # rectangular: letterboxed
    fast = Inferencer(path, device="cpu", backend=backend, threads=1).predict(photos)
    eager_results = Inferencer(path, device="cpu", backend="eager").predict(photos)
    for mine, reference in zip(fast, eager_results, strict=True):
        assert abs(mine.score - reference.score) < 1e-4 and mine.verdict == reference.verdict
        assert np.abs(mine.anomaly_map - reference.anomaly_map).max() < 1e-4


@pytest.mark.parametrize("switch", [{"use_attention": False}, {"fusion": "plain"}, {"feature_smoothing": "avgpool3"},
                                    {"di_scale": 100.0}])
def test_ablated_networks_are_refused_by_export_and_served_eagerly(switch):
    from memseg_lite.deployment.fast import EagerBackend, fast_backend

    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 3, 64, 64, generator=generator)
    model = build_memseg(memory, backbone_weights="none", device="cpu", seed=0, **switch).eval()
    with pytest.raises(ValueError, match="ablation switches"):
        DeployedMemSeg(model)
    backend = fast_backend(model, {"model_config": model.config()}, torch.device("cpu"))
    assert isinstance(backend, EagerBackend)
    images = inputs(2, seed=1)
    maps, scores = backend(images)
    expected_maps, expected_scores = eager(model, images)
    torch.testing.assert_close(maps, expected_maps)
    torch.testing.assert_close(scores, expected_scores)


# --------------------------------------------------------------------------------------------
# The folded backend and the exact choice of memory sample
# --------------------------------------------------------------------------------------------
def eager_indices(model, images):
    with torch.no_grad():
        return model.forward_intermediates(images).indices


@pytest.mark.parametrize(("rule", "chunk_size"), [("paper", 1), ("official", 2), ("tootouch", None)])
def test_folded_backend_gives_the_eager_maps_and_choice_of_memory_sample(rule, chunk_size):
    from memseg_lite.deployment.fast import FoldedTorchBackend, eager_selection

    model = tiny_model(rule, seed=3)
    backend = FoldedTorchBackend(model, {}, torch.device("cpu"), chunk_size=chunk_size)
    for batch in (1, 3):
        images = inputs(batch, seed=30 + batch)
        maps, scores = backend(images)
        reference_maps, reference_scores = eager(model, images)
        assert (maps - reference_maps).abs().max() < 1e-4
        assert (scores - reference_scores).abs().max() < 1e-4
        expected = eager_indices(model, images)
        assert torch.equal(backend.last_indices, expected)
        assert torch.equal(eager_selection(model, images), expected)
    with pytest.raises(ValueError, match="chunk_size"):
        FoldedTorchBackend(model, {}, torch.device("cpu"), chunk_size=0)


def tied_model(rule: str = "paper"):
    """A model whose memory samples 0 and 1 are equally far from ``inputs(1, seed=40)`` up to float
    rounding: sample 1 is the input plus sample 0's differences mirrored left-right (the same sum of
    |differences| and of squares, but another DI* map: large on the right instead of the left);
    samples 2, 3 are far away."""
    model = tiny_model(rule, seed=4)
    images = inputs(1, seed=40)
    generator = torch.Generator().manual_seed(41)
    with torch.no_grad():
        frozen = model.encoder.frozen_features(images)
        for name in ("level1", "level2", "level3"):
            feature = getattr(frozen, name)
            ramp = torch.linspace(10.0, 0.1, feature.shape[-1])  # differences large on the left
            offset = torch.randn(feature.shape[1:], generator=generator) * feature.std() * ramp
            bank = torch.stack([feature[0] + offset, feature[0] + offset.flip(-1),
                                feature[0] + 3 * offset, feature[0] - 3 * offset])
            setattr(model.memory, name, bank)
    return model, images


@pytest.mark.parametrize("rule", ["paper", "tootouch", "official"])
def test_near_ties_are_detected_and_decided_as_the_eager_model_decides(rule):
    from memseg_lite.deployment.export import near_ties
    from memseg_lite.deployment.fast import FoldedTorchBackend

    model, images = tied_model(rule)
    expected = eager_indices(model, images)
    first = expected if rule != "official" else expected[:, 0]
    assert int(first[0]) in (0, 1)
    backend = FoldedTorchBackend(model, {}, torch.device("cpu"))
    # The tie matters: the other sample of the pair gives maps beyond the 1e-4 tolerance.
    with torch.inference_mode():
        stem, features, level4 = backend.network.encode(images.contiguous(memory_format=torch.channels_last))
        _, flagged = backend.network.select(features)
        other = 1 - expected
        other_maps, _ = backend.network.decode(stem, features, level4, other)
    assert bool(flagged[0])
    maps, scores = backend(images)
    reference_maps, reference_scores = eager(model, images)
    assert (other_maps - reference_maps).abs().max() > 1e-4
    assert backend.exact_selections == 1 and torch.equal(backend.last_indices, expected)
    assert (maps - reference_maps).abs().max() < 1e-4 and (scores - reference_scores).abs().max() < 1e-4
    # A clear winner is no near tie: distances 1, 2 and 4 (sizes 1) at the default margin.
    distances = [torch.tensor([[1.0, 2.0, 4.0]])] * 3
    features = [torch.ones(1, 1, 1, 1)] * 3
    assert not bool(near_ties(distances, features, rule)[0])
    assert bool(near_ties([torch.tensor([[1.0, 1.0 + 1e-6, 4.0]])] * 3, features, rule)[0])


def test_predictions_record_their_provenance(checkpoint, tmp_path):
    import hashlib

    import cv2

    from memseg_lite.deployment.predict import predict_images

    path, _, image_threshold = checkpoint
    folder = tmp_path / "images"
    folder.mkdir()
    for number in range(2):
        cv2.imwrite(str(folder / f"photo{number}.png"), _pixels(1, seed=70 + number, height=40, width=72)[0])
    predict_images([folder], path, tmp_path / "out", device="cpu", backend="eager", threads=1)
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance["checkpoint"] == "best.pt" and provenance["step"] == 7
    assert provenance["thresholds"]["image"] == image_threshold and provenance["backend"] == "eager"
    assert provenance["time"].endswith("+00:00") and str(tmp_path) not in json.dumps(provenance)
