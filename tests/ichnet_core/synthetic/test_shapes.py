"""Partial-volume shapes and crops (ichnet_core.synthetic.shapes, ichnet_core.synthetic.points)."""

from __future__ import annotations

import numpy as np
import pytest

from ichnet_core.synthetic.points import FlatPoints, GridPoints
from ichnet_core.synthetic.shapes import Canvas, ellipsoid, ellipsoid_alpha, tube, wave_field


def _grid(
    thickness: float, pixel: float = 1.0, n: int = 40, size: int = 48, z0: float = -20.0
) -> GridPoints:
    base = np.zeros((n, 3))
    base[:, 0] = base[:, 1] = -size * pixel / 2.0
    base[:, 2] = z0 + thickness * np.arange(n)
    return GridPoints(
        base=base,
        row_step=np.array([0.0, pixel, 0.0]),
        col_step=np.array([pixel, 0.0, 0.0]),
        normal=np.array([0.0, 0.0, 1.0]),
        pixel_mm=pixel,
        thickness_mm=thickness,
        rows=size,
        columns=size,
    )


def test_partial_volume_matches_a_supersampled_sphere() -> None:
    """Slab-averaged fractions: the analytic ramp vs 8x8x8 supersampling of a 6 mm sphere."""
    thickness, radius = 4.0, 6.0
    grid = _grid(thickness, n=6, size=24, z0=-10.0)
    analytic = ellipsoid_alpha(grid, (0.3, -0.2, 0.7), (radius,) * 3)
    sub = (np.arange(8) + 0.5) / 8.0 - 0.5
    z = grid.Z[..., None, None, None] + thickness * sub[:, None, None]
    y = grid.Y[..., None, None, None] + sub[None, :, None]
    x = grid.X[..., None, None, None] + sub[None, None, :]
    inside = ((x - 0.3) ** 2 + (y + 0.2) ** 2 + (z - 0.7) ** 2) <= radius**2
    truth = inside.mean(axis=(-3, -2, -1))
    assert abs(analytic.sum() - truth.sum()) / truth.sum() < 0.1
    assert np.abs(analytic - truth).max() < 0.35
    # The centre-plane rule: alpha >= 0.5 exactly where the slice's centre plane is inside.
    centre_inside = radius**2 >= ((grid.X - 0.3) ** 2 + (grid.Y + 0.2) ** 2 + (grid.Z - 0.7) ** 2)
    d, _ = ellipsoid(grid, (0.3, -0.2, 0.7), (radius,) * 3)
    assert np.array_equal(d >= 0, centre_inside)


def test_crop_holds_every_pixel_of_the_sphere() -> None:
    grid = _grid(2.5, pixel=0.9)
    centre, radius = np.array([4.0, -7.0, 3.0]), 6.0
    crop = grid.crop(centre, radius)
    assert crop is not None
    inside = radius**2 >= ((grid.X - 4.0) ** 2 + (grid.Y + 7.0) ** 2 + (grid.Z - 3.0) ** 2)
    in_crop = np.zeros(grid.shape, dtype=bool)
    in_crop[crop.index_in(grid)] = True
    assert inside.any() and np.all(in_crop[inside])
    assert in_crop.sum() < 0.2 * in_crop.size
    assert np.allclose(crop.X, grid.X[crop.index_in(grid)])
    assert grid.crop(np.array([500.0, 0.0, 0.0]), 5.0) is None


def test_canvas_paints_only_inside_the_crop() -> None:
    grid = _grid(3.0)
    canvas = Canvas(np.zeros(grid.shape, dtype=np.float32), grid)
    canvas.ellipsoid((0.0, 0.0, 0.0), (5.0, 5.0, 5.0), 100.0)
    assert canvas.values.max() == pytest.approx(100.0)
    assert canvas.values[0].max() == 0.0


def test_tube_distance_to_a_segment() -> None:
    pts = FlatPoints(
        np.array([[0.0, 0.0, 0.0], [0.0, 3.0, 5.0], [0.0, 0.0, 20.0]], dtype=np.float32)
    )
    d, _ = tube(pts, np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 10.0]]), np.array([2.0, 4.0]))
    assert d == pytest.approx([2.0, 0.0, -10.0 + 4.0 - 0.0], abs=1e-4)


def test_wave_field_has_unit_variance() -> None:
    rng = np.random.default_rng(0)
    k = rng.normal(size=(10, 3))
    phase = rng.uniform(0, 2 * np.pi, 10)
    x, y, z = (rng.uniform(-500, 500, 20000).astype(np.float32) for _ in range(3))
    assert float(wave_field(x, y, z, k, phase).std()) == pytest.approx(1.0, rel=0.1)
