"""The code paths a GPU takes, checked on the CPU: CUDA's answers are faked (``torch.cuda`` functions
monkeypatched), and what the package does with them is asserted.

What runs for real is checked elsewhere: ``scripts/gpu_check.sh`` on a GPU, and on the CPU by
``test_gpu_check_script_runs_on_the_cpu`` below.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from memseg_lite.core.checkpoint import load_checkpoint
from memseg_lite.core.runtime import autocast_settings, resolve_device
from memseg_lite.training import trainer as trainer_module
from memseg_lite.training.distributed import launch_training
from memseg_lite.training.trainer import MAX_SKIPPED_STEPS, NonFiniteLossError, Trainer, read_log

NAN_AT = "MEMSEG_TEST_NAN_AT"  # "RANK:STEP": that rank's images of that step are NaN
OUTCOME_TO = "MEMSEG_TEST_OUTCOME_TO"  # a folder: each rank writes how its fit() ended there


class NanTrainer(Trainer):
    """A Trainer (imported by the worker processes) fed NaN images on one rank at one step."""

    def _to_device(self, images, masks):
        images, masks = super()._to_device(images, masks)
        rank, step = (int(value) for value in os.environ[NAN_AT].split(":"))
        if self.dist.rank == rank and self.step + 1 == step:
            images = images * float("nan")
        return images, masks

    def fit(self, *args, **kwargs):
        try:
            return super().fit(*args, **kwargs)
        except BaseException as error:
            Path(os.environ[OUTCOME_TO], f"rank{self.dist.rank}.txt").write_text(f"{type(error).__name__}: {error}")
            raise


@pytest.fixture
def _no_host_name_lookup(monkeypatch):
    """torch's elastic agent asks for this machine's fully qualified name (a resolver look-up)."""
    import socket

    monkeypatch.setattr(socket, "getfqdn", lambda name="": name or socket.gethostname())


def fake_cuda(monkeypatch, count: int = 1) -> None:
    """Make torch report ``count`` CUDA devices (nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


# --------------------------------------------------------------------------------------------
# Tests run on the CPU on a GPU machine
# --------------------------------------------------------------------------------------------
def test_tests_default_to_the_cpu_when_a_gpu_is_visible(monkeypatch, tmp_path):
    fake_cuda(monkeypatch)
    assert resolve_device(tiny_config("data", tmp_path).device) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")  # MEMSEG_DEVICE=cpu, set for every test
    monkeypatch.delenv("MEMSEG_DEVICE")
    assert resolve_device("auto") == torch.device("cuda")  # outside the tests "auto" takes the GPU
    monkeypatch.setenv("MEMSEG_DEVICE", "tpu")
    try:
        resolve_device("auto")
    except ValueError as error:
        assert "MEMSEG_DEVICE" in str(error) and "'tpu'" in str(error)
    else:
        raise AssertionError("a bad MEMSEG_DEVICE was accepted")


# --------------------------------------------------------------------------------------------
# Autocast: bf16 only where the GPU has it in hardware
# --------------------------------------------------------------------------------------------
def test_emulated_bf16_gives_fp16_with_a_gradient_scaler(monkeypatch):
    fake_cuda(monkeypatch)
    cuda = torch.device("cuda")

    def pre_ampere(including_emulation: bool = True) -> bool:  # a T4 / V100: bf16 by emulation only
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", pre_ampere)
    assert autocast_settings(cuda, "auto") == (torch.float16, True)
    assert autocast_settings(cuda, "bf16") == (torch.bfloat16, False)  # asked for explicitly: as asked
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere+
    assert autocast_settings(cuda, "auto") == (torch.bfloat16, False)
    assert autocast_settings(torch.device("cpu"), "auto") == (None, False)


# --------------------------------------------------------------------------------------------
# Resume: the training device's RNG state only
# --------------------------------------------------------------------------------------------
def test_rng_state_keeps_the_training_gpu_only_and_resumes_with_fewer_gpus(monkeypatch):
    visible = {"count": 4}
    states = {index: torch.full((8,), index, dtype=torch.uint8) for index in range(4)}
    restored = {}

    def get_state(device=0):
        index = torch.device(device).index if not isinstance(device, int) else device
        if index >= visible["count"]:
            raise IndexError(f"no GPU {index}")
        return states[index].clone()

    def set_state(state, device=0):
        index = torch.device(device).index if not isinstance(device, int) else device
        if index >= visible["count"]:
            raise IndexError(f"no GPU {index}")  # what torch raises for a GPU that is not there
        restored[index] = state.clone()

    fake_cuda(monkeypatch, 4)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible["count"])
    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "get_rng_state", get_state)
        monkeypatch.setattr(module, "set_rng_state", set_state)
        monkeypatch.setattr(module, "get_rng_state_all", lambda: [get_state(i) for i in range(visible["count"])])
        monkeypatch.setattr(module, "set_rng_state_all", lambda all: [set_state(s, i) for i, s in enumerate(all)])

    saved = trainer_module.rng_state(torch.device("cuda", 2))
    assert torch.equal(saved["cuda"], states[2])  # one state: the training GPU's
    visible["count"] = 1  # resumed on a machine (or a CUDA_VISIBLE_DEVICES) with one GPU
    trainer_module.set_rng_state(saved, torch.device("cuda", 0))
    assert list(restored) == [0] and torch.equal(restored[0], states[2])
    # A checkpoint of an older version holds every GPU's state: the device's own, else the first.
    restored.clear()
    trainer_module.set_rng_state({"torch": torch.get_rng_state(), "cuda": [states[i] for i in range(4)]},
                                 torch.device("cuda", 0))
    assert list(restored) == [0] and torch.equal(restored[0], states[0])
    restored.clear()
    trainer_module.set_rng_state(saved, torch.device("cpu"))  # a GPU run resumed on the CPU
    assert restored == {}
    assert "cuda" not in trainer_module.rng_state(torch.device("cpu"))


