"""NIfTI volumes into the case convention: axial slices inferior to superior, DICOM display axes.

A NIfTI file stores voxels in any axis order; its affine maps voxel indices to RAS+ world
coordinates. nibabel names each array axis by the direction its index increases towards (``L``:
towards the patient's left, ``P``: posterior, ``S``: superior). The node builds volumes from DICOM (LPS) with slices sorted along the normal, rows running
anterior to posterior and columns patient right to left. The same picture is reached here by
reorienting the array to the axis codes (L, P, S) with nibabel's orientation tools and transposing
to (S, P, L) = (slice, row, column), so a model sees NIfTI and DICOM data the same way round.

Only axis permutations and flips are applied (no resampling): oblique affines are snapped to
the closest axes, as every viewer does for display.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    io_orientation,
    ornt_transform,
)

logger = logging.getLogger(__name__)

#: Target axis codes (before the final transpose): x to the Left, y to Posterior, z Superior.
TARGET_AXCODES: Final[tuple[str, str, str]] = ("L", "P", "S")
#: Axis of the target orientation that becomes the slice axis.
SLICE_AXIS: Final[int] = 2
#: Below this, an image holds air and is plausibly Hounsfield units (air is about -1000 HU).
HU_AIR_CHECK: Final[float] = -500.0
#: Affines of an image and its label map may differ by rounding; this much (mm) is the same.
AFFINE_TOLERANCE_MM: Final[float] = 1e-2


class NiftiError(ValueError):
    """A NIfTI file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class SliceStack:
    """A NIfTI volume reoriented to (slice, row, column).

    Attributes
    ----------
    data:
        ``(S, rows, columns)`` array (float32 for images, the stored integer type for labels).
    pixel_spacing:
        (row spacing, column spacing) in mm.
    slice_spacing_mm:
        Distance between slices in mm.
    source_slice_axis:
        The axis of the file's array that became the slice axis.
    slices_flipped:
        True when the file stores slices superior to inferior (slice ``i`` here is slice
        ``S - 1 - i`` of the file).
    """

    data: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_spacing_mm: float
    source_slice_axis: int
    slices_flipped: bool

    def file_slice_index(self, index: int) -> int:
        """Index along the file's slice axis of slice ``index`` here."""
        return self.data.shape[0] - 1 - index if self.slices_flipped else index

    def reorder_file_slices(self, per_file_slice: np.ndarray) -> np.ndarray:
        """Reorder an array indexed by the file's slice axis into this stack's slice order."""
        return per_file_slice[::-1].copy() if self.slices_flipped else per_file_slice


def _load(path: Path) -> nib.Nifti1Image:
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise NiftiError(f"{path}: cannot read NIfTI ({exc})") from exc
    if len(image.shape) != 3:
        raise NiftiError(f"{path}: expected a 3-D volume, found shape {image.shape}")
    return image


def _reorient(
    array: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...], path: Path
) -> tuple[np.ndarray, tuple[float, float], float, int, bool]:
    """Permute/flip ``array`` to (S, P, L); return it, spacing, slice spacing, source axis, flip."""
    ornt = io_orientation(affine)
    transform = ornt_transform(ornt, axcodes2ornt(TARGET_AXCODES))
    oriented = apply_orientation(array, transform)
    # transform[i] = (target axis of file axis i, flip); find the file axis that became S.
    source_axis = int(np.flatnonzero(transform[:, 0] == SLICE_AXIS)[0])
    flipped = bool(transform[source_axis, 1] < 0)
    target_zooms = [0.0, 0.0, 0.0]
    for file_axis, (target_axis, _) in enumerate(transform):
        target_zooms[int(target_axis)] = float(zooms[file_axis])
    if min(target_zooms) <= 0:
        raise NiftiError(f"{path}: voxel sizes {zooms} must be > 0")
    stacked = np.ascontiguousarray(np.transpose(oriented, (2, 1, 0)))  # (S, P, L)
    spacing = (target_zooms[1], target_zooms[0])  # rows run along P, columns along L
    return stacked, spacing, target_zooms[2], source_axis, flipped


def load_image(path: Path) -> SliceStack:
    """Read a CT image as float32 (scl_slope/scl_inter applied) in slice order.

    NIfTI CT is usually stored in Hounsfield units already; a volume without any value below
    :data:`HU_AIR_CHECK` holds no air and is logged as probably not HU.
    """
    image = _load(path)
    data = np.asarray(image.get_fdata(dtype=np.float32))
    stacked, spacing, slice_spacing, axis, flipped = _reorient(
        data, image.affine, image.header.get_zooms()[:3], path
    )
    if float(stacked.min()) > HU_AIR_CHECK:
        logger.warning(
            "%s: minimum value %.0f holds no air; the image is probably not in Hounsfield units",
            path,
            float(stacked.min()),
        )
    return SliceStack(stacked.astype(np.float32, copy=False), spacing, slice_spacing, axis, flipped)


def load_label_map(path: Path, like: Path | None = None) -> SliceStack:
    """Read an integer label map in slice order.

    Parameters
    ----------
    path:
        The label file.
    like:
        The image it belongs to; the two must share shape and (within rounding) affine, else the
        labels would land on the wrong voxels.

    Raises
    ------
    NiftiError
        Non-integer labels, or a shape/affine that differs from ``like``.
    """
    image = _load(path)
    raw = np.asarray(image.dataobj)
    if not np.issubdtype(raw.dtype, np.integer):
        rounded = np.rint(raw)
        if not np.array_equal(rounded, raw):
            raise NiftiError(f"{path}: label map holds non-integer values")
        raw = rounded.astype(np.int32)
    if like is not None:
        reference = _load(like)
        if tuple(reference.shape) != tuple(image.shape):
            raise NiftiError(
                f"{path}: label shape {image.shape} differs from image {like} shape {reference.shape}"
            )
        if not np.allclose(reference.affine, image.affine, atol=AFFINE_TOLERANCE_MM):
            raise NiftiError(
                f"{path}: label affine differs from image {like} affine beyond "
                f"{AFFINE_TOLERANCE_MM} mm:\n{image.affine}\nvs\n{reference.affine}"
            )
    stacked, spacing, slice_spacing, axis, flipped = _reorient(
        raw, image.affine, image.header.get_zooms()[:3], path
    )
    return SliceStack(stacked, spacing, slice_spacing, axis, flipped)
