"""Shared fixtures: a tiny demo data set, and no network access for any test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Tests never download: "auto" backbone weights fall back to random init without trying.
    monkeypatch.setenv("MEMSEG_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """Demo data at 64 x 64: 16 train/good, 4 test/good and 2 per defect type per category."""
    from memseg_lite.datasets.demo.writer import write_demo_dataset

    root = tmp_path_factory.mktemp("demo") / "data"
    write_demo_dataset(root, categories=["button", "mesh"], size=64, n_train=16, n_test_good=4, n_per_defect=2, seed=0)
    return root


def tiny_config(root, out_dir, **overrides):
    """A TrainConfig that trains in about a second per step on 2 CPU cores."""
    from memseg_lite.training.config import TrainConfig

    options = dict(
        data_root=str(root), category="button", out_dir=str(out_dir), image_size=64, steps=6, batch_size=4,
        memory_size=4, val_images=3, val_every=3, checkpoint_every=3, backbone_weights="none", seed=0,
    )
    options.update(overrides)
    return TrainConfig(**options)