# --------------------------------------------------------------------------------------------
# A non-finite loss: every rank stops together; fp16 skips steps first
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank(tiny_demo, tmp_path, monkeypatch, _no_host_name_lookup):
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    outcomes = tmp_path / "outcomes"
    outcomes.mkdir()
    monkeypatch.setenv(NAN_AT, "1:3")
    monkeypatch.setenv(OUTCOME_TO, str(outcomes))
    config = tiny_config(tiny_demo, tmp_path / "run", checkpoint_every=2, val_every=10)
    with pytest.raises(ChildFailedError):
        launch_training(NanTrainer, config, 2, progress=False, threads=1)
    for rank in (0, 1):
        text = (outcomes / f"rank{rank}.txt").read_text()
        assert text.startswith("NonFiniteLossError: the loss became nan on rank 1 at step 3"), (rank, text)
        assert "step 2) is kept" in text
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2


def _poison(trainer, steps):
    """Make the loss NaN at the given (1-based) steps."""
    real = trainer.criterion

    def poisoned(logits, target):
        parts = real(logits, target)
        if trainer.model.training and trainer.step + 1 in steps:
            return parts._replace(total=parts.total * float("nan"))
        return parts

    trainer.criterion = poisoned


@pytest.mark.slow
def test_fp16_gradient_scaler_skips_non_finite_steps_before_stopping(tiny_demo, tmp_path):
    trainer = Trainer(tiny_config(tiny_demo, tmp_path / "run", steps=4, val_every=10, checkpoint_every=10),
                      progress=False)
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # what fp16 on a GPU uses
    _poison(trainer, {2, 3})
    result = trainer.fit()
    assert result.step == 4 and not result.interrupted
    steps = read_log(tmp_path / "run")[0]
    assert [bool(r.get("skipped")) for r in steps] == [False, True, True, False]
    assert trainer.scaler.get_scale() == 2.0**8, "each skipped step halved the scale"

    stuck = Trainer(tiny_config(tiny_demo, tmp_path / "stuck", steps=MAX_SKIPPED_STEPS + 3, val_every=100,
                                checkpoint_every=1), progress=False)
    stuck.scaler = torch.amp.GradScaler("cpu")
    _poison(stuck, set(range(2, MAX_SKIPPED_STEPS + 4)))
    with pytest.raises(NonFiniteLossError, match=f"nan at step {MAX_SKIPPED_STEPS + 2} after the gradient scaler "
                                                 f"skipped {MAX_SKIPPED_STEPS} steps in a row"):
        stuck.fit()


