"""Slice stack, gantry tilt and head pose (ichnet_core.synthetic.geometry)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ichnet_core.synthetic import SyntheticConfig
from ichnet_core.synthetic.anatomy import sample_anatomy, scalp_top_points
from ichnet_core.synthetic.geometry import (
    fov_circle,
    sample_geometry,
    sample_pose,
    slice_extents_mm,
)


def _geometry(seed: int, config: SyntheticConfig):
    rng = np.random.default_rng(seed)
    anatomy = sample_anatomy(rng, config.atrophy)
    pose = sample_pose(rng, config)
    return sample_geometry(rng, config, pose, scalp_top_points(anatomy))


@pytest.mark.parametrize("seed", range(8))
def test_slices_are_evenly_spaced_along_the_normal_within_range(seed: int) -> None:
    config = SyntheticConfig(gantry_tilt_probability=0.5)
    geometry = _geometry(seed, config)
    offsets = geometry.positions @ geometry.normal
    gaps = np.diff(offsets)
    assert np.all(gaps > 0), "slice 0 must be the most inferior"
    assert np.allclose(gaps, gaps[0])
    assert 2.5 <= gaps[0] <= 5.0
    assert 25 <= geometry.num_slices <= 75


def test_gantry_tilt_tilts_the_column_direction_and_steps_the_table() -> None:
    config = SyntheticConfig(gantry_tilt_probability=1.0, gantry_tilt_deg=(15.0, 15.0))
    geometry = _geometry(3, config)
    t = math.radians(abs(geometry.gantry_tilt_deg))
    assert abs(geometry.gantry_tilt_deg) == pytest.approx(15.0)
    assert geometry.orientation[:3] == (1.0, 0.0, 0.0)
    assert abs(geometry.orientation[5]) == pytest.approx(math.sin(t))
    steps = np.diff(geometry.positions, axis=0)
    # The table moves along z only; along the tilted normal the slices are `spacing` apart.
    assert np.allclose(steps[:, :2], 0.0)
    assert np.allclose(steps[:, 2], geometry.slice_spacing_mm / math.cos(t))
    assert np.allclose(steps @ geometry.normal, geometry.slice_spacing_mm)


def test_extents_are_half_the_distance_to_each_neighbour() -> None:
    positions = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 4.0], [0.0, 0.0, 11.0]])
    extents = slice_extents_mm(positions, np.array([0.0, 0.0, 1.0]), 5.0)
    assert extents.tolist() == [4.0, 5.5, 7.0]
    assert slice_extents_mm(positions[:1], np.array([0.0, 0.0, 1.0]), 5.0).tolist() == [5.0]


def test_fov_circle_is_inscribed() -> None:
    mask = fov_circle(64, 64)
    assert mask[32, 32] and mask[0, 32] and mask[32, 63]
    assert not mask[0, 0] and not mask[63, 63]


def test_pixels_map_into_the_canonical_head_frame() -> None:
    config = SyntheticConfig(rows=64, columns=64)
    geometry = _geometry(5, config)
    grid = geometry.grid(2, 4)
    pose = geometry.pose
    # Pixel (row 10, column 20) of slice 3, computed directly from the DICOM geometry.
    patient = (
        geometry.positions[3]
        + 20 * geometry.pixel_spacing[1] * geometry.row_direction
        + 10 * geometry.pixel_spacing[0] * geometry.column_direction
    )
    expected = pose.canonical(patient)
    got = np.array([grid.X[1, 10, 20], grid.Y[1, 10, 20], grid.Z[1, 10, 20]])
    assert np.allclose(got, expected, atol=1e-3)
    assert np.allclose(pose.patient(pose.canonical(patient)), patient)
