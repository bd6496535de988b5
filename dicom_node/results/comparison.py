"""Follow-up comparison: did the bleed grow since the patient's previous scan?

Hematoma expansion is the most common follow-up question for an intracranial bleed and the
strongest early predictor of outcome; the usual definition (DESIGN.md) is growth by more than
6 mL or by more than 33 %. This module holds the pure part: who counts as the same patient,
when a study happened, and the numbers of result.json ``comparison``. Finding the prior is
:mod:`dicom_node.priors`.

Same patient: the same PatientID and the same IssuerOfPatientID (an absent issuer counts as
empty). A series without PatientID is never compared: two anonymous studies are not one patient.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydicom import Dataset

from dicom_node.results.volumes import HemorrhageVolumes
from ichnet_core.labels import SUBTYPES

#: DESIGN.md: expansion is a change of more than this many mL ...
EXPANSION_ML: Final[float] = 6.0
#: ... or, with a prior volume above 0, of more than this many percent.
EXPANSION_PERCENT: Final[float] = 33.0
#: Decimals of the numbers in result.json ``comparison``.
DECIMALS: Final[int] = 2


@dataclass(frozen=True)
class PatientKey:
    """PatientID + IssuerOfPatientID (empty when absent), as DESIGN.md matches patients."""

    patient_id: str
    issuer: str

    @classmethod
    def of(cls, source: Dataset) -> PatientKey | None:
        """The key of a source header; ``None`` without a PatientID."""
        patient_id = str(source.get("PatientID", "") or "").strip()
        if not patient_id:
            return None
        return cls(patient_id, str(source.get("IssuerOfPatientID", "") or "").strip())


def study_datetime(source: Dataset) -> datetime.datetime | None:
    """StudyDate + StudyTime (00:00 when the time is absent); ``None`` without a valid date."""
    date = str(source.get("StudyDate", "") or "").strip()
    time = str(source.get("StudyTime", "") or "").strip()
    try:
        day = datetime.datetime.strptime(date, "%Y%m%d")
    except ValueError:
        return None
    whole, _, fraction = time.partition(".")
    digits = whole.ljust(6, "0")[:6]
    try:
        moment = datetime.datetime.strptime(date + digits, "%Y%m%d%H%M%S")
    except ValueError:
        return day
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    return moment.replace(microsecond=micro)


@dataclass(frozen=True)
class PriorResult:
    """What the node keeps of an earlier result for comparisons.

    Attributes
    ----------
    sr_series_instance_uid, sr_sop_instance_uid:
        The prior's SR, referenced from the new SR as pertinent other evidence.
    """

    study_instance_uid: str
    series_instance_uid: str
    study_datetime: datetime.datetime
    volume_ml: float
    compartments_ml: Mapping[str, float] | None
    sr_series_instance_uid: str
    sr_sop_instance_uid: str


def _percent(change_ml: float, prior_ml: float) -> float | None:
    return None if prior_ml <= 0.0 else round(100.0 * change_ml / prior_ml, DECIMALS)


def expansion(change_ml: float, prior_ml: float) -> bool:
    """DESIGN.md: ``change_ml`` > 6, or prior > 0 and the change > 33 %."""
    percent = _percent(change_ml, prior_ml)
    return change_ml > EXPANSION_ML or (percent is not None and percent > EXPANSION_PERCENT)


def compare(
    volumes: HemorrhageVolumes, current: datetime.datetime, prior: PriorResult
) -> dict[str, Any]:
    """result.json ``comparison`` of a result with its prior (DESIGN.md keys)."""
    change = volumes.total_ml - prior.volume_ml
    comparison: dict[str, Any] = {
        "prior_study_instance_uid": prior.study_instance_uid,
        "prior_series_instance_uid": prior.series_instance_uid,
        "prior_volume_ml": round(prior.volume_ml, DECIMALS),
        "interval_hours": round((current - prior.study_datetime).total_seconds() / 3600, DECIMALS),
        "change_ml": round(change, DECIMALS),
        "change_percent": _percent(change, prior.volume_ml),
        "expansion": expansion(change, prior.volume_ml),
    }
    now, before = volumes.compartments_ml, prior.compartments_ml
    if now is not None and before is not None:
        compartments = {
            name: {
                "prior_ml": round(before[name], DECIMALS),
                "change_ml": round(now[name] - before[name], DECIMALS),
            }
            for name in SUBTYPES
            if now.get(name, 0.0) > 0.0 or before.get(name, 0.0) > 0.0
        }
        if compartments:
            comparison["compartments"] = compartments
    return comparison
