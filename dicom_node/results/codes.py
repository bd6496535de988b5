"""Coded concepts used by the result writers, each with the document that defines it.

Codes come from the DICOM standard (PS3.16) through ``pydicom.sr.codedict`` wherever the concept
is listed there, so a reader can check them against the Context Group (CID) named beside each one.
SNOMED CT identifiers that DICOM does not list (the subtypes) were cross-checked in several
independent public code lists that quote SNOMED CT (SCTID with its term) before use; no SNOMED CT
release was at hand, so they still deserve a check against one.

Two subtypes, intraventricular and epidural (extradural) hemorrhage, have SNOMED CT concepts, but
their identifiers could not be confirmed against a SNOMED CT release while this module was
written, and the candidate identifiers found in public code contradicted each other (one of them
is "Croup"). A wrong SCTID would silently tell a PACS, a registry or a report generator that the
patient has a different disorder, so these two use a local coding scheme, ``99ICHNET`` (a private
scheme as PS3.3 Section 8.2 allows, declared in the SR's Coding Scheme Identification Sequence;
dciodvfy warns that the designator is not a standard one, which is expected). Replace them with
the SNOMED CT concepts once the SCTIDs are verified.
"""

from __future__ import annotations

from typing import Final

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes

from ichnet_core.labels import SUBTYPES

#: Designator of the local coding scheme (PS3.3 8.2: private schemes start with "99").
LOCAL_SCHEME_DESIGNATOR: Final[str] = "99ICHNET"


def local_coding_scheme() -> CodingSchemeIdentificationItem:
    """A new Coding Scheme Identification Sequence item declaring ``99ICHNET``.

    A function rather than a constant because the item is a mutable pydicom Dataset that each
    written object embeds.
    """
    return CodingSchemeIdentificationItem(
        designator=LOCAL_SCHEME_DESIGNATOR,
        name="ICHNet DICOM node local codes",
        responsible_organization="ICHNet DICOM node project",
    )


# --- Segment categories and types (SEG), CID 7150 / CID 7151 --------------------------------

#: CID 7150 "Segmentation Property Categories".
MORPHOLOGICALLY_ABNORMAL_STRUCTURE: Final = hd.sr.CodedConcept.from_code(
    codes.SCT.MorphologicallyAbnormalStructure
)
#: CID 7150 "Segmentation Property Categories".
ANATOMICAL_STRUCTURE: Final = hd.sr.CodedConcept.from_code(codes.SCT.AnatomicalStructure)
#: SCT 50960005, CID 7151 "Segmentation Property Types".
HEMORRHAGE: Final = hd.sr.CodedConcept.from_code(codes.SCT.Hemorrhage)
#: SCT 12738006, CID 7151 "Segmentation Property Types".
BRAIN: Final = hd.sr.CodedConcept.from_code(codes.SCT.Brain)

#: DCM 123110, CID 7162 "Surface Processing Algorithm Families" (Segment Algorithm family).
ARTIFICIAL_INTELLIGENCE: Final = hd.sr.CodedConcept.from_code(codes.DCM.ArtificialIntelligence)

# --- Findings (SR) ------------------------------------------------------------------------------

#: SCT 1386000 "Intracranial hemorrhage (disorder)", listed in PS3.16 (pydicom codedict).
INTRACRANIAL_HEMORRHAGE: Final = hd.sr.CodedConcept(
    value="1386000", scheme_designator="SCT", meaning="Intracranial hemorrhage"
)
#: SCT 274100004 "Cerebral hemorrhage (disorder)": bleeding into the brain parenchyma (CPH).
INTRAPARENCHYMAL_HEMORRHAGE: Final = hd.sr.CodedConcept(
    value="274100004", scheme_designator="SCT", meaning="Cerebral hemorrhage"
)
#: Local code: SNOMED CT "Intraventricular hemorrhage" SCTID not verified (see module docstring).
INTRAVENTRICULAR_HEMORRHAGE: Final = hd.sr.CodedConcept(
    value="IVH", scheme_designator=LOCAL_SCHEME_DESIGNATOR, meaning="Intraventricular hemorrhage"
)
#: Local code: SNOMED CT "Extradural hemorrhage" SCTID not verified (see module docstring).
EPIDURAL_HEMORRHAGE: Final = hd.sr.CodedConcept(
    value="EDH", scheme_designator=LOCAL_SCHEME_DESIGNATOR, meaning="Epidural hemorrhage"
)
#: SCT 35486000 "Subdural intracranial hemorrhage (disorder)".
SUBDURAL_HEMORRHAGE: Final = hd.sr.CodedConcept(
    value="35486000", scheme_designator="SCT", meaning="Subdural hemorrhage"
)
#: SCT 21454007 "Subarachnoid intracranial hemorrhage (disorder)".
SUBARACHNOID_HEMORRHAGE: Final = hd.sr.CodedConcept(
    value="21454007", scheme_designator="SCT", meaning="Subarachnoid hemorrhage"
)

