"""The code paths a GPU takes, checked on the CPU: CUDA's answers are faked (``torch.cuda`` functions
monkeypatched), and what the package does with them is asserted.

What runs for real is checked elsewhere: ``scripts/gpu_check.sh`` on a GPU, and on the CPU by
``test_gpu_check_script_runs_on_the_cpu`` below.
"""

from __future__ import annotations

import torch
from conftest import tiny_config

from memseg_lite.core.runtime import autocast_settings, resolve_device
from memseg_lite.training import trainer as trainer_module


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
