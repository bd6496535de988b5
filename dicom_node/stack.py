"""Is a received series one gap-free stack of slices? (headers only, for the settle rule)

DICOM has no "end of series" message, so the node normally waits ``series.complete_after_s``
of quiet. When the sending association was released and the slices it brought already form
one complete stack, waiting that long buys nothing: ``series.settle_after_release_s`` applies
instead (see :mod:`dicom_node.series_tracker`). "Complete" is decided from what the headers
show, and anything this module cannot vouch for (a missing position, uneven spacing that looks
like a skipped slice, an instance count the headers contradict, a header without geometry)
answers with a reason, so the series falls back to the quiet period: a wrong "complete" would
analyse half a head, a wrong "not yet" only costs the quiet period.

Even spacing along the slice normal, in runs: a stack may change its spacing in steps (GE's
posterior-fossa / cerebrum protocols: 4 mm, one overlapping step, then 7 mm), so each run of
two or more equal gaps is even on its own and a single odd gap is allowed only between two
runs. A gap that is a whole multiple (2x, 3x, ...) of the spacing next to it marks a missing
slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from pydicom.dataset import Dataset

from ichnet_core.imaging.volume import slice_normal

#: Fewest slices the rule vouches for: with fewer, even spacing proves nothing.
MIN_STACK_SLICES: Final[int] = 3
#: Two slices closer than this along the normal (mm) sit at the same position.
SAME_POSITION_MM: Final[float] = 0.01
#: Two spacings are equal within this fraction (DS rounding, tilted positions) ...
SPACING_TOLERANCE: Final[float] = 0.02
#: ... or within this many mm, whichever is larger.
SPACING_TOLERANCE_MM: Final[float] = 0.02
#: Largest difference between two slices' orientation cosines that still counts as parallel.
ORIENTATION_TOLERANCE: Final[float] = 1e-3


@dataclass(frozen=True)
class SliceHeader:
    """What the settle rule needs of one instance, read from its header at receive time.

    Attributes
    ----------
    position:
        ImagePositionPatient (mm).
    orientation:
        ImageOrientationPatient (row then column direction cosines).
    instance_number:
        InstanceNumber, when the header has one.
    acquisition_number, images_in_acquisition:
        AcquisitionNumber and ImagesInAcquisition (0020,1002), when present: a header that
        states how many images its acquisition has lets the rule check the count.
    """

    position: tuple[float, float, float]
    orientation: tuple[float, ...]
    instance_number: int | None = None
    acquisition_number: int | None = None
    images_in_acquisition: int | None = None


#: What reading a damaged element can raise: pydicom raises NotImplementedError for a VR it
#: does not know (a corrupted explicit-VR header, found by the fuzz test with seed 20261204).
_UNREADABLE = (TypeError, ValueError, NotImplementedError)


def _optional_int(dataset: Dataset, keyword: str) -> int | None:
    try:
        value = dataset.get(keyword)
        return None if value is None or value == "" else int(value)
    except _UNREADABLE:
        return None


def slice_header(dataset: Dataset) -> SliceHeader | None:
    """The geometry of a single-frame image header; ``None`` when it has none usable.

    Never raises: a header without geometry is not an error of the C-STORE, it only means the
    series completes by the quiet period.
    """
    try:
        position = tuple(float(v) for v in dataset.get("ImagePositionPatient") or ())
        orientation = tuple(float(v) for v in dataset.get("ImageOrientationPatient") or ())
    except _UNREADABLE:
        return None
    if (
        len(position) != 3
        or len(orientation) != 6
        or not np.all(np.isfinite(position + orientation))
    ):
        return None
    if float(np.linalg.norm(np.cross(orientation[:3], orientation[3:]))) < 0.5:
        return None
    return SliceHeader(
        position=(position[0], position[1], position[2]),
        orientation=orientation,
        instance_number=_optional_int(dataset, "InstanceNumber"),
        acquisition_number=_optional_int(dataset, "AcquisitionNumber"),
        images_in_acquisition=_optional_int(dataset, "ImagesInAcquisition"),
    )


def _same_spacing(a: float, b: float) -> bool:
    return abs(a - b) <= max(SPACING_TOLERANCE * max(a, b), SPACING_TOLERANCE_MM)


def _missing_position(gaps: np.ndarray) -> int | None:
    """Index of the first gap that is a whole multiple (>= 2) of a neighbouring gap, if any."""
    for index, gap in enumerate(gaps):
        for neighbour in (index - 1, index + 1):
            if not 0 <= neighbour < len(gaps):
                continue
            spacing = float(gaps[neighbour])
            ratio = round(float(gap) / spacing)
            if ratio >= 2 and _same_spacing(float(gap), ratio * spacing):
                return index
    return None


def _runs(gaps: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive gaps of one spacing, as ``(first index, length)``."""
    runs: list[tuple[int, int]] = []
    start = 0
    for index in range(1, len(gaps) + 1):
        if index == len(gaps) or not _same_spacing(float(gaps[index]), float(gaps[start])):
            runs.append((start, index - start))
            start = index
    return runs