# --------------------------------------------------------------------------------------------
# reproduce: each worker and each torchrun rank makes its own GPU the current one
# --------------------------------------------------------------------------------------------
def _record_set_device(monkeypatch) -> list:
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: current.append(torch.device(device)))
    return current


def test_reproduce_jobs_worker_makes_its_gpu_current(monkeypatch):
    from memseg_lite.experiments import reproduce as reproduce_module

    fake_cuda(monkeypatch, 2)
    current = _record_set_device(monkeypatch)
    monkeypatch.delenv("MEMSEG_DEVICE")
    assert reproduce_module._worker_devices(2, "auto") == ["cuda:0", "cuda:1"]

    class Queue:
        def get(self):
            return "cuda:1"

    reproduce_module._init_worker(Queue(), threads=1)
    assert current == [torch.device("cuda", 1)]
    monkeypatch.setenv("MEMSEG_DEVICE", "cpu")  # the tests' setting: workers on the CPU
    assert reproduce_module._worker_devices(2, "auto") == ["cpu", "cpu"]


def test_reproduce_under_torchrun_makes_the_rank_gpu_current(monkeypatch, tmp_path):
    import torch.distributed as dist

    from memseg_lite.experiments import reproduce as reproduce_module

    fake_cuda(monkeypatch, 2)
    current = _record_set_device(monkeypatch)
    monkeypatch.delenv("MEMSEG_DEVICE")
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    trained = []

    def run_category(data_root, category, out, progress=True, **options):
        trained.append((category, options["device"], list(current)))
        return "done"

    monkeypatch.setattr(reproduce_module, "run_category", run_category)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op=None: tensor)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: None)
    statuses = reproduce_module._run_share(tmp_path, ["a", "b", "c"], tmp_path, False, {})
    assert statuses == ["done"]
    assert trained == [("b", "cuda:1", [torch.device("cuda", 1)])], "GPU 1 was current before training started"


