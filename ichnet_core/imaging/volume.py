"""A CT series as a geometric volume: slices sorted along the slice normal, in Hounsfield units.

Implementation of ``build_volume`` is pending (see docs/architecture.md); the dataclass is the
contract other modules code against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom import Dataset


@dataclass(frozen=True)
class Volume:
    """One CT series, sorted along its slice normal (first to last position).

    Attributes
    ----------
    hu:
        ``(S, rows, columns)`` float32 Hounsfield units; padding pixels set to -1024 (air).
    sop_instance_uids:
        SOP Instance UID of each slice, in volume order (the mapping back to the source).
    positions:
        ``(S, 3)`` ImagePositionPatient of each slice (mm, patient coordinates).
    orientation:
        The six ImageOrientationPatient direction cosines shared by all slices.
    normal:
        ``(3,)`` unit slice normal (row cosines x column cosines).
    pixel_spacing:
        (row spacing, column spacing) in mm, as in PixelSpacing.
    slice_extent_mm:
        ``(S,)`` thickness each slice stands for along the normal: half the distance to each
        neighbour (non-uniform spacing handled); for a single slice, its SliceThickness.
    study_instance_uid, series_instance_uid, frame_of_reference_uid:
        UIDs of the source series.
    datasets:
        The source datasets in volume order (pixel data may be released), for the result writers.
    """

    hu: np.ndarray
    sop_instance_uids: tuple[str, ...]
    positions: np.ndarray
    orientation: tuple[float, ...]
    normal: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_extent_mm: np.ndarray
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    datasets: tuple[Dataset, ...]

    @property
    def num_slices(self) -> int:
        return int(self.hu.shape[0])

    def voxel_volumes_ml(self) -> np.ndarray:
        """``(S,)`` volume of one pixel of each slice in mL (pixel area x slice extent / 1000)."""
        area = float(self.pixel_spacing[0]) * float(self.pixel_spacing[1])
        return (area * self.slice_extent_mm / 1000.0).astype(np.float64)


def build_volume(datasets: Sequence[Dataset]) -> Volume:  # pragma: no cover - placeholder
    raise NotImplementedError
