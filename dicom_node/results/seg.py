"""The DICOM Segmentation (SEG) writer: hemorrhage and brain masks as a BINARY SEG (highdicom).

Why BINARY: OHIF 3.x, the most used open-source web viewer, does not load FRACTIONAL SEGs and
misdraws LABELMAP ones; a BINARY SEG with one frame per (slice, segment) is what every viewer and
PACS handles. Each segment carries a Recommended Display CIELab Value, since OHIF warns over the
image when a segment has none.

Geometry: the frames are the source slices. highdicom takes each frame's Plane Position from its
source image and records the source SOP Instance in the frame's Derivation Image Sequence, so the
mask sits exactly on the slice it was predicted for, gantry tilt and uneven spacing included.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from typing import Final

import highdicom as hd
import numpy as np

from dicom_node.results import codes
from dicom_node.results.checks import check_prediction
from dicom_node.results.device import ModelIdentity, equipment, segmentation_algorithm
from dicom_node.results.sanitize import prepare_source_headers
from dicom_node.results.uids import segment_tracking_uid
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import BRAIN, HEMORRHAGE
from ichnet_core.prediction import Prediction

logger = logging.getLogger(__name__)

#: Segment numbers (PS3.3 C.8.20.2: BINARY segments are numbered from 1). The SR references
#: the hemorrhage segment by this number.
HEMORRHAGE_SEGMENT_NUMBER: Final[int] = 1
BRAIN_SEGMENT_NUMBER: Final[int] = 2

#: Display colours as sRGB; stored as CIELab (Recommended Display CIELab Value).
HEMORRHAGE_RGB: Final[tuple[int, int, int]] = (230, 30, 30)
BRAIN_RGB: Final[tuple[int, int, int]] = (80, 150, 255)

#: Content Label (CS, at most 16 upper-case characters).
CONTENT_LABEL: Final[str] = "ICHNET"
SERIES_DESCRIPTION: Final[str] = "ICHNet hemorrhage segmentation (research)"


@dataclass(frozen=True)
class _SegmentSpec:
    number: int
    label: str
    label_value: int
    category: hd.sr.CodedConcept
    property_type: hd.sr.CodedConcept
    rgb: tuple[int, int, int]


_SEGMENTS: Final[tuple[_SegmentSpec, ...]] = (
    _SegmentSpec(
        number=HEMORRHAGE_SEGMENT_NUMBER,
        label="Intracranial hemorrhage",
        label_value=HEMORRHAGE,
        category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        property_type=codes.HEMORRHAGE,
        rgb=HEMORRHAGE_RGB,
    ),
    _SegmentSpec(
        number=BRAIN_SEGMENT_NUMBER,
        label="Brain",
        label_value=BRAIN,
        category=codes.ANATOMICAL_STRUCTURE,
        property_type=codes.BRAIN,
        rgb=BRAIN_RGB,
    ),
)


def content_description(model: ModelIdentity) -> str:
    """Content Description (LO) that says what the object is and how far to trust it."""
    return f"ICHNet research output; {model.training_data_note}"


def segment_masks(prediction: Prediction) -> np.ndarray:
    """``(S, rows, columns, 2)`` bool masks in segment-number order (hemorrhage, brain)."""
    return np.stack([prediction.labels == spec.label_value for spec in _SEGMENTS], axis=-1)


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
    """Build the BINARY SEG of one series: segment 1 hemorrhage, segment 2 brain.

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
        Model output for ``volume``; ``labels`` 0 non-brain, 1 brain, 2 hemorrhage.
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
    masks = segment_masks(prediction)
    empty_segments = [
        spec.number for index, spec in enumerate(_SEGMENTS) if not masks[..., index].any()
    ]
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
        for spec in _SEGMENTS
    ]
    device = equipment(model)
    now = content_datetime if content_datetime is not None else datetime.datetime.now()
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=device.manufacturer,
        manufacturer_model_name=device.model_name,
        software_versions=device.software_versions,
        device_serial_number=device.device_serial_number,
        content_label=CONTENT_LABEL,
        content_description=content_description(model),
        series_description=SERIES_DESCRIPTION,
        omit_empty_frames=not empty_segments,
        content_date=now.date(),
        content_time=now.time(),
        content_qualification=hd.ContentQualificationValues.RESEARCH,
    )
    logger.info(
        "Built SEG %s (series %s) for source series %s: %d frames%s.",
        sop_instance_uid,
        series_instance_uid,
        volume.series_instance_uid,
        int(seg.NumberOfFrames),
        f", empty segment(s) {empty_segments} encoded with all frames" if empty_segments else "",
    )
    return seg
