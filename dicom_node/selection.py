"""Series selection: is a received series an axial head CT that ICHNet may infer on?

Every series a peer sends is stored; only series that pass these rules are inferred on. The rules
(``selection`` in conf/node.yaml, :class:`~dicom_node.config.SelectionSection`) are checked in a
fixed order and the first one that fails gives the one reason recorded on the job and logged:

1. SOP class is CT Image Storage (Enhanced CT, Secondary Capture, ... are stored, never inferred on)
2. Modality is one of ``modalities``
3. grey-scale pixels (one sample, MONOCHROME1/2): screen captures carry no Hounsfield units
4. head: BodyPartExamined, else StudyDescription / SeriesDescription / ProtocolName, name a head
   (see :func:`_body_part_reason` for how labels that name no anatomy are treated)
5. axial-ish: slice normal within ``max_axial_deviation_deg`` of the patient's foot-head axis
6. ``min_slices`` <= number of slices <= ``max_slices``
7. SliceThickness <= ``max_slice_thickness_mm``
8. consistent geometry (one series, same orientation/size/spacing, slices on one line, no
   duplicates) and no gap between neighbouring slices above ``max_slice_thickness_mm``

Only headers are read, so the datasets may come from ``dcmread(..., stop_before_pixels=True)``.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from pydicom import Dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

from dicom_node.config import SelectionSection
from ichnet_core.imaging.pixels import grey_scale_problem
from ichnet_core.imaging.volume import (
    SliceGeometry,
    VolumeError,
    slice_geometry,
    slice_normal,
)

logger = logging.getLogger(__name__)

#: The one SOP class ICHNet infers on; everything else is stored only.
INFERABLE_SOP_CLASSES: Final[frozenset[str]] = frozenset({CTImageStorage})

#: Why some common non-inferable SOP classes are refused, for the reason line.
_SOP_CLASS_NOTES: Final[dict[str, str]] = {
    EnhancedCTImageStorage: "Enhanced CT multi-frame is not supported for inference yet",
    LegacyConvertedEnhancedCTImageStorage: "multi-frame CT is not supported for inference yet",
}

#: Series-level attributes that may name the anatomy, after the coded BodyPartExamined.
DESCRIPTION_KEYWORDS: Final[tuple[str, ...]] = (
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
)

#: The patient's foot-head axis in the patient coordinate system (PS3.3 C.7.6.2.1.1).
PATIENT_Z_AXIS: Final[np.ndarray] = np.array([0.0, 0.0, 1.0])


@dataclass(frozen=True)
class SelectionResult:
    """Whether a series is inferred on, and the one-line reason (for logs and the job record)."""

    accepted: bool
    reason: str


def is_inferable_sop_class(sop_class_uid: str) -> bool:
    """Whether instances of this SOP class are inferred on (only CT Image Storage is)."""
    return str(sop_class_uid).strip() in INFERABLE_SOP_CLASSES


def _skip(reason: str) -> SelectionResult:
    return SelectionResult(accepted=False, reason=f"skipped: {reason}")


def _normalise(text: str) -> str:
    """Upper case without accents, so "Schädel" matches the keyword SCHADEL."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def _distinct_values(datasets: Sequence[Dataset], keyword: str) -> list[str]:
    """Non-empty values of a text attribute across the series, in order of first appearance."""
    values: list[str] = []
    for ds in datasets:
        value = str(ds.get(keyword, "") or "").strip()
        if value and value not in values:
            values.append(value)
    return values


def _sop_class_reason(datasets: Sequence[Dataset]) -> str | None:
    for ds in datasets:
        sop_class = str(ds.get("SOPClassUID", "") or "").strip()
        if not sop_class:
            return f"instance {ds.get('SOPInstanceUID', '?')} has no SOP Class UID"
        if is_inferable_sop_class(sop_class):
            continue
        reason = (
            f"SOP Class {UID(sop_class).name} ({sop_class}) is stored but not inferred on "
            f"(only {CTImageStorage.name} is)"
        )
        note = _SOP_CLASS_NOTES.get(sop_class)
        if note:
            reason += f": {note}"
        # A colour screen capture labelled "CT BRAIN" is refused twice over; say both.
        grey = grey_scale_problem(ds)
        if grey:
            reason += f"; {grey}"
        return reason
    return None


