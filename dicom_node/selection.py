"""Series selection: is a received series an axial head CT that ICHNet may infer on?

Every series a peer sends is stored; only series that pass these rules are inferred on. The rules
(``selection`` in conf/node.yaml, :class:`~dicom_node.config.SelectionSection`) are checked in a
fixed order and the first one that fails gives the one reason recorded on the job and logged:

1. not excluded by an admin rule (``selection.exclude``)
2. SOP class is CT Image Storage (Enhanced CT, Secondary Capture, ... are stored, never inferred on)
3. Modality is one of ``modalities``
4. not a localizer (ImageType LOCALIZER, a scout/topogram/surview description): projection
   images are never analysed, and their pixels are never read
5. grey-scale pixels (one sample, MONOCHROME1/2): screen captures carry no Hounsfield units
6. head, from the headers when they decide (:func:`~dicom_node.header_evidence.head_evidence`:
   a head word -> head; only another region named -> skipped), or forced by ``selection.include``
7. axial-ish: slice normal within ``max_axial_deviation_deg`` of the patient's foot-head axis
8. ``min_slices`` <= number of slices <= ``max_slices``
9. SliceThickness <= ``max_slice_thickness_mm``
10. consistent geometry (one series, same orientation/size/spacing, slices on one line, no
    duplicates) and no gap between neighbouring slices above ``max_slice_thickness_mm``
11. head, from the image when the headers did not decide
    (:mod:`ichnet_core.imaging.head_check` on at most five slices from the middle of the series)

Rules 1-10 read headers only, so the datasets may come from ``dcmread(..., stop_before_pixels=True)``
of files on disk: rule 11, and the noise measurement of a kernel whose name is not known, read the
pixels of the few sampled slices from the datasets' files, after every header limit was checked.
An accepted series carries a :class:`SeriesProfile`, from which the study-level choice
(:mod:`dicom_node.study_selection`) ranks the series of one study.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
)

from dicom_node.config import SelectionOverride, SelectionSection
from dicom_node.header_evidence import (
    HeadVerdict,
    KernelClass,
    KernelEvidence,
    classify_kernel,
    distinct_values,
    head_evidence,
    localizer_evidence,
)
from ichnet_core.imaging.head_check import HeadCheck, check_head, sample_indices
from ichnet_core.imaging.pixels import PixelDataError, decode_hu, grey_scale_problem
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

#: The patient's foot-head axis in the patient coordinate system (PS3.3 C.7.6.2.1.1).
PATIENT_Z_AXIS: Final[np.ndarray] = np.array([0.0, 0.0, 1.0])

#: Pixel noise inside the skull (HU, scaled to a 5 mm slice) above which a kernel whose name is
#: not known counts as sharp: soft-tissue kernels measure 2-8 HU, bone kernels several times more.
SHARP_NOISE_HU: Final[float] = 15.0
#: Slice thickness the noise is scaled to (quantum noise falls with the square root of it).
NOISE_REFERENCE_MM: Final[float] = 5.0

#: Override attributes (``selection.include`` / ``exclude``) -> DICOM keywords.
OVERRIDE_KEYWORDS: Final[dict[str, str]] = {
    "series_description": "SeriesDescription",
    "study_description": "StudyDescription",
    "protocol_name": "ProtocolName",
    "body_part_examined": "BodyPartExamined",
    "convolution_kernel": "ConvolutionKernel",
    "image_type": "ImageType",
    "manufacturer": "Manufacturer",
    "manufacturer_model_name": "ManufacturerModelName",
    "station_name": "StationName",
    "institution_name": "InstitutionName",
}


@dataclass(frozen=True)
class SeriesProfile:
    """What the study-level choice compares between the accepted series of one study."""

    kernel: KernelClass
    #: How the kernel was classified ("soft-tissue kernel 'H30s'", "kernel 'XR7' not known;
    #: image noise 4.1 HU (5 mm equivalent): soft-tissue").
    kernel_evidence: str
    thickness_mm: float
    #: Length along the slice normal the slices cover (sum of their extents).
    coverage_mm: float
    #: ImageType ORIGINAL (an acquired reconstruction, not a DERIVED reformat).
    original: bool
    axial_deviation_deg: float
    slice_count: int

    def summary(self) -> str:
        """``"soft-tissue kernel, 5.0 mm"``: why this series was chosen, in the job's reason."""
        thickness = f"{self.thickness_mm:.3f}".rstrip("0")
        return f"{self.kernel.value} kernel, {thickness}{'0' if thickness.endswith('.') else ''} mm"


@dataclass(frozen=True)
class SelectionResult:
    """Whether a series is inferred on, the one-line reason (for logs and the job record), and
    for an accepted series its profile."""

    accepted: bool
    reason: str
    profile: SeriesProfile | None = None


def is_inferable_sop_class(sop_class_uid: str) -> bool:
    """Whether instances of this SOP class are inferred on (only CT Image Storage is)."""
    return str(sop_class_uid).strip() in INFERABLE_SOP_CLASSES


def _skip(reason: str) -> SelectionResult:
    return SelectionResult(accepted=False, reason=f"skipped: {reason}")


