"""The structured report writer: a TID 1500 Measurement Report as a Comprehensive 3D SR.

What a reader gets (dsrdump shows it in this order): the observer is a DEVICE, our model, named
and identified by its weights; the procedure reported is a head CT; one TID 1411 volumetric
measurement group describes the hemorrhage segment of the SEG (same tracking UID as the segment,
referenced by SOP Instance and segment number, source series given). It holds

- the hemorrhage volume in mL (sum of segmented voxel volumes),
- the probability of intracranial hemorrhage and of each subtype, as numbers,
- a Present/Absent evaluation of each, by the presence threshold (0.5 unless told otherwise).

Probabilities are NUM items whose concept name is the finding and whose unit is UCUM
``{probability}``, so dsrdump reads ``NUM "Subdural hemorrhage" = "0.4" ({probability}, ...)``.
The document is COMPLETE, UNVERIFIED and PRELIMINARY: a machine made it and nobody signed it.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Final

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes as pydicom_codes
from pydicom.uid import SegmentationStorage

from dicom_node.results import codes
from dicom_node.results.checks import check_prediction, check_volume_ml
from dicom_node.results.device import MANUFACTURER, ModelIdentity, equipment
from dicom_node.results.sanitize import prepare_source_headers
from dicom_node.results.seg import HEMORRHAGE_SEGMENT_NUMBER
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import SUBTYPES
from ichnet_core.prediction import Prediction

logger = logging.getLogger(__name__)

#: A finding is reported Present when its probability is at least this value.
PRESENCE_THRESHOLD: Final[float] = 0.5
#: Decimals kept in the SR; result.json keeps full precision.
VOLUME_DECIMALS: Final[int] = 2
PROBABILITY_DECIMALS: Final[int] = 3
SERIES_DESCRIPTION: Final[str] = "ICHNet hemorrhage report (research)"
#: Human-readable tracking identifier of the hemorrhage region.
TRACKING_IDENTIFIER: Final[str] = "Intracranial hemorrhage"


def presence(probability: float, threshold: float = PRESENCE_THRESHOLD) -> hd.sr.CodedConcept:
    """SCT Present when ``probability >= threshold``, else SCT Absent."""
    return codes.PRESENT if probability >= threshold else codes.ABSENT


def _hemorrhage_segment(seg: Dataset, study_instance_uid: str) -> Dataset:
    """The hemorrhage segment's item of ``seg``; raise if ``seg`` cannot be the matching SEG."""
    if seg.get("SOPClassUID") != SegmentationStorage:
        raise ValueError(
            f"build_sr needs a Segmentation Storage object; found SOP Class {seg.get('SOPClassUID')}."
        )
    if seg.StudyInstanceUID != study_instance_uid:
        raise ValueError(
            f"SEG {seg.SOPInstanceUID} belongs to study {seg.StudyInstanceUID}, "
            f"not to the analysed study {study_instance_uid}."
        )
    for item in seg.SegmentSequence:
        if int(item.SegmentNumber) == HEMORRHAGE_SEGMENT_NUMBER:
            property_type = item.SegmentedPropertyTypeCodeSequence[0]
            if property_type.CodeValue != codes.HEMORRHAGE.value:
                raise ValueError(
                    f"Segment {HEMORRHAGE_SEGMENT_NUMBER} of SEG {seg.SOPInstanceUID} is "
                    f"{property_type.CodeMeaning!r}, not {codes.HEMORRHAGE.meaning!r}."
                )
            return item
    raise ValueError(
        f"SEG {seg.SOPInstanceUID} has no segment {HEMORRHAGE_SEGMENT_NUMBER} (hemorrhage)."
    )


def _observation_context(model: ModelIdentity) -> hd.sr.ObservationContext:
    """TID 1002 with a DEVICE observer: the model, identified by its weights."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=model.device_uid,
        name=model.name,
        manufacturer_name=MANUFACTURER,
        model_name=f"{model.name} {model.version}",
        serial_number=model.weights_sha256,
    )
    observer = hd.sr.ObserverContext(
        observer_type=pydicom_codes.DCM.Device,
        observer_identifying_attributes=device,
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def _algorithm(model: ModelIdentity, threshold: float) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification, with the facts a reader needs to weigh the output."""
    parameters = [f"{key}: {value}" for key, value in model.algorithm_parameters().items()]
    parameters.append(f"presence_threshold: {threshold:g}")
    return hd.sr.AlgorithmIdentification(
        name=model.name,
        version=model.version,
        parameters=parameters,
        family=codes.ARTIFICIAL_INTELLIGENCE,
        manufacturer=MANUFACTURER,
    )


