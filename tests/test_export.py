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
    # The fast choice stays the folded model (it keeps the eager choice of memory sample) even next to
    # an export; ONNX Runtime, when asked for, finds a current export and ignores a stale one.
    path = tmp_path / "best.pt"
    path.write_bytes(checkpoint[0].read_bytes())
    assert current_export(path) is None
    exported = export_onnx(path)
    assert exported == tmp_path / "best.onnx" and len(read_metadata(exported)["checkpoint_sha256"]) == 64
    assert default_backend("cpu", path) == "folded" and current_export(path) == exported
    assert isinstance(load_fast_model(path, device="cpu"), FoldedTorchBackend)
    assert isinstance(FAST_BACKENDS["fast"](*_loaded(path), checkpoint=path), FoldedTorchBackend)
    runner = load_fast_model(path, device="cpu", backend="onnx")
    assert isinstance(runner, OnnxBackend) and runner.source == str(exported)
    path.write_bytes(path.read_bytes() + b"\0")  # a retrained / replaced checkpoint: the export is stale
    assert current_export(path) is None
    assert load_fast_model(path, device="cpu", backend="onnx").source == "memory"


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


# --------------------------------------------------------------------------------------------
# The packed (oneDNN, fused) convolutions and the exact choice of memory sample
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["none", "relu", "hardswish"])
def test_packed_convolution_equals_conv_then_activation(activation):
    from memseg_lite.deployment.fast import PackedConv2d

    generator = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=1)
    layer = PackedConv2d(conv, activation)
    functions = {"none": lambda t: t, "relu": torch.relu, "hardswish": nn.functional.hardswish}
    for shape in [(1, 6, 9, 11), (3, 6, 16, 16), (1, 6, 9, 11)]:  # another shape packs again; the first is reused
        x = torch.randn(*shape, generator=generator)
        residual = torch.randn(shape[0], 5, (shape[2] + 1) // 2, (shape[3] + 1) // 2, generator=generator)
        expected = functions[activation](conv(x))
        expected_sum = functions[activation](conv(x) + residual)
        for layout in (torch.contiguous_format, torch.channels_last):
            with torch.inference_mode():
                got = layer(x.contiguous(memory_format=layout))
                got_sum = layer(x.contiguous(memory_format=layout), residual=residual)
            torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got_sum, expected_sum.detach(), atol=1e-5, rtol=1e-5)
    # With gradients on it runs F.conv2d: the same numbers.
    torch.testing.assert_close(layer(x).detach(), functions[activation](conv(x)).detach(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        PackedConv2d(conv, "gelu")


def test_packing_replaces_every_convolution_and_keeps_the_output():
    from memseg_lite.deployment.fast import PackedBasicBlock, PackedConv2d, pack_convolutions

    model = tiny_model()
    network = DeployedMemSeg(model)
    images = inputs(2, seed=5)
    with torch.inference_mode():
        expected = network(images)
        pack_convolutions(network)
        got = network(images.contiguous(memory_format=torch.channels_last))
    assert not any(type(m) is nn.Conv2d for m in network.modules())
    assert sum(isinstance(m, PackedBasicBlock) for m in network.modules()) == 8  # ResNet18: 2 blocks x 4 layers
    fused = [m.activation for m in network.modules() if isinstance(m, PackedConv2d)]
    assert fused.count("relu") >= 30 and fused.count("hardswish") == 3  # a ReLU left alone would be wasted work
    assert not any(isinstance(m, (nn.ReLU, nn.Hardswish)) for m in network.modules())
    torch.testing.assert_close(got[0], expected[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[1], expected[1], atol=1e-5, rtol=0)


def eager_indices(model, images):
    with torch.no_grad():
        return model.forward_intermediates(images).indices


@pytest.mark.parametrize(("rule", "chunk_size"), [("paper", 1), ("official", 2), ("tootouch", None)])
def test_folded_backend_gives_the_eager_maps_and_choice_of_memory_sample(rule, chunk_size):
    from memseg_lite.deployment.fast import FoldedTorchBackend, eager_selection

    model = tiny_model(rule, seed=3)
    backend = FoldedTorchBackend(model, {}, torch.device("cpu"), chunk_size=chunk_size)
    assert backend.packed  # this build has oneDNN: the fused path is the one under test
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
        for name, feature in zip(("level1", "level2", "level3"), (frozen.level1, frozen.level2, frozen.level3)):
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
