"""A CT series as a geometric volume: slices sorted along the slice normal, in Hounsfield units.

Geometry comes only from ImageOrientationPatient / ImagePositionPatient (PS3.3 C.7.6.2.1.1):
slices are ordered by the projection of their position on the slice normal (row cosines x column
cosines). InstanceNumber, SliceLocation and the patient z coordinate are not used: InstanceNumber
is an arbitrary label, SliceLocation is vendor-defined, and with gantry tilt the normal is not the
z axis. With tilt, consecutive positions also move *within* the image plane (the table moves along
z while the image plane is tilted); that shear is allowed as long as all positions lie on one line,
which :func:`slice_geometry` checks.

:func:`slice_geometry` reads headers only (series selection uses it on datasets read with
``stop_before_pixels``); :func:`build_volume` adds the pixels.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from pydicom import Dataset
from pydicom.uid import (
    UID,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

from ichnet_core.imaging.measure import slice_extents_mm, voxel_volumes_ml
from ichnet_core.imaging.pixels import (
    PixelDataError,
    decode_hu,
    grey_scale_problem,
    number_of_frames,
)

logger = logging.getLogger(__name__)

#: Modality whose rescaled pixel values are Hounsfield units.
CT_MODALITY: Final[str] = "CT"
#: Multi-frame CT SOP classes: stored by the node, not yet built into volumes.
MULTI_FRAME_CT_SOP_CLASSES: Final[frozenset[str]] = frozenset(
    {EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage}
)
#: Largest difference between direction cosines still counted as "the same orientation"
#: (about 0.06 degrees; scanners write them with 6+ decimals, so real series agree far better).
ORIENTATION_TOLERANCE: Final[float] = 1e-3
#: Largest departure of a direction cosine vector from unit length / of the two from orthogonality.
DIRECTION_COSINE_TOLERANCE: Final[float] = 1e-2
#: Largest difference (mm) in PixelSpacing between slices of one volume.
PIXEL_SPACING_TOLERANCE_MM: Final[float] = 1e-3
#: Two slices closer than this along the normal (mm) are the same position.
DUPLICATE_POSITION_TOLERANCE_MM: Final[float] = 1e-2
#: Positions may stray from the line through them by this fraction of the smallest pixel spacing:
#: half a pixel is below what the image can show.
COLLINEARITY_TOLERANCE_PIXELS: Final[float] = 0.5
#: Largest angle (degrees) between the slice normal and the line through the positions; gantry
#: tilt stays well below it (scanners tilt at most about 30 degrees).
MAX_STACK_SHEAR_DEG: Final[float] = 45.0


class VolumeError(ValueError):
    """A series that cannot be built into a volume; the message names the problem and the values."""


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
        return voxel_volumes_ml(self.pixel_spacing, self.slice_extent_mm)


@dataclass(frozen=True)
class SliceGeometry:
    """The geometry of a series, from headers only, in volume order.

    Attributes
    ----------
    order:
        Indices into the input sequence, first to last position along the normal.
    positions, orientation, normal, pixel_spacing, slice_extent_mm:
        As in :class:`Volume`.
    rows, columns:
        Image size shared by all slices.
    offsets_mm:
        ``(S,)`` position of each slice along the normal (strictly increasing).
    shear_deg:
        Angle between the normal and the line through the positions (the gantry tilt, or 0).
    study_instance_uid, series_instance_uid, frame_of_reference_uid, sop_instance_uids:
        UIDs shared by the series / of each slice in volume order.
    """

    order: tuple[int, ...]
    positions: np.ndarray
    orientation: tuple[float, ...]
    normal: np.ndarray
    pixel_spacing: tuple[float, float]
    rows: int
    columns: int
    offsets_mm: np.ndarray
    slice_extent_mm: np.ndarray
    shear_deg: float
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None
    sop_instance_uids: tuple[str, ...]


def _sop_uid(ds: Dataset) -> str:
    return str(ds.get("SOPInstanceUID", "<no SOP Instance UID>"))


def _floats(ds: Dataset, keyword: str, count: int) -> np.ndarray:
    """A multi-valued decimal attribute as floats, or a VolumeError naming the instance."""
    value = ds.get(keyword)
    if value is None or value == "":
        raise VolumeError(f"instance {_sop_uid(ds)}: {keyword} missing")
    try:
        numbers = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise VolumeError(f"instance {_sop_uid(ds)}: {keyword} {value!r} is not numeric") from None
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise VolumeError(
            f"instance {_sop_uid(ds)}: {keyword} must hold {count} finite numbers, got {value!r}"
        )
    return numbers


def _required_uid(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if not value:
        raise VolumeError(f"instance {_sop_uid(ds)}: {keyword} missing")
    return str(value)


def _single_value(datasets: Sequence[Dataset], keyword: str, what: str) -> str:
    """The one value of a UID attribute shared by all datasets (mixed series are refused)."""
    values = {_required_uid(ds, keyword) for ds in datasets}
    if len(values) != 1:
        raise VolumeError(f"{what}: {len(values)} different {keyword}s {sorted(values)}")
    return values.pop()


def reject_multi_frame(ds: Dataset) -> None:
    """Raise the one message for Enhanced / multi-frame CT, which is stored but not inferred on."""
    sop_class = str(ds.get("SOPClassUID", ""))
    try:
        frames = number_of_frames(ds)
    except PixelDataError as exc:
        raise VolumeError(f"instance {_sop_uid(ds)}: {exc}") from exc
    if sop_class in MULTI_FRAME_CT_SOP_CLASSES or frames > 1:
        name = UID(sop_class).name if sop_class else "no SOP Class UID"
        raise VolumeError(
            f"Enhanced CT multi-frame data is not supported for inference: instance "
            f"{_sop_uid(ds)} is {name} with {frames} frame(s)"
        )


def _orientation(ds: Dataset) -> np.ndarray:
    """ImageOrientationPatient, checked to be two orthogonal unit vectors."""
    iop = _floats(ds, "ImageOrientationPatient", 6)
    row, col = iop[:3], iop[3:]
    if (
        abs(np.linalg.norm(row) - 1.0) > DIRECTION_COSINE_TOLERANCE
        or abs(np.linalg.norm(col) - 1.0) > DIRECTION_COSINE_TOLERANCE
        or abs(float(row @ col)) > DIRECTION_COSINE_TOLERANCE
    ):
        raise VolumeError(
            f"instance {_sop_uid(ds)}: ImageOrientationPatient {iop.tolist()} is not two "
            "orthogonal unit vectors"
        )
    return iop


def slice_normal(iop: Sequence[float] | np.ndarray) -> np.ndarray:
    """Unit normal of the image plane: row direction cosines x column direction cosines."""
    values = np.asarray(iop, dtype=np.float64)
    normal = np.cross(values[:3], values[3:])
    return normal / np.linalg.norm(normal)


def _check_same_frame(datasets: Sequence[Dataset], reference: Dataset, ref_iop: np.ndarray) -> None:
    """Every slice shares orientation, size, spacing and frame of reference with ``reference``."""
    ref_spacing = _floats(reference, "PixelSpacing", 2)
    ref_size = (reference.get("Rows"), reference.get("Columns"))
    ref_frame = reference.get("FrameOfReferenceUID")
    for ds in datasets:
        iop = _orientation(ds)
        if np.max(np.abs(iop - ref_iop)) > ORIENTATION_TOLERANCE:
            raise VolumeError(
                f"mixed orientations: instance {_sop_uid(ds)} has ImageOrientationPatient "
                f"{iop.tolist()}, instance {_sop_uid(reference)} has {ref_iop.tolist()}"
            )
        size = (ds.get("Rows"), ds.get("Columns"))
        if size != ref_size:
            raise VolumeError(
                f"mixed image sizes: instance {_sop_uid(ds)} is Rows x Columns {size}, "
                f"instance {_sop_uid(reference)} is {ref_size}"
            )
        spacing = _floats(ds, "PixelSpacing", 2)
        if np.max(np.abs(spacing - ref_spacing)) > PIXEL_SPACING_TOLERANCE_MM:
            raise VolumeError(
                f"mixed pixel spacing: instance {_sop_uid(ds)} has PixelSpacing "
                f"{spacing.tolist()}, instance {_sop_uid(reference)} has {ref_spacing.tolist()}"
            )
        frame = ds.get("FrameOfReferenceUID")
        if frame != ref_frame:
            raise VolumeError(
                f"mixed frames of reference: instance {_sop_uid(ds)} has FrameOfReferenceUID "
                f"{frame!r}, instance {_sop_uid(reference)} has {ref_frame!r}"
            )
    if ref_size[0] is None or ref_size[1] is None or int(ref_size[0]) < 1 or int(ref_size[1]) < 1:
        raise VolumeError(f"instance {_sop_uid(reference)}: Rows/Columns {ref_size} not usable")
    if np.any(ref_spacing <= 0):
        raise VolumeError(
            f"instance {_sop_uid(reference)}: PixelSpacing {ref_spacing.tolist()} must be > 0"
        )


def _shear(
    positions: np.ndarray, offsets: np.ndarray, normal: np.ndarray, tolerance: float
) -> float:
    """Check that the (sorted) positions lie on one line; return its angle to the normal (degrees).

    Each position is ``p0 + t * (normal + s)`` with ``t`` the distance along the normal and ``s``
    one in-plane shift per mm (tan of the gantry tilt). ``s`` is the least-squares fit; every
    position must lie within ``tolerance`` mm of the fitted line.
    """
    if len(positions) < 2:
        return 0.0
    t = offsets - offsets[0]
    delta = positions - positions[0]
    in_plane = delta - np.outer(delta @ normal, normal)
    s = (t @ in_plane) / float(t @ t)
    residual = np.linalg.norm(in_plane - np.outer(t, s), axis=1)
    worst = int(np.argmax(residual))
    if residual[worst] > tolerance:
        raise VolumeError(
            f"slice positions do not lie on one line: position {positions[worst].tolist()} is "
            f"{residual[worst]:.2f} mm off the line through the others (tolerance {tolerance:.2f} mm)"
        )
    shear = math.degrees(math.atan(float(np.linalg.norm(s))))
    if shear > MAX_STACK_SHEAR_DEG:
        raise VolumeError(
            f"slice positions move {shear:.1f} degrees away from the slice normal (max "
            f"{MAX_STACK_SHEAR_DEG:.0f}): the slices do not stack into a volume"
        )
    return shear


def _extents(offsets: np.ndarray, single: Dataset) -> np.ndarray:
    """Half the distance to each neighbour; the ends use their one neighbour distance."""
    if len(offsets) == 1:
        thickness = single.get("SliceThickness")
        if thickness is None or thickness == "" or float(thickness) <= 0:
            raise VolumeError(
                f"single slice {_sop_uid(single)} without a positive SliceThickness "
                f"(got {thickness!r}): its extent along the normal is unknown"
            )
        return slice_extents_mm(offsets, float(thickness))
    return slice_extents_mm(offsets, 0.0)


def slice_geometry(datasets: Sequence[Dataset]) -> SliceGeometry:
    """Sort a series along its slice normal and check that it forms one volume (headers only).

    Parameters
    ----------
    datasets:
        The instances of one series, in any order; pixel data is not needed.

    Returns
    -------
    SliceGeometry
        Order, positions, spacing and extents in volume order.

    Raises
    ------
    VolumeError
        For no instances, multi-frame (Enhanced) CT, mixed series/studies, an instance sent twice,
        missing or invalid orientation/position/spacing, mixed orientation, size, spacing or frame
        of reference, two slices at the same position, or positions that are not on one line.
    """
    if len(datasets) == 0:
        raise VolumeError("no instances: a volume needs at least one slice")
    for ds in datasets:
        reject_multi_frame(ds)
    series_uid = _single_value(datasets, "SeriesInstanceUID", "mixed series")
    study_uid = _single_value(datasets, "StudyInstanceUID", "mixed studies")
    sop_uids = [_required_uid(ds, "SOPInstanceUID") for ds in datasets]
    if len(set(sop_uids)) != len(sop_uids):
        twice = sorted({uid for uid in sop_uids if sop_uids.count(uid) > 1})
        raise VolumeError(f"the same instance appears more than once: SOP Instance UID {twice}")

    reference = datasets[0]
    ref_iop = _orientation(reference)
    _check_same_frame(datasets, reference, ref_iop)
    normal = slice_normal(ref_iop)
    positions = np.stack([_floats(ds, "ImagePositionPatient", 3) for ds in datasets])
    offsets = positions @ normal
    order = np.argsort(offsets, kind="stable")
    positions, offsets = positions[order], offsets[order]
    sorted_uids = tuple(sop_uids[i] for i in order)

    gaps = np.diff(offsets)
    close = np.flatnonzero(gaps < DUPLICATE_POSITION_TOLERANCE_MM)
    if close.size:
        pairs = "; ".join(
            f"{positions[i].tolist()} ({sorted_uids[i]}) and {positions[i + 1].tolist()} "
            f"({sorted_uids[i + 1]})"
            for i in close[:3]
        )
        raise VolumeError(
            f"{close.size} pair(s) of slices at the same position along the normal: {pairs}"
        )

    spacing = _floats(reference, "PixelSpacing", 2)
    tolerance = COLLINEARITY_TOLERANCE_PIXELS * float(spacing.min())
    shear = _shear(positions, offsets, normal, tolerance)
    extents = _extents(offsets, reference)
    frame = reference.get("FrameOfReferenceUID")
    return SliceGeometry(
        order=tuple(int(i) for i in order),
        positions=positions,
        orientation=tuple(float(v) for v in ref_iop),
        normal=normal,
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        rows=int(reference.Rows),
        columns=int(reference.Columns),
        offsets_mm=offsets,
        slice_extent_mm=extents,
        shear_deg=shear,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        frame_of_reference_uid=str(frame) if frame else None,
        sop_instance_uids=sorted_uids,
    )


def _check_instance(ds: Dataset) -> None:
    """Per-instance header checks that come before any geometry: what the data *is*."""
    reject_multi_frame(ds)
    modality = str(ds.get("Modality", "") or "")
    if modality != CT_MODALITY:
        raise VolumeError(
            f"instance {_sop_uid(ds)}: Modality {modality!r} is not CT, so its pixel values are "
            "not Hounsfield units"
        )
    problem = grey_scale_problem(ds)
    if problem is not None:
        raise VolumeError(f"instance {_sop_uid(ds)}: {problem}")


def build_volume(datasets: Sequence[Dataset]) -> Volume:
    """Build the Hounsfield-unit volume of one CT series, sorted along the slice normal.

    The float32 volume is allocated once and each slice is decoded straight into it, so the peak
    memory is the volume plus one decoded slice (300 slices of 512x512: about 300 MB + 0.5 MB).

    Parameters
    ----------
    datasets:
        The instances of one single-frame CT series (CT Image Storage), in any order, with pixel
        data. They are kept, unmodified, in :attr:`Volume.datasets` (volume order).

    Returns
    -------
    Volume
        Slices sorted along the normal, in HU, with their extents and the mapping to the sources.

    Raises
    ------
    VolumeError
        For multi-frame (Enhanced) CT, data that is not grey-scale CT, any geometry problem listed
        in :func:`slice_geometry`, or pixel data that cannot be decoded or rescaled to HU (the
        message names the SOP Instance UID).
    """
    for ds in datasets:
        _check_instance(ds)
    geometry = slice_geometry(datasets)
    ordered = tuple(datasets[i] for i in geometry.order)
    hu = np.empty((len(ordered), geometry.rows, geometry.columns), dtype=np.float32)
    for index, ds in enumerate(ordered):
        try:
            decode_hu(ds, out=hu[index])
        except PixelDataError as exc:
            raise VolumeError(f"instance {_sop_uid(ds)}: {exc}") from exc
    logger.info(
        "built volume of series %s: %d slices %dx%d, spacing %.3fx%.3f mm, extent %.2f-%.2f mm, "
        "shear %.1f deg",
        geometry.series_instance_uid,
        len(ordered),
        geometry.rows,
        geometry.columns,
        *geometry.pixel_spacing,
        float(geometry.slice_extent_mm.min()),
        float(geometry.slice_extent_mm.max()),
        geometry.shear_deg,
    )
    return Volume(
        hu=hu,
        sop_instance_uids=geometry.sop_instance_uids,
        positions=geometry.positions,
        orientation=geometry.orientation,
        normal=geometry.normal,
        pixel_spacing=geometry.pixel_spacing,
        slice_extent_mm=geometry.slice_extent_mm,
        study_instance_uid=geometry.study_instance_uid,
        series_instance_uid=geometry.series_instance_uid,
        frame_of_reference_uid=geometry.frame_of_reference_uid,
        datasets=ordered,
    )