def _probability_items(
    probabilities: dict[str, float], threshold: float
) -> tuple[list[hd.sr.Measurement], list[hd.sr.QualitativeEvaluation]]:
    """One NUM (probability) and one CODE (Present/Absent) item for ICH and each subtype."""
    findings: Sequence[tuple[str, hd.sr.CodedConcept]] = [
        ("any", codes.INTRACRANIAL_HEMORRHAGE),
        *((name, codes.SUBTYPE_FINDINGS[name]) for name in SUBTYPES),
    ]
    measurements = []
    evaluations = []
    for name, finding in findings:
        probability = probabilities[name]
        measurements.append(
            hd.sr.Measurement(
                name=finding,
                value=round(probability, PROBABILITY_DECIMALS),
                unit=codes.PROBABILITY_UNIT,
            )
        )
        evaluations.append(hd.sr.QualitativeEvaluation(finding, presence(probability, threshold)))
    return measurements, evaluations


def build_sr(
    volume: Volume,
    prediction: Prediction,
    seg: Dataset,
    model: ModelIdentity,
    *,
    hemorrhage_volume_ml: float,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    threshold: float = PRESENCE_THRESHOLD,
    content_datetime: datetime.datetime | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 report of one series, referencing the hemorrhage segment of ``seg``.

    Parameters
    ----------
    volume:
        The analysed series.
    prediction:
        Model output; its subject probabilities (``CLASS_NAMES`` order) are reported.
    seg:
        The SEG built for the same prediction (``build_seg``); its hemorrhage segment is the
        region the volume measurement refers to, and it is listed as evidence.
    model:
        Identification of the model: the SR's device observer and algorithm.
    hemorrhage_volume_ml:
        Hemorrhage volume in mL (DESIGN.md rule), finite and >= 0.
    series_instance_uid, sop_instance_uid:
        UIDs of the new SR series and instance (see ``ResultUids.derive``).
    series_number, instance_number:
        Series and instance numbers of the new object (positive integers).
    threshold:
        Probability from which a finding is reported Present, in (0, 1].
    content_datetime:
        Content Date/Time; defaults to now. Pass the SEG's value to keep them equal.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The report, in the source study, with the source's Patient and Study modules.

    Raises
    ------
    ValueError
        When the prediction does not match the volume, ``seg`` is not its SEG, the volume or
        threshold is out of range.
    """
    check_prediction(volume, prediction)
    check_volume_ml(hemorrhage_volume_ml)
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"The presence threshold must be in (0, 1]; found {threshold}.")
    segment = _hemorrhage_segment(seg, volume.study_instance_uid)

    probabilities = prediction.subject_dict()
    probability_measurements, evaluations = _probability_items(probabilities, threshold)
    volume_measurement = hd.sr.Measurement(
        name=codes.VOLUME,
        value=round(hemorrhage_volume_ml, VOLUME_DECIMALS),
        unit=codes.MILLILITER,
        method=codes.SUM_OF_SEGMENTED_VOXELS,
    )
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=segment.TrackingUID, identifier=TRACKING_IDENTIFIER
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=HEMORRHAGE_SEGMENT_NUMBER,
            source_series=hd.sr.SourceSeriesForSegmentation(volume.series_instance_uid),
        ),
        finding_type=codes.INTRACRANIAL_HEMORRHAGE,
        finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        algorithm_id=_algorithm(model, threshold),
        measurements=[volume_measurement, *probability_measurements],
        qualitative_evaluations=evaluations,
    )
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=codes.CT_HEAD,
        imaging_measurements=[group],
    )
    sources = prepare_source_headers(volume.datasets)
    device = equipment(model)
    now = content_datetime if content_datetime is not None else datetime.datetime.now()
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg],
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=device.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        manufacturer_model_name=device.model_name,
        software_versions=device.software_versions,
        device_serial_number=device.device_serial_number,
        series_description=SERIES_DESCRIPTION,
        content_date=now.date(),
        content_time=now.time(),
        content_qualification=hd.ContentQualificationValues.RESEARCH,
        coding_schemes=[codes.local_coding_scheme()],
    )
    logger.info(
        "Built SR %s (series %s) for source series %s referencing SEG %s: volume %.2f mL, "
        "P(ICH) %.3f.",
        sop_instance_uid,
        series_instance_uid,
        volume.series_instance_uid,
        seg.SOPInstanceUID,
        hemorrhage_volume_ml,
        probabilities["any"],
    )
    return sr
