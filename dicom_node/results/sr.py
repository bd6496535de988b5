"""The structured report writer: a TID 1500 Measurement Report as a Comprehensive 3D SR.

What a reader gets (dsrdump shows it in this order): the observer is a DEVICE, our model, named
and identified by its weights; the procedure reported is a head CT; then the measurement groups,
laid out after the SEG's segments (``seg.segment_layout``):

- SEG with one whole-hemorrhage segment (weights without compartments, or no bleed): one TID 1411
  volumetric group describing that segment (same tracking UID as the segment, referenced by SOP
  Instance and segment number, source series given), holding the hemorrhage volume in mL (sum of
  segmented voxel volumes), the probability of intracranial hemorrhage and of each subtype, and
  a Present/Absent evaluation of each;
- SEG with compartment segments: one TID 1501 group "Intracranial hemorrhage" with the total
  volume, the probabilities and the Present/Absent evaluations, then one TID 1411 volumetric
  group per compartment segment with that compartment's volume, each referencing its segment.

Present/Absent follows the weights' operating points (``ichnet_core.operating_points``; 0.5 for
every output of weights without them), and the algorithm parameters state the thresholds and
where they come from. Probabilities are NUM items whose concept name is the finding and whose
unit is UCUM ``{probability}``, so dsrdump reads
``NUM "Subdural hemorrhage" = "0.4" ({probability}, ...)``.
The document is COMPLETE, UNVERIFIED and PRELIMINARY: a machine made it and nobody signed it.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import highdicom as hd
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes as pydicom_codes
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicom_node.results import codes
from dicom_node.results.checks import check_prediction, check_volume_ml
from dicom_node.results.comparison import PriorResult
from dicom_node.results.device import MANUFACTURER, ModelIdentity, equipment
from dicom_node.results.sanitize import prepare_source_headers
from dicom_node.results.seg import COMPARTMENT_LABELS, HEMORRHAGE_KEY, hemorrhage_segments
from dicom_node.results.uids import derived_uid
from dicom_node.results.volumes import HemorrhageVolumes
from ichnet_core.imaging.volume import Volume
from ichnet_core.labels import CLASS_NAMES, SUBTYPES
from ichnet_core.operating_points import DEFAULT_THRESHOLD, OperatingPoints
from ichnet_core.prediction import Prediction

logger = logging.getLogger(__name__)

#: Decimals kept in the SR; result.json keeps full precision.
VOLUME_DECIMALS: Final[int] = 2
PROBABILITY_DECIMALS: Final[int] = 3
SERIES_DESCRIPTION: Final[str] = "ICHNet hemorrhage report (research)"
#: Human-readable tracking identifier of the whole hemorrhage.
TRACKING_IDENTIFIER: Final[str] = "Intracranial hemorrhage"
#: Start of the tracking identifiers of the comparison groups.
COMPARISON_IDENTIFIER: Final[str] = "Comparison with prior study"


def presence(probability: float, threshold: float = DEFAULT_THRESHOLD) -> hd.sr.CodedConcept:
    """SCT Present when ``probability >= threshold``, else SCT Absent."""
    return codes.PRESENT if probability >= threshold else codes.ABSENT


def _segments(seg: Dataset, study_instance_uid: str, volumes: HemorrhageVolumes) -> dict[str, int]:
    """Hemorrhage segments of ``seg``; raise if ``seg`` cannot be the SEG of these volumes."""
    if seg.get("SOPClassUID") != SegmentationStorage:
        raise ValueError(
            f"build_sr needs a Segmentation Storage object; found SOP Class {seg.get('SOPClassUID')}."
        )
    if seg.StudyInstanceUID != study_instance_uid:
        raise ValueError(
            f"SEG {seg.SOPInstanceUID} belongs to study {seg.StudyInstanceUID}, "
            f"not to the analysed study {study_instance_uid}."
        )
    segments = hemorrhage_segments(seg)
    if not segments:
        raise ValueError(f"SEG {seg.SOPInstanceUID} has no hemorrhage segment.")
    if HEMORRHAGE_KEY not in segments:
        expected = set(volumes.present_compartments())
        if set(segments) != expected:
            raise ValueError(
                f"SEG {seg.SOPInstanceUID} has compartment segments {sorted(segments)} but the "
                f"volumes have compartments {sorted(expected)}."
            )
    return segments


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


def _algorithm(
    model: ModelIdentity, operating_points: OperatingPoints
) -> hd.sr.AlgorithmIdentification:
    """TID 4019 Algorithm Identification, with the facts a reader needs to weigh the output."""
    parameters = [f"{key}: {value}" for key, value in model.algorithm_parameters().items()]
    parameters += [
        f"operating_point_{name}: {operating_points.subject[name]:.4g}" for name in CLASS_NAMES
    ]
    parameters.append(f"operating_points_source: {operating_points.source}")
    return hd.sr.AlgorithmIdentification(
        name=model.name,
        version=model.version,
        parameters=parameters,
        family=codes.ARTIFICIAL_INTELLIGENCE,
        manufacturer=MANUFACTURER,
    )


def _probability_items(
    probabilities: dict[str, float], operating_points: OperatingPoints
) -> tuple[list[hd.sr.Measurement], list[hd.sr.QualitativeEvaluation]]:
    """One NUM (probability) and one CODE (Present/Absent) item for ICH and each subtype."""
    findings: Sequence[tuple[str, hd.sr.CodedConcept]] = [
        ("any", codes.INTRACRANIAL_HEMORRHAGE),
        *((name, codes.SUBTYPE_FINDINGS[name]) for name in SUBTYPES),
    ]
    present = operating_points.present(probabilities)
    measurements = []
    evaluations = []
    for name, finding in findings:
        measurements.append(
            hd.sr.Measurement(
                name=finding,
                value=round(probabilities[name], PROBABILITY_DECIMALS),
                unit=codes.PROBABILITY_UNIT,
            )
        )
        evaluations.append(
            hd.sr.QualitativeEvaluation(finding, codes.PRESENT if present[name] else codes.ABSENT)
        )
    return measurements, evaluations


def _volume_measurement(volume_ml: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(
        name=codes.VOLUME,
        value=round(volume_ml, VOLUME_DECIMALS),
        unit=codes.MILLILITER,
        method=codes.SUM_OF_SEGMENTED_VOXELS,
    )


def _segment_group(
    seg: Dataset,
    segment_number: int,
    identifier: str,
    source_series_instance_uid: str,
    finding: hd.sr.CodedConcept,
    algorithm: hd.sr.AlgorithmIdentification,
    measurements: list[hd.sr.Measurement],
    evaluations: list[hd.sr.QualitativeEvaluation] | None = None,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411 group describing one segment of ``seg`` (shares the segment's tracking UID)."""
    item = next(i for i in seg.SegmentSequence if int(i.SegmentNumber) == segment_number)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=item.TrackingUID, identifier=identifier),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(source_series_instance_uid),
        ),
        finding_type=finding,
        finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        algorithm_id=algorithm,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _comparison_groups(
    comparison: Mapping[str, Any], algorithm: hd.sr.AlgorithmIdentification, seg_uid: str
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """TID 1501 groups "Comparison with prior study": the whole bleed, then per compartment."""

    def ml(concept: hd.sr.CodedConcept, value: float) -> hd.sr.Measurement:
        return hd.sr.Measurement(
            name=concept, value=round(value, VOLUME_DECIMALS), unit=codes.MILLILITER
        )

    def group(
        name: str,
        finding: hd.sr.CodedConcept,
        measurements: list[hd.sr.Measurement],
        evaluations: list[hd.sr.QualitativeEvaluation] | None = None,
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=derived_uid(seg_uid, "comparison", name),
                identifier=f"{COMPARISON_IDENTIFIER}: {name}",
            ),
            finding_type=finding,
            finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            algorithm_id=algorithm,
            measurements=measurements,
            qualitative_evaluations=evaluations,
        )

    total = [
        ml(codes.PRIOR_HEMORRHAGE_VOLUME, comparison["prior_volume_ml"]),
        ml(codes.HEMORRHAGE_VOLUME_CHANGE, comparison["change_ml"]),
        hd.sr.Measurement(
            name=codes.INTERVAL_SINCE_PRIOR,
            value=round(float(comparison["interval_hours"]), VOLUME_DECIMALS),
            unit=codes.HOUR,
        ),
    ]
    if comparison["change_percent"] is not None:
        total.append(
            hd.sr.Measurement(
                name=codes.HEMORRHAGE_VOLUME_CHANGE,
                value=round(float(comparison["change_percent"]), VOLUME_DECIMALS),
                unit=codes.PERCENT,
            )
        )
    expansion = codes.PRESENT if comparison["expansion"] else codes.ABSENT
    groups = [
        group(
            TRACKING_IDENTIFIER,
            codes.INTRACRANIAL_HEMORRHAGE,
            total,
            [hd.sr.QualitativeEvaluation(codes.HEMATOMA_EXPANSION, expansion)],
        )
    ]
    for name, values in comparison.get("compartments", {}).items():
        groups.append(
            group(
                COMPARTMENT_LABELS[name],
                codes.SUBTYPE_FINDINGS[name],
                [
                    ml(codes.PRIOR_HEMORRHAGE_VOLUME, values["prior_ml"]),
                    ml(codes.HEMORRHAGE_VOLUME_CHANGE, values["change_ml"]),
                ],
            )
        )
    return groups