def _modality_reason(datasets: Sequence[Dataset], rules: SelectionSection) -> str | None:
    found = _distinct_values(datasets, "Modality")
    allowed = {m.upper() for m in rules.modalities}
    if not found or any(m.upper() not in allowed for m in found):
        shown = ", ".join(repr(m) for m in found) or "none"
        return f"Modality {shown} is not one of {', '.join(rules.modalities)}"
    return None


def _grey_scale_reason(datasets: Sequence[Dataset]) -> str | None:
    for ds in datasets:
        problem = grey_scale_problem(ds)
        if problem:
            return problem
    return None


def _contains_head(values: Sequence[str], keywords: Sequence[str]) -> bool:
    """A head keyword anywhere in a value (lenient: "CTHEADWO" and "CEREBRAL" both count)."""
    return any(any(_normalise(k) in _normalise(v) for k in keywords) for v in values)


def _non_head_word(value: str, stems: Sequence[str]) -> str | None:
    """The first word of ``value`` that starts with one of ``stems`` (other body regions), if any.

    Words, not substrings, so that a stem never matches inside an unrelated word.
    """
    for word in re.findall(r"[A-Z]+", _normalise(value)):
        if word.startswith(tuple(stems)):
            return word
    return None


def _body_part_reason(datasets: Sequence[Dataset], rules: SelectionSection) -> str | None:
    """Decide "head or not" from the labels, most authoritative first.

    1. BodyPartExamined (coded, PS3.16 CID 4031) decides when present: the series says what it is,
       so a "HEAD" in the StudyDescription of a trauma study does not overrule "CHEST".
    2. Otherwise a head keyword in StudyDescription / SeriesDescription / ProtocolName accepts.
    3. Otherwise a description that names another body region ("6.9 Colonoscopy") skips.
    4. Otherwise the labels name no anatomy at all ("5/5mm Plain" is technique, not anatomy):
       the series is unlabelled and ``allow_unlabelled_body_part`` decides.
    """
    expected = f"expected one of {', '.join(rules.head_keywords)}"
    body_parts = _distinct_values(datasets, "BodyPartExamined")
    descriptions = {k: _distinct_values(datasets, k) for k in DESCRIPTION_KEYWORDS}
    if body_parts:
        if all(_contains_head([part], rules.head_keywords) for part in body_parts):
            return None
        shown = " / ".join(repr(part) for part in body_parts)
        return f"BodyPartExamined {shown} is not a head ({expected})"
    if any(_contains_head(values, rules.head_keywords) for values in descriptions.values()):
        return None
    for keyword, values in descriptions.items():
        for value in values:
            word = _non_head_word(value, rules.non_head_keywords)
            if word is not None:
                return (
                    f"no BodyPartExamined, and {keyword} {value!r} names {word}, not a head "
                    f"({expected})"
                )
    if rules.allow_unlabelled_body_part:
        return None
    found = "; ".join(
        f"{k} {' / '.join(repr(v) for v in vs)}" for k, vs in descriptions.items() if vs
    )
    return (
        "no body part named (BodyPartExamined empty"
        + (f"; {found} name no anatomy" if found else "; no descriptions")
        + ") and selection.allow_unlabelled_body_part is false"
    )


def _axial_reason(datasets: Sequence[Dataset], rules: SelectionSection) -> str | None:
    worst_angle, worst_ds = -1.0, datasets[0]
    for ds in datasets:
        iop = ds.get("ImageOrientationPatient")
        try:
            values = [float(v) for v in iop] if iop else []
        except (TypeError, ValueError):
            values = []
        if len(values) != 6 or not np.all(np.isfinite(values)):
            return (
                f"instance {ds.get('SOPInstanceUID', '?')}: ImageOrientationPatient {iop!r} "
                "missing or invalid, so the slice orientation is unknown"
            )
        normal = np.cross(values[:3], values[3:])
        if np.linalg.norm(normal) < 0.5:
            return (
                f"instance {ds.get('SOPInstanceUID', '?')}: ImageOrientationPatient {values} "
                "does not define an image plane"
            )
        cosine = abs(float(slice_normal(values) @ PATIENT_Z_AXIS))
        angle = math.degrees(math.acos(min(1.0, cosine)))
        if angle > worst_angle:
            worst_angle, worst_ds = angle, ds
    if worst_angle > rules.max_axial_deviation_deg:
        return (
            f"slice normal is {worst_angle:.1f} degrees from the patient's foot-head axis "
            f"(max {rules.max_axial_deviation_deg:g}): not an axial series "
            f"(ImageOrientationPatient {[float(v) for v in worst_ds.ImageOrientationPatient]})"
        )
    return None


