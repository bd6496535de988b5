"""What a notification says: DESIGN.md's JSON message, or a FHIR R4 DiagnosticReport.

Both are built from the job's result.json (the node's one summary of a series) plus the few
source header values result.json does not carry (AccessionNumber, PatientID and issuer, study
date/time). No patient name or birth date ever goes out.

FHIR: fhir.resources 8 models FHIR R5 by default and R4B (4.3.0) in ``fhir.resources.R4B``; the
last line that modelled 4.0.1 itself (6.x) needs pydantic 1, which the node cannot use next to
pydantic 2. DiagnosticReport did not change between R4 and R4B, so a report that validates
against the R4B model is a valid R4 DiagnosticReport; it is validated here before it is queued.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Final

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydicom import Dataset

from dicom_node.results import codes
from ichnet_core.labels import SUBTYPES

#: DESIGN.md "Notifications": the keys of ``format: json``, in this order.
JSON_MESSAGE_KEYS: Final[tuple[str, ...]] = (
    "study_instance_uid",
    "series_instance_uid",
    "accession_number",
    "result_version",
    "present",
    "subject",
    "volumes_ml",
    "comparison",
)
#: FHIR code systems of the DICOM coding scheme designators the node's codes use.
FHIR_SYSTEMS: Final[dict[str, str]] = {"SCT": "http://snomed.info/sct", "LN": "http://loinc.org"}
#: DESIGN.md: the study as identifier, DICOM UID as an OID URN.
STUDY_IDENTIFIER_SYSTEM: Final[str] = "urn:dicom:uid"
RADIOLOGY_CATEGORY: Final[dict[str, str]] = {
    "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
    "code": "RAD",
    "display": "Radiology",
}
RESEARCH_NOTE: Final[str] = "ICHNet research software, not for diagnostic use."


def wants(send_on: str, result: Mapping[str, Any]) -> bool:
    """Whether a target with ``send_on`` (``positive`` | ``all``) gets this result."""
    return send_on == "all" or bool(result.get("present", {}).get("any"))


def _text(source: Dataset, keyword: str) -> str:
    return str(source.get(keyword, "") or "").strip()


def build_json_message(result: Mapping[str, Any], source: Dataset) -> dict[str, Any]:
    """DESIGN.md's JSON message for one result (``source``: a source slice's header)."""
    return {
        "study_instance_uid": result["study_instance_uid"],
        "series_instance_uid": result["series_instance_uid"],
        "accession_number": _text(source, "AccessionNumber") or None,
        "result_version": int(result["result_version"]),
        "present": result["present"],
        "subject": result["subject"],
        "volumes_ml": result["volumes_ml"],
        "comparison": result.get("comparison"),
    }


def _coding(concept: codes.hd.sr.CodedConcept) -> dict[str, str] | None:
    system = FHIR_SYSTEMS.get(concept.scheme_designator)
    if system is None:  # a local code means nothing to a FHIR server
        return None
    return {"system": system, "code": concept.value, "display": concept.meaning}


def _study_datetime(source: Dataset) -> str | None:
    """StudyDate (+ StudyTime) as a FHIR dateTime.

    FHIR wants a time zone on any dateTime with a time; DICOM's local study time has one only
    with Timezone Offset From UTC. Without it the date alone is stated, which is true.
    """
    date, time = _text(source, "StudyDate"), _text(source, "StudyTime")
    try:
        day = datetime.datetime.strptime(date, "%Y%m%d")
    except ValueError:
        return None
    offset = _text(source, "TimezoneOffsetFromUTC")
    digits = time.split(".")[0].ljust(6, "0")[:6]
    try:
        moment = datetime.datetime.strptime(date + digits + offset, "%Y%m%d%H%M%S%z")
    except ValueError:
        return day.date().isoformat()
    return moment.isoformat()


def _conclusion(result: Mapping[str, Any]) -> str:
    present = result["present"]
    volumes = result["volumes_ml"]
    subject = result["subject"]
    words = "present" if present.get("any") else "not detected"
    parts = [
        f"Intracranial hemorrhage {words} (probability {subject['any']:.2f}); "
        f"total volume {volumes['hemorrhage']:.1f} mL."
    ]
    found = [
        f"{name} {volumes[name]:.1f} mL" if volumes.get(name) is not None else name
        for name in SUBTYPES
        if present.get(name)
    ]
    if found:
        parts.append("Present: " + ", ".join(found) + ".")
    comparison = result.get("comparison")
    if comparison:
        parts.append(
            f"Prior {comparison['prior_volume_ml']:.1f} mL {comparison['interval_hours']:.1f} h "
            f"earlier: change {comparison['change_ml']:+.1f} mL"
            + (", expansion." if comparison["expansion"] else ", no expansion.")
        )
    parts.append(RESEARCH_NOTE)
    return " ".join(parts)


def build_fhir_report(
    result: Mapping[str, Any], source: Dataset, *, issued: datetime.datetime
) -> dict[str, Any]:
    """A FHIR R4 DiagnosticReport (status ``preliminary``) for one result, validated.

    Raises
    ------
    pydantic.ValidationError
        If the report does not fit the DiagnosticReport structure (a bug, never user input).
    """
    conclusion_codes = []
    if result["present"].get("any"):
        conclusion_codes.append(codes.INTRACRANIAL_HEMORRHAGE)
    conclusion_codes += [
        codes.SUBTYPE_FINDINGS[name] for name in SUBTYPES if result["present"].get(name)
    ]
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "identifier": [
            {
                "system": STUDY_IDENTIFIER_SYSTEM,
                "value": f"urn:oid:{result['study_instance_uid']}",
            }
        ],
        "category": [{"coding": [RADIOLOGY_CATEGORY]}],
        "code": {
            "coding": [_coding(codes.CT_HEAD)],
            "text": "ICHNet intracranial hemorrhage analysis (research)",
        },
        "issued": issued.astimezone(datetime.timezone.utc).isoformat(),
        "conclusion": _conclusion(result),
    }
    codings = [c for c in (_coding(concept) for concept in conclusion_codes) if c is not None]
    if codings:
        report["conclusionCode"] = [{"coding": [coding]} for coding in codings]
    effective = _study_datetime(source)
    if effective is not None:
        report["effectiveDateTime"] = effective
    patient_id = _text(source, "PatientID")
    if patient_id:
        identifier = {"value": patient_id}
        issuer = _text(source, "IssuerOfPatientID")
        subject: dict[str, Any] = {"type": "Patient", "identifier": identifier}
        if issuer:  # IssuerOfPatientID names an authority, not a FHIR system URI
            identifier_with_issuer: dict[str, Any] = {**identifier, "assigner": {"display": issuer}}
            subject["identifier"] = identifier_with_issuer
        report["subject"] = subject
    accession = _text(source, "AccessionNumber")
    if accession:
        report["identifier"].append(
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                    ]
                },
                "value": accession,
            }
        )
    validated = DiagnosticReport.model_validate(report)
    return validated.model_dump(mode="json", exclude_none=True)
