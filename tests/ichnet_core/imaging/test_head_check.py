"""The image head check (ichnet_core.imaging.head_check) on real, synthetic and phantom slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from ichnet_core.imaging.head_check import (
    HEAD_EXTENT_MM,
    check_head,
    inspect_slice,
    sample_indices,
)
from ichnet_core.imaging.pixels import decode_hu
from ichnet_core.imaging.volume import slice_geometry
from ichnet_core.synthetic import SyntheticConfig, generate_case

PIXEL_MM = 1.0


def ellipse_slice(
    semi_axes_mm: tuple[float, float],
    *,
    inside_hu: float = 35.0,
    bone_mm: float = 6.0,
    gap_mm: float = 0.0,
    body_semi_axes_mm: tuple[float, float] | None = None,
    noise_hu: float = 3.0,
    size: int = 400,
    seed: int = 0,
) -> np.ndarray:
    """A bone ellipse (1200 HU, ``bone_mm`` thick) around ``inside_hu`` tissue, in air or inside
    a larger soft-tissue body; ``gap_mm`` cuts the ring open at the front."""
    yy, xx = (np.mgrid[0:size, 0:size] - size / 2) * PIXEL_MM
    a, b = semi_axes_mm
    hu = np.full((size, size), -1000.0)
    if body_semi_axes_mm is not None:
        hu[(xx / body_semi_axes_mm[0]) ** 2 + (yy / body_semi_axes_mm[1]) ** 2 <= 1] = 45.0
    outer = (xx / a) ** 2 + (yy / b) ** 2 <= 1
    inner = (xx / (a - bone_mm)) ** 2 + (yy / (b - bone_mm)) ** 2 <= 1
    hu[outer] = 1200.0
    hu[inner] = inside_hu
    if gap_mm:
        hu[outer & ~inner & (np.abs(xx) < gap_mm / 2) & (yy < 0)] = inside_hu
    return hu + np.random.default_rng(seed).normal(0.0, noise_hu, hu.shape)


def test_a_head_sized_ring_around_brain_is_a_head() -> None:
    findings = inspect_slice(ellipse_slice((75.0, 90.0)), (PIXEL_MM, PIXEL_MM))
    assert findings.shows_head, findings.describe()
    assert findings.enclosed_mm == pytest.approx((138.0, 168.0), abs=4.0)
    assert findings.brain_fraction > 0.95
    assert findings.outside_ratio < 0.1


@pytest.mark.parametrize(
    ("phantom", "why"),
    [
        (ellipse_slice((165.0, 115.0)), "enclosed region 31"),  # a thorax-sized ring
        (ellipse_slice((75.0, 90.0), inside_hu=-100.0), "0 % brain-density"),  # fat inside
        (ellipse_slice((75.0, 90.0), gap_mm=20.0), "no region enclosed by bone"),  # open ring
        (ellipse_slice((55.0, 50.0), body_semi_axes_mm=(180.0, 130.0)), "tissue outside"),
    ],
)
def test_what_is_not_a_head(phantom: np.ndarray, why: str) -> None:
    findings = inspect_slice(phantom, (PIXEL_MM, PIXEL_MM))
    assert not findings.shows_head
    assert why in findings.describe()


def test_the_pelvis_like_phantom_fails_on_the_tissue_outside() -> None:
    findings = inspect_slice(
        ellipse_slice((55.0, 50.0), body_semi_axes_mm=(180.0, 130.0)), (PIXEL_MM, PIXEL_MM)
    )
    low, high = HEAD_EXTENT_MM
    assert findings.enclosed_mm is not None
    assert all(low <= e <= high for e in findings.enclosed_mm)
    assert findings.brain_fraction > 0.9
    assert findings.outside_ratio > 5


def test_noise_measured_inside_the_skull_follows_the_image_noise() -> None:
    soft = inspect_slice(ellipse_slice((75.0, 90.0), noise_hu=4.0), (PIXEL_MM, PIXEL_MM))
    sharp = inspect_slice(ellipse_slice((75.0, 90.0), noise_hu=45.0), (PIXEL_MM, PIXEL_MM))
    assert soft.noise_hu == pytest.approx(4.0, rel=0.25)
    assert sharp.noise_hu == pytest.approx(45.0, rel=0.15)
    assert sharp.shows_head, "block means average a sharp kernel's noise out"


def test_verdict_needs_most_sampled_slices() -> None:
    head = ellipse_slice((75.0, 90.0))
    air = np.full_like(head, -1000.0)
    spacing = (PIXEL_MM, PIXEL_MM)
    assert check_head([head, head, air], spacing).is_head
    two_of_four = check_head([head, head, air, air], spacing)
    assert not two_of_four.is_head
    assert two_of_four.describe().startswith("only skull ring ")
    assert check_head([air], spacing).describe() == (
        "no head-sized skull ring around brain-density tissue on 0/1 sampled slices "
        "(largest: no region enclosed by bone)"
    )
    assert not check_head([], spacing).is_head


def test_sample_indices_come_from_the_middle_and_repeat_nothing() -> None:
    assert sample_indices(np.arange(28) * 5.0) == [9, 11, 13, 16, 18]
    assert sample_indices([0.0, 5.0, 10.0]) == [1]
    assert sample_indices([]) == []
    # Spacing, not index: 12 thin slices at the bottom, 8 thick ones above.
    offsets = np.concatenate([np.arange(12) * 1.0, 12 + np.arange(1, 9) * 10.0])
    middle = (offsets[0] + offsets[-1]) / 2
    chosen = sample_indices(offsets)
    assert min(abs(offsets[i] - middle) for i in chosen) < 5.0
    assert all(i >= 12 for i in chosen)


@pytest.mark.shared_data
def test_real_head_ct_middle_slices_show_a_head(head_ct_dir: Path) -> None:
    paths = sorted(head_ct_dir.glob("*.dcm"))
    geometry = slice_geometry([pydicom.dcmread(p, stop_before_pixels=True) for p in paths])
    chosen = sample_indices(geometry.offsets_mm)
    check = check_head(
        [decode_hu(pydicom.dcmread(paths[geometry.order[i]])) for i in chosen],
        geometry.pixel_spacing,
    )
    assert check.is_head, check.describe()
    assert check.describe() == (
        "skull ring 143 x 160 mm on 5/5 sampled slices, 97 % brain-density inside"
    )
    assert check.noise_hu is not None and check.noise_hu < 10.0


def test_synthetic_head_middle_slices_show_a_head() -> None:
    case = generate_case(3, SyntheticConfig(rows=128, columns=128), hemorrhage=False)
    offsets = case.positions @ case.normal
    check = check_head([case.hu[i] for i in sample_indices(offsets)], case.pixel_spacing)
    assert check.is_head, check.describe()
