"""The one volume rule: slice extents, voxel volumes, label volumes."""

from __future__ import annotations

import numpy as np
import pytest

from ichnet_core.imaging.measure import label_volume_ml, slice_extents_mm, voxel_volumes_ml


def test_extents_are_half_the_distance_to_each_neighbour_in_either_order() -> None:
    offsets = np.array([0.0, 5.0, 7.0, 17.0])
    expected = [5.0, 3.5, 6.0, 10.0]
    np.testing.assert_allclose(slice_extents_mm(offsets, 99.0), expected)
    np.testing.assert_allclose(slice_extents_mm(offsets[::-1], 99.0), expected[::-1])
    np.testing.assert_allclose(slice_extents_mm(np.array([3.0]), 2.5), [2.5])


def test_label_volume_counts_each_slice_with_its_own_extent() -> None:
    labels = np.zeros((3, 10, 10), dtype=np.uint8)
    labels[0, :2, :5] = 2  # 10 voxels
    labels[2, :, :3] = 2  # 30 voxels
    voxel = voxel_volumes_ml((0.5, 0.8), np.array([4.0, 5.5, 7.0]))
    assert label_volume_ml(labels, 2, voxel) == pytest.approx((10 * 0.4 * 4 + 30 * 0.4 * 7) / 1000)
    assert label_volume_ml(labels, 1, voxel) == 0.0
    with pytest.raises(ValueError, match="one voxel volume per slice"):
        label_volume_ml(labels, 2, voxel[:2])