def _override_match(
    datasets: Sequence[Dataset],
    rules: Sequence[SelectionOverride],
    calling_ae: str,
    key: str,
) -> str | None:
    """``"selection.exclude[0] (convolution_kernel 'BONE' matches '(?i)bone')"`` for the first
    rule every attribute of which matches, or ``None``."""
    for index, rule in enumerate(rules):
        shown: list[str] = []
        for name, pattern in rule.patterns().items():
            values = (
                [calling_ae.strip()]
                if name == "calling_ae"
                else distinct_values(datasets, OVERRIDE_KEYWORDS[name]) or [""]
            )
            value = next((v for v in values if pattern.search(v)), None)
            if value is None:
                break
            shown.append(f"{name} {value!r} matches {pattern.pattern!r}")
        else:
            return f"selection.{key}[{index}] ({'; '.join(shown)})"
    return None


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
    found = distinct_values(datasets, "Modality")
    allowed = {m.upper() for m in rules.modalities}
    if not found or any(m.upper() not in allowed for m in found):
        shown = ", ".join(repr(m) for m in found) or "none"
        return f"Modality {shown} is not one of {', '.join(rules.modalities)}"
    return None


def _localizer_reason(datasets: Sequence[Dataset]) -> str | None:
    found = localizer_evidence(datasets)
    return f"{found}: projection images are never analysed" if found else None


def _grey_scale_reason(datasets: Sequence[Dataset]) -> str | None:
    for ds in datasets:
        problem = grey_scale_problem(ds)
        if problem:
            return problem
    return None


def _axial_deviation(datasets: Sequence[Dataset], rules: SelectionSection) -> float | str:
    """The largest angle (degrees) between a slice normal and the foot-head axis, or the reason
    the series is not axial."""
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
    return worst_angle


def _count_reason(datasets: Sequence[Dataset], rules: SelectionSection) -> str | None:
    count = len(datasets)
    if count < rules.min_slices:
        return f"{count} slice(s), fewer than selection.min_slices {rules.min_slices}"
    if count > rules.max_slices:
        return f"{count} slices, more than selection.max_slices {rules.max_slices}"
    return None


def _thicknesses(datasets: Sequence[Dataset]) -> list[float] | str:
    """SliceThickness of every instance that states one, or the reason one is not a number."""
    found: list[float] = []
    for ds in datasets:
        value = ds.get("SliceThickness")
        if value is None or value == "":
            continue  # Type 2: the spacing check in the geometry step covers it
        try:
            found.append(float(value))
        except (TypeError, ValueError):
            return f"instance {ds.get('SOPInstanceUID', '?')}: SliceThickness {value!r} is not a number"
    return found


