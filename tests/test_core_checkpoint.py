"""What a checkpoint payload says about its model's input (core.checkpoint) and its mixed precision (core.runtime)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from memseg_lite.core.checkpoint import input_size, resize_mode
from memseg_lite.core.runtime import autocast_for


@pytest.mark.parametrize(
    ("train_config", "size", "crop", "resize"),
    [
        ({}, 256, None, "stretch"),  # a payload without train_config (exported model weights, old files)
        ({"image_size": 128, "center_crop": 112, "resize": "letterbox"}, 128, 112, "letterbox"),
        ({"image_size": [64, 128]}, (64, 128), None, "stretch"),
        ({"image_size": "96x96"}, 96, None, "stretch"),  # a square H x W is given as one number
    ],
)
def test_input_size_and_resize_mode_read_the_training_config(train_config, size, crop, resize):
    payload = {"train_config": train_config} if train_config else {}
    assert input_size(payload) == (size, crop)
    assert resize_mode(payload) == resize


def test_input_size_rejects_a_bad_image_size():
    with pytest.raises(ValueError):
        input_size({"train_config": {"image_size": "big"}})


def test_autocast_for_follows_the_checkpoints_amp_setting_on_the_cpu():
    cpu = torch.device("cpu")
    a = torch.ones(4, 4)
    for amp in (None, "auto", "off"):  # "auto" means no mixed precision off CUDA
        payload = {"train_config": {} if amp is None else {"amp": amp}}
        context = autocast_for(payload, cpu)
        assert isinstance(context, contextlib.nullcontext)
        with context:
            assert (a @ a).dtype == torch.float32
    with autocast_for({"train_config": {"amp": "bf16"}}, cpu):
        assert (a @ a).dtype == torch.bfloat16