def _prior_evidence(prior: PriorResult) -> list[Dataset]:
    """Pertinent Other Evidence (PS3.3 C.17.2): the prior's SR, in its own study."""
    instance = Dataset()
    instance.ReferencedSOPClassUID = Comprehensive3DSRStorage
    instance.ReferencedSOPInstanceUID = prior.sr_sop_instance_uid
    series = Dataset()
    series.SeriesInstanceUID = prior.sr_series_instance_uid
    series.ReferencedSOPSequence = DicomSequence([instance])
    study = Dataset()
    study.StudyInstanceUID = prior.study_instance_uid
    study.ReferencedSeriesSequence = DicomSequence([series])
    return [study]


def build_sr(
    volume: Volume,
    prediction: Prediction,
    seg: Dataset,
    model: ModelIdentity,
    *,
    volumes: HemorrhageVolumes,
    series_instance_uid: str,
    sop_instance_uid: str,
    series_number: int,
    instance_number: int = 1,
    operating_points: OperatingPoints | None = None,
    content_datetime: datetime.datetime | None = None,
    comparison: Mapping[str, Any] | None = None,
    prior: PriorResult | None = None,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 report of one series, referencing the hemorrhage segments of ``seg``.

    Parameters
    ----------
    volume:
        The analysed series.
    prediction:
        Model output; its subject probabilities (``CLASS_NAMES`` order) are reported.
    seg:
        The SEG built for the same prediction (``build_seg``); its hemorrhage segments are the
        regions the volume measurements refer to, and it is listed as evidence.
    model:
        Identification of the model: the SR's device observer and algorithm.
    volumes:
        Total and per-compartment hemorrhage volume (``measure_hemorrhage``).
    series_instance_uid, sop_instance_uid:
        UIDs of the new SR series and instance (see ``ResultUids.derive``).
    series_number, instance_number:
        Series and instance numbers of the new object (positive integers).
    operating_points:
        The weights' thresholds for Present/Absent; ``None`` means 0.5 for every output.
    content_datetime:
        Content Date/Time; defaults to now. Pass the SEG's value to keep them equal.
    comparison, prior:
        result.json ``comparison`` and the prior it was computed from: reported in TID 1501
        groups (prior volume, change in mL and %, interval, expansion; per compartment where
        the comparison has them), and the prior's SR listed as pertinent other evidence.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        The report, in the source study, with the source's Patient and Study modules.

    Raises
    ------
    ValueError
        When the prediction does not match the volume, ``seg`` is not its SEG, or a volume is
        out of range.
    """
    check_prediction(volume, prediction)
    check_volume_ml(volumes.total_ml)
    for value in (volumes.compartments_ml or {}).values():
        check_volume_ml(value)
    points = operating_points if operating_points is not None else OperatingPoints.default()
    segments = _segments(seg, volume.study_instance_uid, volumes)

    probabilities = prediction.subject_dict()
    probability_measurements, evaluations = _probability_items(probabilities, points)
    algorithm = _algorithm(model, points)
    source_series = volume.series_instance_uid
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    if HEMORRHAGE_KEY in segments:
        groups.append(
            _segment_group(
                seg,
                segments[HEMORRHAGE_KEY],
                TRACKING_IDENTIFIER,
                source_series,
                codes.INTRACRANIAL_HEMORRHAGE,
                algorithm,
                [_volume_measurement(volumes.total_ml), *probability_measurements],
                evaluations,
            )
        )
    else:
        assert volumes.compartments_ml is not None  # _segments checked the compartments
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=derived_uid(seg.SOPInstanceUID, "total hemorrhage"),
                    identifier=TRACKING_IDENTIFIER,
                ),
                finding_type=codes.INTRACRANIAL_HEMORRHAGE,
                finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
                algorithm_id=algorithm,
                measurements=[_volume_measurement(volumes.total_ml), *probability_measurements],
                qualitative_evaluations=evaluations,
            )
        )
        for name, number in sorted(segments.items(), key=lambda entry: entry[1]):
            groups.append(
                _segment_group(
                    seg,
                    number,
                    COMPARTMENT_LABELS[name],
                    source_series,
                    codes.SUBTYPE_FINDINGS[name],
                    algorithm,
                    [_volume_measurement(volumes.compartments_ml[name])],
                )
            )
    if comparison is not None:
        groups.extend(_comparison_groups(comparison, algorithm, seg.SOPInstanceUID))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=codes.CT_HEAD,
        imaging_measurements=groups,
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
    if prior is not None:
        sr.PertinentOtherEvidenceSequence = _prior_evidence(prior)
    logger.info(
        "Built SR %s (series %s) for source series %s referencing SEG %s: volume %.2f mL "
        "(%s), P(ICH) %.3f at operating point %.3g.",
        sop_instance_uid,
        series_instance_uid,
        volume.series_instance_uid,
        seg.SOPInstanceUID,
        volumes.total_ml,
        ", ".join(f"{k} {v:.2f}" for k, v in (volumes.compartments_ml or {}).items()) or "-",
        probabilities["any"],
        points.subject["any"],
    )
    return sr
