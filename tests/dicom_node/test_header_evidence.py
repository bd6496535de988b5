"""Header words as evidence (dicom_node.header_evidence): languages, regions, kernels."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from dicom_node.header_evidence import (
    HeadVerdict,
    KernelClass,
    classify_kernel,
    find_word,
    head_evidence,
    localizer_evidence,
    normalise,
    pattern_problem,
)


def _series(**attributes: object) -> list[Dataset]:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return [ds]


def test_normalise_removes_accents_and_transliterates() -> None:
    assert normalise("Crâne sans injection") == "CRANE SANS INJECTION"
    assert normalise("Schädel") == "SCHADEL"
    assert normalise("Großhirn") == "GROSSHIRN"
    assert normalise("Głowa") == "GLOWA"


def test_patterns_match_whole_words_stems_or_anywhere() -> None:
    assert find_word("CCT nativ", ["CCT"]) == "CCT"
    assert find_word("ACCT 5mm", ["CCT"]) is None  # a whole word only
    assert find_word("KopfRoutine", ["KOPF*"]) == "KOPFROUTINE"
    assert find_word("CTHEADWO", ["*HEAD*"]) == "CTHEADWO"
    assert find_word("Hip 3mm", ["HIP"]) == "HIP"
    assert find_word("Hippocampus", ["HIP"]) is None


@pytest.mark.parametrize(
    "value",
    [
        "CT HEAD W/O",  # English
        "CTHEADWO",
        "Brain 5mm",
        "CCT nativ",  # German
        "Schädel nativ",
        "SCHAEDEL",
        "KOPF",
        "Hirnblutung?",
        "Crâne sans injection",  # French
        "TDM cérébrale",
        "Tête",
        "TC cranio senza mdc",  # Italian
        "Encefalo",
        "TAC de cráneo simple",  # Spanish
        "Cabeza",
        "TC de crânio",  # Portuguese
        "CT hersenen",  # Dutch
        "Schedel blanco",
        "Stroke protocol",
        "Neuro routine",
        "Intracranial",
    ],
)
def test_head_words_of_many_languages(value: str) -> None:
    evidence = head_evidence(_series(SeriesDescription=value))
    assert evidence.verdict is HeadVerdict.HEAD, evidence
    assert evidence.evidence == f"head per SeriesDescription {value!r}"


@pytest.mark.parametrize(
    ("value", "region"),
    [
        ("CHEST", "chest"),
        ("Thorax 5mm", "chest"),
        ("Poumons", "chest"),
        ("ABDOMEN", "abdomen"),
        ("Bauch nativ", "abdomen"),
        ("Addome", "abdomen"),
        ("Becken", "pelvis"),
        ("PELVIS", "pelvis"),
        ("LWS", "spine"),
        ("C-SPINE", "spine"),
        ("Rachis cervical", "spine"),
        ("Hals", "neck"),
        ("Cardiac CTA", "heart and aorta"),
        ("NNH", "face, sinuses or ear"),
        ("Felsenbein", "face, sinuses or ear"),
        ("Knie links", "extremities"),
        ("Épaule", "extremities"),
        ("Ginocchio", "extremities"),
    ],
)
def test_other_regions_reject(value: str, region: str) -> None:
    # SeriesDescription: BodyPartExamined is CS (upper case only), descriptions are free text.
    evidence = head_evidence(_series(SeriesDescription=value))
    assert evidence.verdict is HeadVerdict.OTHER_REGION, evidence
    assert evidence.evidence.endswith(f"not a head (another region: {region})")


@pytest.mark.parametrize(
    ("attributes", "evidence"),
    [
        ({}, "no body part in headers"),
        (
            {"BodyPartExamined": "BASE 3MM"},
            "headers name no body region (BodyPartExamined 'BASE 3MM')",
        ),
        (
            {"BodyPartExamined": "ROUTINE", "SeriesDescription": "NCCT"},
            "headers name no body region (BodyPartExamined 'ROUTINE'; SeriesDescription 'NCCT')",
        ),
        (
            {"BodyPartExamined": "HEAD_NECK"},
            "headers name a head and another region (BodyPartExamined 'HEAD_NECK'; "
            "BodyPartExamined 'HEAD_NECK': neck)",
        ),
    ],
)
def test_silent_or_mixed_headers_are_undecided(attributes: dict[str, str], evidence: str) -> None:
    found = head_evidence(_series(**attributes))
    assert (found.verdict, found.evidence) == (HeadVerdict.UNDECIDED, evidence)


def test_series_level_words_speak_before_the_study_description() -> None:
    series = _series(SeriesDescription="Abdomen 5mm", StudyDescription="CT Kopf + Abdomen")
    assert head_evidence(series).verdict is HeadVerdict.OTHER_REGION
    study_only = _series(BodyPartExamined="ROUTINE", StudyDescription="CT Schädel")
    assert head_evidence(study_only).evidence == "head per StudyDescription 'CT Schädel'"


def test_localizers_by_image_type_or_description() -> None:
    assert localizer_evidence(_series(ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])) == (
        "a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)"
    )
    for description, word in (("Scout", "SCOUT"), ("Topogram 0.6 T20s", "TOPOGRAM")):
        assert localizer_evidence(_series(SeriesDescription=description)) == (
            f"a localizer (SeriesDescription {description!r} names {word})"
        )
    assert localizer_evidence(_series(ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])) is None


@pytest.mark.parametrize(
    ("kernel", "kind"),
    [
        # GE
        ("STANDARD", KernelClass.SOFT),
        ("STD+", KernelClass.SOFT),
        ("SOFT", KernelClass.SOFT),
        ("BONE", KernelClass.SHARP),
        ("BONEPLUS", KernelClass.SHARP),
        ("Bone Plus", KernelClass.SHARP),
        ("LUNG", KernelClass.SHARP),
        # Siemens (classic, Force, ADMIRE naming)
        ("H30s", KernelClass.SOFT),
        ("H31s", KernelClass.SOFT),
        ("J40s", KernelClass.SOFT),
        ("Hr38", KernelClass.SOFT),
        ("Hr38\\3", KernelClass.SOFT),
        ("H70h", KernelClass.SHARP),
        ("J70h", KernelClass.SHARP),
        ("Hr64", KernelClass.SHARP),
        ("H50s", KernelClass.UNKNOWN),
        # Philips
        ("UB", KernelClass.SOFT),
        ("B", KernelClass.SOFT),
        ("YC", KernelClass.SHARP),
        ("D", KernelClass.SHARP),
        # Canon / Toshiba
        ("FC21", KernelClass.SOFT),
        ("FC26", KernelClass.SOFT),
        ("FC30", KernelClass.SHARP),
        ("FC81", KernelClass.SHARP),
        # United Imaging and unknown names
        ("H_SOFT_B", KernelClass.SOFT),
        ("B_SHARP_C", KernelClass.SHARP),
        ("XR7", KernelClass.UNKNOWN),
        ("", KernelClass.UNKNOWN),
    ],
)
def test_kernel_names_of_the_main_vendors(kernel: str, kind: KernelClass) -> None:
    assert classify_kernel(kernel).kernel_class is kind


def test_pattern_problems_name_the_pattern() -> None:
    assert pattern_problem("KOPF*") is None
    assert pattern_problem("*HIRN*") is None
    assert pattern_problem("two words") is not None
    assert (
        pattern_problem("*HEAD") == "'*HEAD': a pattern that starts with * must end with * (*PART*)"
    )
