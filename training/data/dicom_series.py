"""DICOM series into cases through the node's own volume builder.

Training reads DICOM exactly as the node does at inference (``ichnet_core.imaging.volume``):
slices sorted along the slice normal (inferior to superior for a standard axial series),
Modality LUT to Hounsfield units, padding to air. A model therefore never trains on a different
slice order or intensity scale than it later sees.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom import Dataset, dcmread

from ichnet_core.imaging.volume import Volume, build_volume
from training.data.case import LabelledCase

logger = logging.getLogger(__name__)


def read_header(path: Path, tags: Sequence[str]) -> Dataset:
    """The listed attributes of one file, without reading its pixels."""
    return dcmread(path, stop_before_pixels=True, specific_tags=list(tags))


def load_volume(paths: Sequence[Path]) -> Volume:
    """Read the files of one series (any order) and build its volume.

    Raises
    ------
    ichnet_core.imaging.volume.VolumeError
        When the files do not form one usable CT volume (the message names the problem).
    """
    datasets = [dcmread(path) for path in paths]
    return build_volume(datasets)


def case_from_volume(
    volume: Volume,
    *,
    case_id: str,
    group_id: str,
    slice_labels: np.ndarray | None = None,
    subject_labels: np.ndarray | None = None,
) -> LabelledCase:
    """A :class:`LabelledCase` of a built volume (labels already in volume order)."""
    return LabelledCase(
        case_id=case_id,
        group_id=group_id,
        hu=volume.hu,
        pixel_spacing=volume.pixel_spacing,
        slice_extent_mm=np.asarray(volume.slice_extent_mm, dtype=np.float64),
        slice_labels=slice_labels,
        subject_labels=subject_labels,
    )
