"""Fixtures for the inference tests: tiny verified weights and synthetic volumes built from arrays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ichnet_core.imaging.volume import Volume
from ichnet_core.models.registry import create_model
from ichnet_core.models.weights import ModelWeights, load_weights, save_weights

TINY_OVERRIDES = {
    "widths": (4, 8, 8, 8),
    "blocks_per_level": (1, 1, 1, 1),
    "input_size": 32,
    "lstm_hidden": 4,
}


def _tiny_weights(folder: Path, name: str, **flags: bool) -> ModelWeights:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model(name, **TINY_OVERRIDES, **flags)
    path = folder / f"{name}.pt"
    sha256 = save_weights(
        model,
        path,
        name=name,
        metadata={"version": "test", "trained_on": "nothing", "description": "tiny test weights"},
    )
    return load_weights(path, expected_sha256=sha256)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> ModelWeights:
    """Random tiny ICHNet weights (32x32 input), saved and verified like real ones."""
    return _tiny_weights(tmp_path_factory.mktemp("weights"), "ichnet")


@pytest.fixture(scope="session")
def tiny_cls_weights(tmp_path_factory: pytest.TempPathFactory) -> ModelWeights:
    """Tiny weights without the segmentation branch."""
    return _tiny_weights(tmp_path_factory.mktemp("weights_cls"), "ichnet_cls")


@pytest.fixture
def make_volume() -> Callable[..., Volume]:
    """Build a :class:`Volume` directly from arrays (no DICOM), with a bright blob as a 'bleed'."""

    def factory(
        slices: int = 5,
        rows: int = 40,
        columns: int = 48,
        *,
        pixel_spacing: tuple[float, float] = (0.5, 0.5),
        slice_extent_mm: np.ndarray | None = None,
    ) -> Volume:
        rng = np.random.default_rng(slices * 1000 + rows)
        hu = rng.normal(30.0, 10.0, size=(slices, rows, columns)).astype(np.float32)
        hu[:, : rows // 8] = -1000.0  # air
        hu[:, rows // 3 : rows // 2, columns // 3 : columns // 2] = 70.0  # blood-like
        extent = np.full(slices, 5.0) if slice_extent_mm is None else slice_extent_mm
        positions = np.zeros((slices, 3))
        positions[:, 2] = np.arange(slices) * 5.0
        return Volume(
            hu=hu,
            sop_instance_uids=tuple(f"2.25.{1000 + i}" for i in range(slices)),
            positions=positions,
            orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
            normal=np.array([0.0, 0.0, 1.0]),
            pixel_spacing=pixel_spacing,
            slice_extent_mm=np.asarray(extent, dtype=np.float64),
            study_instance_uid="2.25.1",
            series_instance_uid="2.25.2",
            frame_of_reference_uid="2.25.3",
            datasets=(),
        )

    return factory