def _thickness_reason(thicknesses: list[float], rules: SelectionSection) -> str | None:
    if thicknesses and max(thicknesses) > rules.max_slice_thickness_mm:
        return (
            f"SliceThickness {max(thicknesses):g} mm is above selection.max_slice_thickness_mm "
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


def _with_pixels(ds: Dataset) -> Dataset:
    """``ds`` itself when it holds Pixel Data, else the full dataset read from its file."""
    if "PixelData" in ds:
        return ds
    filename = getattr(ds, "filename", None)
    if not isinstance(filename, str) or not filename:
        raise PixelDataError("no Pixel Data and no file to read it from")
    try:
        return pydicom.dcmread(filename)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise PixelDataError(f"{filename}: not readable as DICOM ({exc})") from exc


class SampledSlices:
    """The few slices from the middle of the series that the image checks look at; their pixels
    are read once, on first use, one file at a time."""

    def __init__(self, datasets: Sequence[Dataset], geometry: SliceGeometry) -> None:
        self._datasets = [datasets[i] for i in geometry.order]
        self._indices = sample_indices(geometry.offsets_mm)
        self._pixel_spacing = geometry.pixel_spacing
        self._check: HeadCheck | None = None

    def head_check(self) -> HeadCheck:
        """Raises :class:`PixelDataError` naming the slice that cannot be read."""
        if self._check is None:
            slices = []
            for index in self._indices:
                ds = self._datasets[index]
                try:
                    slices.append(decode_hu(_with_pixels(ds)))
                except PixelDataError as exc:
                    raise PixelDataError(
                        f"instance {ds.get('SOPInstanceUID', '?')}: {exc}"
                    ) from exc
            self._check = check_head(slices, self._pixel_spacing)
        return self._check


def _kernel(
    datasets: Sequence[Dataset], samples: SampledSlices, thickness_mm: float
) -> KernelEvidence:
    """The kernel class from its name, else from the noise the sampled slices show."""
    named = classify_kernel("; ".join(distinct_values(datasets, "ConvolutionKernel")))
    if named.kernel_class is not KernelClass.UNKNOWN:
        return named
    try:
        noise = samples.head_check().noise_hu
    except PixelDataError as exc:
        return KernelEvidence(KernelClass.UNKNOWN, f"{named.evidence}; no image noise ({exc})")
    if noise is None:
        return KernelEvidence(KernelClass.UNKNOWN, f"{named.evidence}; no brain to measure noise")
    scaled = noise * math.sqrt(thickness_mm / NOISE_REFERENCE_MM)
    kind = KernelClass.SHARP if scaled >= SHARP_NOISE_HU else KernelClass.SOFT
    return KernelEvidence(
        kind,
        f"{named.evidence}; image noise {scaled:.1f} HU ({NOISE_REFERENCE_MM:g} mm equivalent): "
        f"{kind.value}",
    )


def _decide(
    datasets: Sequence[Dataset], rules: SelectionSection, calling_ae: str
) -> SelectionResult:
    if len(datasets) == 0:
        return _skip("the series has no instances")
    excluded = _override_match(datasets, rules.exclude, calling_ae, "exclude")
    if excluded:
        return _skip(f"excluded by {excluded}")
    reason = (
        _sop_class_reason(datasets)
        or _modality_reason(datasets, rules)
        or _localizer_reason(datasets)
        or _grey_scale_reason(datasets)
    )
    if reason:
        return _skip(reason)
    included = _override_match(datasets, rules.include, calling_ae, "include")
    header = head_evidence(datasets, rules.head_keywords, rules.non_head_keywords)
    if not included and header.verdict is HeadVerdict.OTHER_REGION:
        return _skip(header.evidence)
    undecided = not included and header.verdict is HeadVerdict.UNDECIDED
    if undecided and not rules.allow_unlabelled_body_part:
        return _skip(f"{header.evidence}, and selection.allow_unlabelled_body_part is false")
    angle = _axial_deviation(datasets, rules)
    if isinstance(angle, str):
        return _skip(angle)
    thicknesses = _thicknesses(datasets)
    if isinstance(thicknesses, str):
        return _skip(thicknesses)
    reason = _count_reason(datasets, rules) or _thickness_reason(thicknesses, rules)
    if reason:
        return _skip(reason)
    try:
        geometry = slice_geometry(datasets)
    except VolumeError as exc:
        return _skip(f"inconsistent geometry: {exc}")
    reason = _spacing_reason(geometry, rules)
    if reason:
        return _skip(reason)

    samples = SampledSlices(datasets, geometry)
    if included:
        head = f"head per {included}"
    elif header.verdict is HeadVerdict.HEAD:
        head = header.evidence
    else:
        try:
            check = samples.head_check()
        except PixelDataError as exc:
            return _skip(f"{header.evidence}; image check: cannot read a sampled slice: {exc}")
        if not check.is_head:
            return _skip(f"{header.evidence}; image check: {check.describe()}")
        head = f"{header.evidence}; image check: {check.describe()}"

    extents = geometry.slice_extent_mm
    thickness = float(np.median(thicknesses)) if thicknesses else float(np.median(extents))
    kernel = _kernel(datasets, samples, thickness)
    image_type = [str(v).upper() for v in (datasets[0].get("ImageType") or [])]
    profile = SeriesProfile(
        kernel=kernel.kernel_class,
        kernel_evidence=kernel.evidence,
        thickness_mm=thickness,
        coverage_mm=float(extents.sum()),
        original=bool(image_type) and image_type[0] == "ORIGINAL",
        axial_deviation_deg=angle,
        slice_count=len(datasets),
    )
    return SelectionResult(
        accepted=True,
        reason=(
            f"accepted: {head}; {len(datasets)} axial CT slices of {thickness:g} mm, "
            f"slice extent {float(extents.min()):.2f}-{float(extents.max()):.2f} mm, "
            f"tilt {geometry.shear_deg:.1f} degrees; {kernel.evidence}"
        ),
        profile=profile,
    )


def select_series(
    datasets: Sequence[Dataset], rules: SelectionSection, *, calling_ae: str = ""
) -> SelectionResult:
    """Decide whether ICHNet infers on a series, and log the decision with its evidence.

    Parameters
    ----------
    datasets:
        The instances of one series. Headers suffice (``stop_before_pixels=True``) when each
        dataset was read from a file: the image check then reads the sampled slices' files.
    rules:
        The ``selection`` section of the node configuration.
    calling_ae:
        Calling AE title of the association that sent the series (``selection.include`` /
        ``exclude`` rules may name it); empty for files read from a folder.

    Returns
    -------
    SelectionResult
        ``accepted`` and a one-line human-readable reason: the first rule that failed (see the
        module docstring for the order), or the evidence for the accepted series.
    """
    try:
        result = _decide(datasets, rules, calling_ae)
    except NotImplementedError as exc:
        # pydicom decodes an element on first access and raises this for a VR it does not know
        # (a damaged stored instance, e.g. SeriesDescription with VR bytes 'I '). Raised out of
        # here it failed the job as a processing failure, and also every other series of the
        # study, whose study-level choice evaluates this one as a competitor.
        result = _skip(f"a header element cannot be decoded ({exc}); the series is not analysed")
    series_uid = datasets[0].get("SeriesInstanceUID", "<no UID>") if datasets else "<empty>"
    logger.info("series %s: %s", series_uid, result.reason)
    return result
