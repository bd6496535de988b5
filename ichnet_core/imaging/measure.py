"""The volume rule of ../shared/DESIGN.md ("Label conventions"), in one place.

A slice stands for half the distance to each neighbour along the slice normal (the ends for their
one neighbour distance), so uneven spacing and gaps are measured as acquired; a voxel's volume is
pixel area x that extent. The node's result volumes, the generator's ground truth, the dataset
loaders and the evaluation all call these functions: they agree because there is one rule, not
because several copies happen to agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ML_PER_MM3 = 1.0 / 1000.0


def slice_extents_mm(offsets_mm: np.ndarray, single_slice_mm: float) -> np.ndarray:
    """``(S,)`` extent of each slice from its offsets along the normal (any order of sorting).

    Parameters
    ----------
    offsets_mm:
        Slice positions projected on the slice normal, in volume order.
    single_slice_mm:
        The extent of a one-slice series (its nominal thickness); unused otherwise.
    """
    offsets = np.asarray(offsets_mm, dtype=np.float64)
    if offsets.size == 1:
        return np.array([float(single_slice_mm)], dtype=np.float64)
    gaps = np.abs(np.diff(offsets))
    extents = np.empty(offsets.size, dtype=np.float64)
    extents[0], extents[-1] = gaps[0], gaps[-1]
    extents[1:-1] = (gaps[:-1] + gaps[1:]) / 2.0
    return extents


def voxel_volumes_ml(pixel_spacing: Sequence[float], extents_mm: np.ndarray) -> np.ndarray:
    """``(S,)`` volume of one pixel of each slice in mL (pixel area x slice extent)."""
    area = float(pixel_spacing[0]) * float(pixel_spacing[1])
    return np.asarray(extents_mm, dtype=np.float64) * area * ML_PER_MM3


def mask_volume_ml(mask: np.ndarray, voxel_ml: np.ndarray) -> float:
    """Volume in mL of the true voxels of ``mask`` ``(S, rows, columns)``.

    Raises
    ------
    ValueError
        When ``voxel_ml`` does not hold one volume per slice of ``mask``.
    """
    if mask.ndim != 3 or np.shape(voxel_ml) != (mask.shape[0],):
        raise ValueError(
            f"mask {mask.shape} and {np.shape(voxel_ml)} voxel volumes do not match "
            "(one voxel volume per slice expected)"
        )
    per_slice = np.count_nonzero(mask, axis=(1, 2))
    return float(np.dot(per_slice, voxel_ml))


def label_volume_ml(labels: np.ndarray, value: int, voxel_ml: np.ndarray) -> float:
    """Volume in mL of the voxels of ``labels`` ``(S, rows, columns)`` equal to ``value``
    (:func:`mask_volume_ml`)."""
    return mask_volume_ml(labels == value, voxel_ml)
