"""Fixtures for the inference tests: tiny verified weights and synthetic volumes built from arrays."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ichnet_core.export import ExportedModel, cached_export
from ichnet_core.imaging.volume import Volume
from ichnet_core.models.weights import ModelWeights
from tests.ichnet_core.inference.tiny import make_tiny_weights, session_cache_dir


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> ModelWeights:
    """Random tiny ICHNet weights (32x32 input), saved and verified like real ones."""
    return make_tiny_weights(tmp_path_factory.mktemp("weights"), "ichnet")


@pytest.fixture(scope="session")
def tiny_cls_weights(tmp_path_factory: pytest.TempPathFactory) -> ModelWeights:
    """Tiny weights without the segmentation branch."""
    return make_tiny_weights(tmp_path_factory.mktemp("weights_cls"), "ichnet_cls")


@pytest.fixture(scope="session")
def decisive_weights(tmp_path_factory: pytest.TempPathFactory) -> ModelWeights:
    """Tiny weights whose outputs spread over [0, 1] like a trained model's (parity tests)."""
    return make_tiny_weights(tmp_path_factory.mktemp("weights_decisive"), decisive=True)


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's engine cache (ONNX exports are made once and reused)."""
    return session_cache_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_export(tiny_weights: ModelWeights, engine_cache: Path) -> ExportedModel:
    """The staged ONNX export of :func:`tiny_weights`, made once per session."""
    return cached_export(tiny_weights, engine_cache)


@pytest.fixture(scope="session")
def decisive_export(decisive_weights: ModelWeights, engine_cache: Path) -> ExportedModel:
    """The staged ONNX export of :func:`decisive_weights`, made once per session."""
    return cached_export(decisive_weights, engine_cache)


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