#: Finding concept of each subtype, keyed as in ``ichnet_core.labels.SUBTYPES``.
SUBTYPE_FINDINGS: Final[dict[str, hd.sr.CodedConcept]] = {
    "CPH": INTRAPARENCHYMAL_HEMORRHAGE,
    "IVH": INTRAVENTRICULAR_HEMORRHAGE,
    "EDH": EPIDURAL_HEMORRHAGE,
    "SDH": SUBDURAL_HEMORRHAGE,
    "SAH": SUBARACHNOID_HEMORRHAGE,
}
assert tuple(SUBTYPE_FINDINGS) == SUBTYPES, "SUBTYPE_FINDINGS must follow labels.SUBTYPES"

# --- Follow-up comparison (SR) -------------------------------------------------------------------
# Local codes: PS3.16 has no concept for "volume in the prior study", "change since the prior
# study" or "hematoma expansion" that could be confirmed here; the words say exactly what the
# numbers are.

#: The hemorrhage volume the prior result reported (mL).
PRIOR_HEMORRHAGE_VOLUME: Final = hd.sr.CodedConcept(
    value="PRIORVOL",
    scheme_designator=LOCAL_SCHEME_DESIGNATOR,
    meaning="Hemorrhage volume in prior study",
)
#: This volume minus the prior volume (mL), and the same in percent of the prior.
HEMORRHAGE_VOLUME_CHANGE: Final = hd.sr.CodedConcept(
    value="VOLCHANGE",
    scheme_designator=LOCAL_SCHEME_DESIGNATOR,
    meaning="Change in hemorrhage volume since prior study",
)
#: Hours from the prior study's StudyDate/StudyTime to this one's.
INTERVAL_SINCE_PRIOR: Final = hd.sr.CodedConcept(
    value="PRIORINTERVAL",
    scheme_designator=LOCAL_SCHEME_DESIGNATOR,
    meaning="Interval since prior study",
)
#: Growth by more than 6 mL or 33 % (Present/Absent).
HEMATOMA_EXPANSION: Final = hd.sr.CodedConcept(
    value="EXPANSION", scheme_designator=LOCAL_SCHEME_DESIGNATOR, meaning="Hematoma expansion"
)
#: UCUM hour and percent.
HOUR: Final = hd.sr.CodedConcept(value="h", scheme_designator="UCUM", meaning="hour")
PERCENT: Final = hd.sr.CodedConcept(value="%", scheme_designator="UCUM", meaning="percent")

#: SCT 52101004 / 272519000, CID 240 "Present-Absent".
PRESENT: Final = hd.sr.CodedConcept.from_code(codes.SCT.Present)
ABSENT: Final = hd.sr.CodedConcept.from_code(codes.SCT.Absent)

# --- Measurements, units, procedure -------------------------------------------------------------

#: SCT 118565006 "Volume", CID 7469 "Generic Intensity and Size Measurements".
VOLUME: Final = hd.sr.CodedConcept.from_code(codes.SCT.Volume)
#: DCM 126030, CID 7474: volume = sum of the segmented voxels' volumes (what we compute).
SUM_OF_SEGMENTED_VOXELS: Final = hd.sr.CodedConcept.from_code(
    codes.DCM.SumOfSegmentedVoxelMethodForVolume
)
#: UCUM millilitre, as dcmqi writes it in TID 1500 volume measurements.
MILLILITER: Final = hd.sr.CodedConcept(value="ml", scheme_designator="UCUM", meaning="milliliter")
#: UCUM unity with the annotation ``{probability}``: dimensionless like "1" for software (UCUM
#: annotations carry no unit semantics), while a reader sees what the number is.
PROBABILITY_UNIT: Final = hd.sr.CodedConcept(
    value="{probability}", scheme_designator="UCUM", meaning="probability"
)
#: LOINC 24725-4 "Head CT" (PS3.16 CID 646): the procedure reported. TID 1500 takes it from
#: the extensible CID 100, which has no head-CT entry of its own.
CT_HEAD: Final = hd.sr.CodedConcept.from_code(codes.LN.HeadCT)