# --------------------------------------------------------------------------------------------
# The onnx backend leaves the Inferencer's model where it is
# --------------------------------------------------------------------------------------------
def test_onnx_backend_does_not_move_the_inferencers_model(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from memseg_lite.core.checkpoint import save_checkpoint
    from memseg_lite.deployment.inferencer import Inferencer
    from memseg_lite.network.model import build_memseg

    model = build_memseg(torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
                         backbone_weights="none", device="cpu", seed=0)
    path = save_checkpoint({"model_config": model.config(), "model": model.state_dict(), "step": 1,
                            "train_config": {"image_size": 64, "center_crop": None, "resize": "letterbox"}},
                           tmp_path / "best.pt")
    moved = []  # every module moved to the CPU (on a GPU a move of the Inferencer's own model is the bug)
    real_cpu = torch.nn.Module.cpu

    def spy(self):
        moved.append(self)
        return real_cpu(self)

    monkeypatch.setattr(torch.nn.Module, "cpu", spy)
    inferencer = Inferencer(path, device="cpu", backend="onnx")
    assert moved, "the onnx backend got a CPU model"
    assert all(module is not inferencer.model for module in moved), "the Inferencer's model was moved in place"
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    reference = Inferencer(path, device="cpu", backend="eager").predict(image)
    assert abs(inferencer.predict(image).score - reference.score) < 1e-4


# --------------------------------------------------------------------------------------------
# Feeding the GPU: loader workers by default on CUDA, one OpenCV thread each, cuDNN autotuning
# --------------------------------------------------------------------------------------------
class _ThreadCounts(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        import cv2

        return torch.tensor([cv2.getNumThreads(), torch.get_num_threads()])


def test_loader_workers_default_on_cuda_and_use_one_thread_each(tiny_demo, tmp_path, monkeypatch):
    from memseg_lite.training.data import DEFAULT_CUDA_WORKERS, init_loader_worker, loader_context, loader_workers

    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert loader_workers(None, torch.device("cuda", 0)) == DEFAULT_CUDA_WORKERS
    assert loader_workers(None, torch.device("cuda", 0), processes_per_machine=8) == 1  # 2 cores per rank
    assert loader_workers(None, torch.device("cpu")) == 0
    assert loader_workers(3, torch.device("cpu")) == 3 and loader_workers(0, torch.device("cuda")) == 0
    assert tiny_config(tiny_demo, tmp_path).num_workers is None  # the default: chosen for the device

    loader = torch.utils.data.DataLoader(
        _ThreadCounts(),
        batch_size=1,
        num_workers=1,
        worker_init_fn=init_loader_worker,
        multiprocessing_context=loader_context(1),
    )
    assert [batch.tolist() for batch in loader] == [[[1, 1]], [[1, 1]]]
    trainer = Trainer(tiny_config(tiny_demo, tmp_path / "run", num_workers=1), progress=False)
    batches = trainer._batches()
    assert batches.worker_init_fn is init_loader_worker and batches.num_workers == 1
    # spawned, not forked: a fork after ONNX Runtime / a process group ran here can wait on an inherited lock
    assert batches.multiprocessing_context.get_start_method() == "spawn"
    assert loader_context(0) is None


@pytest.mark.slow
def test_spawned_loader_workers_train_the_same_steps_as_the_training_process(tiny_demo, tmp_path):
    """Batches are a function of (seed, step): two spawned workers give the weights no workers give."""
    from memseg_lite.training.trainer import train

    weights = []
    for workers in (0, 2):
        train(tiny_config(tiny_demo, tmp_path / f"w{workers}", steps=3, val_every=10, checkpoint_every=10,
                          num_workers=workers), progress=False)
        weights.append(load_checkpoint(tmp_path / f"w{workers}" / "checkpoint.pt")["model"])
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        torch.testing.assert_close(weights[1][name], weights[0][name], rtol=0, atol=0, msg=name)


def test_cudnn_benchmark_is_on_while_training_on_cuda_only():
    from memseg_lite.training.trainer import cudnn_benchmark

    before = torch.backends.cudnn.benchmark
    with cudnn_benchmark(torch.device("cuda", 0)):
        assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark == before
    with cudnn_benchmark(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark == before


# --------------------------------------------------------------------------------------------
# scripts/gpu_check.sh on the CPU at tiny sizes
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "MEMSEG_OFFLINE": "1"}
    done = subprocess.run([str(root / "scripts" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = (tmp_path / "gpu_check.md").read_text()
    assert table in done.stdout  # printed, and written
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")[1]
        for line in table.splitlines()[4:]
        if line.startswith("| ")
    }
    from memseg_lite.deployment.inferencer import BACKENDS

    expected = {"versions and autocast", "train, anomalies in the loader", "train, anomalies on the device",
                "resume (stopped halfway, continued)", "evaluate (test split)",
                *(f"inference backend {name}" for name in BACKENDS)}
    assert {name for name, status in rows.items() if status == "ok"} == expected, rows
    assert rows["fp16 + gradient scaler"] == rows["--compile (graph breaks)"] == "skipped"
    assert "largest loss difference vs the uninterrupted run: 0 " in table  # the CPU resumes exactly


def test_device_synthesis_computes_each_foreground_once(tiny_demo, tmp_path, monkeypatch):
    from memseg_lite.simulation import synthesis

    trainer = Trainer(tiny_config(tiny_demo, tmp_path / "run", synthesis="device", steps=2, val_every=10,
                                  foreground="otsu"), progress=False)
    images = torch.stack([trainer.dataset[(i, 0)][0] for i in range(4)])
    keys = torch.stack([trainer.dataset[(i, 7)][1] for i in range(4)])
    assert keys[:, 0].tolist() == [7] * 4 and keys[:, 1].tolist() == [0, 1, 2, 3]
    # The cached masks give the batch the uncached simulation gives.
    expected = trainer.device_synthesizer.sample(images, torch.Generator().manual_seed(7))
    normalised, masks = trainer._to_device(images, keys)
    assert torch.equal(masks, expected.masks)
    from memseg_lite.core.transforms import normalise_batch

    assert torch.equal(normalised, normalise_batch(expected.images))

    calls = []
    real = synthesis.foreground_mask_torch
    monkeypatch.setattr(synthesis, "foreground_mask_torch", lambda *a, **k: calls.append(1) or real(*a, **k))
    trainer.fit()
    assert calls == [], "no foreground recomputed per batch"