def _uneven_spacing(gaps: np.ndarray) -> int | None:
    """Index of the first gap that belongs to no evenly spaced run; ``None`` when all do.

    A run is two or more equal gaps; a single gap is allowed only as the step between two runs
    (the overlap or space where a protocol changes its spacing).
    """
    runs = _runs(gaps)
    for position, (start, length) in enumerate(runs):
        if length >= 2 or len(runs) == 1:
            continue
        inner = 0 < position < len(runs) - 1
        if not (inner and runs[position - 1][1] >= 2 and runs[position + 1][1] >= 2):
            return start
    return None


def _count_problem(headers: Sequence[SliceHeader]) -> str | None:
    numbers = [h.instance_number for h in headers]
    if all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        known = [n for n in numbers if n is not None]
        if max(known) - min(known) + 1 != len(known):
            return (
                f"InstanceNumbers {min(known)}..{max(known)} but {len(known)} instances: "
                "some are missing"
            )
    by_acquisition: dict[int | None, list[SliceHeader]] = {}
    for header in headers:
        by_acquisition.setdefault(header.acquisition_number, []).append(header)
    for acquisition, members in by_acquisition.items():
        stated = {h.images_in_acquisition for h in members}
        if len(stated) == 1 and (expected := stated.pop()) is not None and expected != len(members):
            return (
                f"ImagesInAcquisition says {expected} for acquisition {acquisition}, "
                f"{len(members)} received"
            )
    return None


def stack_problem(headers: Sequence[SliceHeader | None]) -> str | None:
    """Why these slices are not (yet) one gap-free stack; ``None`` when they are.

    Parameters
    ----------
    headers:
        One entry per received instance; ``None`` for an instance without usable geometry.

    Returns
    -------
    str | None
        A reason for the log (the series then completes by the quiet period), or ``None``.
    """
    if len(headers) < MIN_STACK_SLICES:
        return f"{len(headers)} slice(s), fewer than {MIN_STACK_SLICES}"
    known = [h for h in headers if h is not None]
    if len(known) != len(headers):
        return f"{len(headers) - len(known)} instance(s) without position/orientation"
    reference = np.asarray(known[0].orientation)
    if any(
        np.max(np.abs(np.asarray(h.orientation) - reference)) > ORIENTATION_TOLERANCE for h in known
    ):
        return "slices with different orientations"
    offsets = np.sort(np.asarray([h.position for h in known]) @ slice_normal(known[0].orientation))
    gaps = np.diff(offsets)
    if np.any(gaps < SAME_POSITION_MM):
        return "two slices at the same position"
    missing = _missing_position(gaps)
    if missing is not None:
        return (
            f"gap of {gaps[missing]:.2f} mm after position {offsets[missing]:.2f} mm is a "
            "multiple of the spacing next to it: a slice is missing"
        )
    uneven = _uneven_spacing(gaps)
    if uneven is not None:
        return f"gap of {gaps[uneven]:.2f} mm after position {offsets[uneven]:.2f} mm is uneven"
    return _count_problem(known)
