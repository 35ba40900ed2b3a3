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
from memseg_lite.deployment.fast import FAST_BACKENDS, default_backend, load_fast_model
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
    model = tiny_model()
    _, scores = eager(model, inputs(6, seed=1))
    image_threshold = float(scores.median())  # verdicts split the test images
    payload = {
        "model_config": model.config(), "model": model.state_dict(), "step": 7,
        "train_config": {"image_size": SIZE, "center_crop": None, "resize": "letterbox"},
        "thresholds": {"image": image_threshold, "pixel": 0.5, "source": "validation", "rule": "test", "details": {}},
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


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch(checkpoint, exported, batch):
    _, model, image_threshold = checkpoint
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    images = inputs(batch, seed=10 + batch)
    maps, scores = session.run(None, {"images": images.numpy()})
    reference_maps, reference_scores = eager(model, images)
    assert maps.shape == (batch, SIZE, SIZE) and scores.shape == (batch,)
    assert np.abs(maps - reference_maps.numpy()).max() < 1e-4
    assert np.abs(scores - reference_scores.numpy()).max() < 1e-4
    np.testing.assert_array_equal(scores >= image_threshold, reference_scores.numpy() >= image_threshold)


def test_verdicts_split_and_agree(checkpoint, exported):
    _, model, image_threshold = checkpoint
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    images = inputs(6, seed=1)  # the images the threshold was set on: half above, half below
    _, scores = session.run(None, {"images": images.numpy()})
    _, reference = eager(model, images)
    verdicts = scores >= float(read_metadata(exported)["image_threshold"])
    assert 0 < verdicts.sum() < len(verdicts)
    np.testing.assert_array_equal(verdicts, reference.numpy() >= image_threshold)


def test_metadata_and_dynamic_batch(checkpoint, exported):
    _, _, image_threshold = checkpoint
    metadata = read_metadata(exported)
    assert metadata["image_size"] == f"{SIZE}x{SIZE}" and metadata["resize"] == "letterbox"
    assert json.loads(metadata["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert json.loads(metadata["std"]) == pytest.approx([0.229, 0.224, 0.225])
    assert json.loads(metadata["center_crop"]) is None
    assert float(metadata["image_threshold"]) == image_threshold
    assert float(metadata["pixel_threshold"]) == 0.5
    assert json.loads(metadata["thresholds"])["source"] == "validation"
    assert metadata["top_k"] == "100" and metadata["memory_size"] == "4"
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (batch_axis, *rest) = session.get_inputs()[0].shape
    assert isinstance(batch_axis, str) and rest == [3, SIZE, SIZE]


def test_export_without_thresholds(tmp_path):
    model = tiny_model()
    payload = {"model_config": model.config(), "model": model.state_dict(), "train_config": {"image_size": SIZE}}
    out = export_onnx(payload, tmp_path / "plain.onnx")
    metadata = read_metadata(out)
    assert "image_threshold" not in metadata and metadata["resize"] == "stretch"  # older checkpoints stretched


def test_export_errors(tmp_path, checkpoint):
    path, _, _ = checkpoint
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_onnx(path, tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError):
        export_onnx(tmp_path / "missing.pt", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="not a memseg-lite model checkpoint"):
        export_onnx({"step": 1}, tmp_path / "m.onnx")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*tmp"))  # nothing half-written


@pytest.mark.parametrize("backend", ["folded", "onnx", "eager"])
def test_fast_backends_match_the_eager_model(checkpoint, exported, backend):
    path, model, _ = checkpoint
    options = {"onnx_path": exported} if backend == "onnx" else {}
    runner = load_fast_model(path, device="cpu", backend=backend, **options)
    assert runner.payload["step"] == 7
    for batch in (1, 3):
        images = inputs(batch, seed=20 + batch)
        maps, scores = runner(images)
        reference_maps, reference_scores = eager(model, images)
        assert maps.dtype == torch.float32 and maps.shape == (batch, SIZE, SIZE)
        assert (maps - reference_maps).abs().max() < 1e-4
        assert (scores - reference_scores).abs().max() < 1e-4
        maps += 1  # ordinary tensors (not inference-mode ones): callers may change them


def test_backend_choice(checkpoint, tmp_path):
    from memseg_lite.deployment.fast import (
        FoldedTorchBackend,
        OnnxBackend,
        current_export,
    )

    assert default_backend("cpu") == "folded"
    assert set(FAST_BACKENDS) == {"eager", "folded", "onnx", "fast"}
    with pytest.raises(ValueError, match="unknown backend"):
        load_fast_model(checkpoint[0], device="cpu", backend="tensorrt")
    # a current export next to the checkpoint makes ONNX Runtime the default; a changed checkpoint does not
    path = tmp_path / "best.pt"
    path.write_bytes(checkpoint[0].read_bytes())
    assert default_backend("cpu", path) == "folded" and current_export(path) is None
    exported = export_onnx(path)
    assert exported == tmp_path / "best.onnx" and len(read_metadata(exported)["checkpoint_sha256"]) == 64
    assert default_backend("cpu", path) == "onnx" and current_export(path) == exported
    assert isinstance(load_fast_model(path, device="cpu"), OnnxBackend)
    assert isinstance(FAST_BACKENDS["fast"](*_loaded(path), checkpoint=path), OnnxBackend)
    path.write_bytes(path.read_bytes() + b"\0")  # a retrained / replaced checkpoint: the export is stale
    assert default_backend("cpu", path) == "folded"
    assert isinstance(FAST_BACKENDS["fast"](*_loaded(checkpoint[0]), checkpoint=path), FoldedTorchBackend)


def _loaded(path):
    from memseg_lite.evaluation.evaluate import load_model

    model, payload = load_model(path, "cpu")
    return model, payload, torch.device("cpu")


def test_cli_export(checkpoint, tmp_path, capsys):
    from memseg_lite.cli import main

    path, _, _ = checkpoint
    out = tmp_path / "cli.onnx"
    assert main(["export", "--checkpoint", str(path), "--format", "onnx", "--out", str(out)]) == 0
    assert out.is_file() and read_metadata(out)["image_size"] == f"{SIZE}x{SIZE}"
    assert str(out) in capsys.readouterr().out
    assert main(["export", "--checkpoint", str(tmp_path / "nothing.pt")]) == 1
    assert "nothing.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--checkpoint", str(path), "--format", "tflite"])


@pytest.mark.parametrize("backend", ["folded", "onnx"])
def test_backends_plug_into_the_inferencer(checkpoint, backend):
    from memseg_lite.deployment.inferencer import BACKENDS, Inferencer, register_backend

    path, _, _ = checkpoint
    if backend not in BACKENDS:
        register_backend(backend, FAST_BACKENDS[backend])
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(3)]  # rectangular: letterboxed
    fast = Inferencer(path, device="cpu", backend=backend).predict(photos)
    eager_results = Inferencer(path, device="cpu", backend="torch").predict(photos)
    for mine, reference in zip(fast, eager_results):
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