def _count_reason(datasets: Sequence[Dataset], rules: SelectionSection) -> str | None:
    count = len(datasets)
    if count < rules.min_slices:
        return f"{count} slice(s), fewer than selection.min_slices {rules.min_slices}"
    if count > rules.max_slices:
        return f"{count} slices, more than selection.max_slices {rules.max_slices}"
    return None


def _thickness_reason(datasets: Sequence[Dataset], rules: SelectionSection) -> str | None:
    thickest: float | None = None
    for ds in datasets:
        value = ds.get("SliceThickness")
        if value is None or value == "":
            continue  # Type 2: the spacing check in the geometry step covers it
        try:
            thickness = float(value)
        except (TypeError, ValueError):
            return f"instance {ds.get('SOPInstanceUID', '?')}: SliceThickness {value!r} is not a number"
        thickest = thickness if thickest is None else max(thickest, thickness)
    if thickest is not None and thickest > rules.max_slice_thickness_mm:
        return (
            f"SliceThickness {thickest:g} mm is above selection.max_slice_thickness_mm "
            f"{rules.max_slice_thickness_mm:g}"
        )
    return None


def _spacing_reason(geometry: SliceGeometry, rules: SelectionSection) -> str | None:
    if len(geometry.offsets_mm) < 2:
        return None
    largest_gap = float(np.max(np.diff(geometry.offsets_mm)))
    if largest_gap > rules.max_slice_thickness_mm:
        return (
            f"{largest_gap:.2f} mm between neighbouring slices is above "
            f"selection.max_slice_thickness_mm {rules.max_slice_thickness_mm:g} (missing slices?)"
        )
    return None


def _accepted_reason(
    datasets: Sequence[Dataset], geometry: SliceGeometry, rules: SelectionSection
) -> str:
    evidence = "no body part named (selection.allow_unlabelled_body_part)"
    for keyword in ("BodyPartExamined", *DESCRIPTION_KEYWORDS):
        named = [
            v
            for v in _distinct_values(datasets, keyword)
            if _contains_head([v], rules.head_keywords)
        ]
        if named:
            evidence = f"head per {keyword} {named[0]!r}"
            break
    extents = geometry.slice_extent_mm
    return (
        f"accepted: {len(datasets)} axial CT slices, {evidence}, slice extent "
        f"{float(extents.min()):.2f}-{float(extents.max()):.2f} mm, "
        f"tilt {geometry.shear_deg:.1f} degrees"
    )


def _decide(datasets: Sequence[Dataset], rules: SelectionSection) -> SelectionResult:
    if len(datasets) == 0:
        return _skip("the series has no instances")
    reason = (
        _sop_class_reason(datasets)
        or _modality_reason(datasets, rules)
        or _grey_scale_reason(datasets)
        or _body_part_reason(datasets, rules)
        or _axial_reason(datasets, rules)
        or _count_reason(datasets, rules)
        or _thickness_reason(datasets, rules)
    )
    if reason:
        return _skip(reason)
    try:
        geometry = slice_geometry(datasets)
    except VolumeError as exc:
        return _skip(f"inconsistent geometry: {exc}")
    reason = _spacing_reason(geometry, rules)
    if reason:
        return _skip(reason)
    return SelectionResult(accepted=True, reason=_accepted_reason(datasets, geometry, rules))


def select_series(datasets: Sequence[Dataset], rules: SelectionSection) -> SelectionResult:
    """Decide from headers alone whether ICHNet infers on a series.

    Parameters
    ----------
    datasets:
        The instances of one series (pixel data not needed).
    rules:
        The ``selection`` section of the node configuration.

    Returns
    -------
    SelectionResult
        ``accepted`` and a one-line human-readable reason: the first rule that failed (see the
        module docstring for the order), or a summary of the accepted series.
    """
    result = _decide(datasets, rules)
    series_uid = datasets[0].get("SeriesInstanceUID", "<no UID>") if datasets else "<empty>"
    logger.info("series %s: %s", series_uid, result.reason)
    return result
