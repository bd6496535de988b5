"""The DICOM Segmentation (SEG) writer: hemorrhage and brain masks as a BINARY SEG (highdicom).

Why BINARY: OHIF 3.x, the most used open-source web viewer, does not load FRACTIONAL SEGs and
misdraws LABELMAP ones; a BINARY SEG with one frame per (slice, segment) is what every viewer and
PACS handles. Each segment carries a Recommended Display CIELab Value, since OHIF warns over the
image when a segment has none.

Segments (the layout, :func:`segment_layout`):

- weights with compartments and a bleed: one segment per compartment present (CPH, IVH, EDH,
  SDH, SAH in that order, numbered from 1), then brain. Every hemorrhage pixel carries exactly one
  compartment, so the segments never overlap (OHIF cannot show overlapping segments);
- otherwise (weights without compartments, or no hemorrhage pixel at all): segment 1
  "Intracranial hemorrhage", segment 2 brain, as before compartments existed.

Readers find a segment by its Segmented Property Type, not by its number
(:func:`hemorrhage_segments`).

Geometry: the frames are the source slices. highdicom takes each frame's Plane Position from its
source image and records the source SOP Instance in the frame's Derivation Image Sequence, so the
mask sits exactly on the slice it was predicted for, gantry tilt and uneven spacing included.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

import highdicom as hd
import numpy as np
from pydicom import Dataset

from dicom_node.results import codes
from dicom_node.results.checks import check_prediction
from dicom_node.results.device import ModelIdentity, equipment, segmentation_algorithm
from dicom_node.results.sanitize import prepare_source_headers
from dicom_node.results.uids import segment_tracking_uid
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import BRAIN, HEMORRHAGE, SUBTYPES
from ichnet_core.prediction import Prediction

logger = logging.getLogger(__name__)

#: Segment numbers of the layout without compartment segments (PS3.3 C.8.20.2: BINARY segments
#: are numbered from 1). With compartment segments, brain follows the last compartment.
HEMORRHAGE_SEGMENT_NUMBER: Final[int] = 1
BRAIN_SEGMENT_NUMBER: Final[int] = 2

#: Display colours as sRGB; stored as CIELab (Recommended Display CIELab Value).
HEMORRHAGE_RGB: Final[tuple[int, int, int]] = (230, 30, 30)
BRAIN_RGB: Final[tuple[int, int, int]] = (80, 150, 255)
#: One colour per compartment, distinct from each other and from brain.
COMPARTMENT_RGB: Final[dict[str, tuple[int, int, int]]] = {
    "CPH": (230, 30, 30),  # red
    "IVH": (255, 140, 0),  # orange
    "EDH": (255, 230, 0),  # yellow
    "SDH": (40, 200, 80),  # green
    "SAH": (200, 60, 220),  # magenta
}
#: Segment Label (LO) of each compartment.
COMPARTMENT_LABELS: Final[dict[str, str]] = {
    "CPH": "Intraparenchymal hemorrhage",
    "IVH": "Intraventricular hemorrhage",
    "EDH": "Epidural hemorrhage",
    "SDH": "Subdural hemorrhage",
    "SAH": "Subarachnoid hemorrhage",
}
assert tuple(COMPARTMENT_RGB) == tuple(COMPARTMENT_LABELS) == SUBTYPES

#: Key of the whole-hemorrhage segment and of the brain segment in :class:`SegmentSpec`.
HEMORRHAGE_KEY: Final[str] = "hemorrhage"
BRAIN_KEY: Final[str] = "brain"

#: Content Label (CS, at most 16 upper-case characters).
CONTENT_LABEL: Final[str] = "ICHNET"
SERIES_DESCRIPTION: Final[str] = "ICHNet hemorrhage segmentation (research)"


@dataclass(frozen=True)
class SegmentSpec:
    """One segment of the SEG: what it is, how it looks, and which pixels it holds.

    Attributes
    ----------
    key:
        ``hemorrhage``, a ``SUBTYPES`` name (a compartment) or ``brain``.
    number:
        Segment Number in this SEG.
    """

    key: str
    number: int
    label: str
    category: hd.sr.CodedConcept
    property_type: hd.sr.CodedConcept
    rgb: tuple[int, int, int]
    mask: Callable[[Prediction], np.ndarray]

    @property
    def is_hemorrhage(self) -> bool:
        """Whole hemorrhage or one compartment of it (what the SR measures)."""
        return self.key != BRAIN_KEY


def _compartment_mask(name: str) -> Callable[[Prediction], np.ndarray]:
    value = 1 + SUBTYPES.index(name)

    def mask(prediction: Prediction) -> np.ndarray:
        assert prediction.compartments is not None
        return prediction.compartments == value

    return mask


_HEMORRHAGE: Final = SegmentSpec(
    key=HEMORRHAGE_KEY,
    number=HEMORRHAGE_SEGMENT_NUMBER,
    label="Intracranial hemorrhage",
    category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
    property_type=codes.HEMORRHAGE,
    rgb=HEMORRHAGE_RGB,
    mask=lambda prediction: prediction.labels == HEMORRHAGE,
)
_BRAIN: Final = SegmentSpec(
    key=BRAIN_KEY,
    number=BRAIN_SEGMENT_NUMBER,
    label="Brain",
    category=codes.ANATOMICAL_STRUCTURE,
    property_type=codes.BRAIN,
    rgb=BRAIN_RGB,
    mask=lambda prediction: prediction.labels == BRAIN,
)
_COMPARTMENTS: Final[dict[str, SegmentSpec]] = {
    name: SegmentSpec(
        key=name,
        number=0,  # numbered by segment_layout
        label=COMPARTMENT_LABELS[name],
        category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        property_type=codes.SUBTYPE_FINDINGS[name],
        rgb=COMPARTMENT_RGB[name],
        mask=_compartment_mask(name),
    )
    for name in SUBTYPES
}


def _present_values(volume: np.ndarray) -> set[int]:
    """The values occurring in a uint8 ``volume``, counted a slice at a time.

    ``np.unique`` would sort a copy of the whole volume; per-slice counts stay a few MB.
    """
    counts = np.zeros(256, dtype=np.int64)
    for plane in volume:
        counts += np.bincount(plane.ravel(), minlength=256)
    return set(np.flatnonzero(counts).tolist())


def segment_layout(prediction: Prediction) -> tuple[SegmentSpec, ...]:
    """The segments of the SEG of ``prediction``, in segment-number order.

    One segment per compartment that holds a voxel, then brain, when the prediction has
    compartments and a bleed; otherwise whole hemorrhage (1) and brain (2).
    """
    if prediction.compartments is None:
        return (_HEMORRHAGE, _BRAIN)
    present = _present_values(prediction.compartments)
    names = [name for name in SUBTYPES if 1 + SUBTYPES.index(name) in present]
    if not names:
        return (_HEMORRHAGE, _BRAIN)
    specs = [replace(_COMPARTMENTS[name], number=i) for i, name in enumerate(names, start=1)]
    return (*specs, replace(_BRAIN, number=len(specs) + 1))


def content_description(model: ModelIdentity) -> str:
    """Content Description (LO) that says what the object is and how far to trust it."""
    return f"ICHNet research output; {model.training_data_note}"


def segment_label_map(
    prediction: Prediction, layout: tuple[SegmentSpec, ...] | None = None
) -> np.ndarray:
    """``(S, rows, columns)`` uint8: each voxel's segment number (:func:`segment_layout`), 0 none.

    The segments never overlap, so one label map holds them all. It is what highdicom is given:
    a 4D stack of boolean masks makes highdicom sum it over the segment axis into an int64
    volume to test for overlap (about 600 MB for 300 slices of 512x512), a label map needs only
    its maximum; the SEG it writes is the same.
    """
    layout = segment_layout(prediction) if layout is None else layout
    label_map = np.zeros(prediction.labels.shape, dtype=np.uint8)
    for spec in layout:
        label_map[spec.mask(prediction)] = spec.number
    return label_map


def segment_masks(prediction: Prediction) -> np.ndarray:
    """``(S, rows, columns, n)`` bool masks in segment-number order (:func:`segment_layout`)."""
    layout = segment_layout(prediction)
    label_map = segment_label_map(prediction, layout)
    return np.stack([label_map == spec.number for spec in layout], axis=-1)


def hemorrhage_segments(seg: Dataset) -> dict[str, int]:
    """Segment number of each hemorrhage segment of a SEG written here, keyed like SegmentSpec.

    ``{"hemorrhage": 1}`` for the whole-hemorrhage layout, ``{"EDH": 1, "SDH": 2}`` for
    compartment segments. Segments are recognised by their Segmented Property Type code.
    """
    by_code = {
        (spec.property_type.value, spec.property_type.scheme_designator): spec.key
        for spec in (_HEMORRHAGE, *_COMPARTMENTS.values())
    }
    found: dict[str, int] = {}
    for item in seg.get("SegmentSequence", []):
        code = item.SegmentedPropertyTypeCodeSequence[0]
        key = by_code.get((code.CodeValue, code.CodingSchemeDesignator))
        if key is not None:
            found[key] = int(item.SegmentNumber)
    return found


def build_seg(
    volume: Volume,
    prediction: Prediction,
    model: ModelIdentity,
    *,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    content_datetime: datetime.datetime | None = None,
) -> hd.seg.Segmentation:
    """Build the BINARY SEG of one series (segments: :func:`segment_layout`).

    Frames of slices where a segment is empty are left out (a SEG may omit them and the object
    stays small), with one exception. When a segment is empty on every slice, typically the
    hemorrhage segment of a negative scan, all frames are encoded, empty ones included. The
    segment must still be described, because the SR's volume measurement references it, and
    the standard and dciodvfy accept a described segment without frames; but viewers have
    failed on exactly that case (OHIF 3.8 hung at 100 % on a SEG with a frameless segment,
    OHIF/Viewers#3991), and highdicom can only omit all empty frames or none. Encoding the empty
    frames costs 32 KiB per 512x512 slice and loads everywhere; a viewer then shows an empty
    hemorrhage segment, which is the truth.

    Parameters
    ----------
    volume:
        The analysed series; ``volume.datasets`` are the source images in volume order.
    prediction:
        Model output for ``volume``; ``labels`` 0 non-brain, 1 brain, 2 hemorrhage, and
        ``compartments`` for weights that have them.
    model:
        Identification of the model (Segmentation Algorithm Identification, equipment).
    series_instance_uid, sop_instance_uid:
        UIDs of the new SEG series and instance (see ``ResultUids.derive``).
    series_number, instance_number:
        Series and instance numbers of the new object (positive integers).
    content_datetime:
        Content Date/Time; defaults to now. Pass one value to the SEG and the SR of one job.

    Returns
    -------
    highdicom.seg.Segmentation
        The SEG, in the source study, with the source's Patient and Study modules.

    Raises
    ------
    ValueError
        When the prediction does not match the volume, or highdicom rejects an argument.
    """
    check_prediction(volume, prediction)
    sources = prepare_source_headers(volume.datasets)
    layout = segment_layout(prediction)
    label_map = segment_label_map(prediction, layout)
    present = _present_values(label_map)
    empty_segments = [spec.number for spec in layout if spec.number not in present]
    algorithm = segmentation_algorithm(model)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=spec.number,
            segment_label=spec.label,
            segmented_property_category=spec.category,
            segmented_property_type=spec.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=segment_tracking_uid(sop_instance_uid, spec.number),
            tracking_id=spec.label,
            display_color=hd.color.CIELabColor.from_rgb(*spec.rgb),
        )
        for spec in layout
    ]
    device = equipment(model)
    now = content_datetime if content_datetime is not None else datetime.datetime.now()
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=label_map,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=device.manufacturer,
        manufacturer_model_name=device.model_name,
        # highdicom annotates tuple[str] (one version) but takes any sequence of them.
        software_versions=device.software_versions,  # type: ignore[arg-type]
        device_serial_number=device.device_serial_number,
        content_label=CONTENT_LABEL,
        content_description=content_description(model),
        series_description=SERIES_DESCRIPTION,
        omit_empty_frames=not empty_segments,
        content_date=now.date(),
        content_time=now.time(),
        content_qualification=hd.ContentQualificationValues.RESEARCH,
    )
    if any(
        spec.property_type.scheme_designator == codes.LOCAL_SCHEME_DESIGNATOR for spec in layout
    ):
        # SOP Common module (PS3.3 C.12.1): declare the private scheme of the IVH/EDH codes.
        seg.CodingSchemeIdentificationSequence = [codes.local_coding_scheme()]
    logger.info(
        "Built SEG %s (series %s) for source series %s: segments %s, %d frames%s.",
        sop_instance_uid,
        series_instance_uid,
        volume.series_instance_uid,
        ", ".join(spec.key for spec in layout),
        int(seg.NumberOfFrames),
        f", empty segment(s) {empty_segments} encoded with all frames" if empty_segments else "",
    )
    return seg
