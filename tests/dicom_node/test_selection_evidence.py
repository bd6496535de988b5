"""Issue 13: series that real scanners send pass selection on evidence, not on one header word.

Real files from ../shared/data are rewritten into a temporary folder with another vendor's
headers; synthetic series come from the generator's output (tests/dicom_node/head_study.py).
Pixel reads are counted by wrapping pydicom's reader and the HU decoder the selection uses, so
the tests see how many slices the image check really opened.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom import Dataset

import dicom_node.selection as selection_module
from dicom_node.config import SelectionSection, parse_config
from dicom_node.header_evidence import KernelClass
from dicom_node.selection import SelectionResult, select_series
from tests.dicom_node.head_study import HeadStudy, non_head_series, renew_uids

RULES = SelectionSection()


def _rules(**selection: Any) -> SelectionSection:
    return parse_config({"selection": selection}).selection


def _headers(paths: list[Path]) -> list[Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


@pytest.fixture
def pixel_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Files whose pixel data selection reads, and datasets whose pixels it decodes."""
    reads: list[str] = []
    read = pydicom.dcmread
    decode = selection_module.decode_hu

    def reading(path: Any, *args: Any, **kwargs: Any) -> Dataset:
        if not kwargs.get("stop_before_pixels"):
            reads.append(f"read {Path(str(path)).name}")
        return read(path, *args, **kwargs)

    def decoding(ds: Dataset, *args: Any, **kwargs: Any) -> Any:
        reads.append(f"decode {ds.SOPInstanceUID}")
        return decode(ds, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", reading)
    monkeypatch.setattr(selection_module, "decode_hu", decoding)
    return reads


def _rewrite(source: Path, target: Path, edit: Callable[[Dataset], None]) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        edit(ds)
        ds.save_as(target / path.name)
        written.append(target / path.name)
    return written


def _siemens_style(ds: Dataset) -> None:
    """A Siemens SOMATOM head as many PACS hold it: a protocol name in BodyPartExamined, no
    study/series description, no protocol name."""
    ds.BodyPartExamined = "BASE 3MM"
    ds.Manufacturer = "SIEMENS"
    for keyword in ("StudyDescription", "SeriesDescription", "ProtocolName"):
        if keyword in ds:
            del ds[keyword]


@pytest.fixture
def siemens_head(head_ct_dir: Path, tmp_path: Path) -> list[Path]:
    """The real GE head study rewritten with Siemens-style headers, in a temporary folder."""
    return _rewrite(head_ct_dir, tmp_path / "siemens", _siemens_style)


# --- must be shown (1): the head decision ------------------------------------------------------


@pytest.mark.shared_data
def test_real_head_with_siemens_style_headers_is_accepted_by_the_image_check(
    siemens_head: list[Path], pixel_reads: list[str]
) -> None:
    headers = _headers(siemens_head)
    assert pixel_reads == []
    result = select_series(headers, RULES)
    assert result.accepted, result.reason
    assert result.reason.startswith(
        "accepted: headers name no body region (BodyPartExamined 'BASE 3MM'); image check: "
        "skull ring "
    )
    assert "on 5/5 sampled slices" in result.reason
    brain = int(result.reason.split(" % brain-density inside")[0].rsplit(" ", 1)[1])
    assert brain >= 90, result.reason
    # Five middle slices of 28: each file read once, each decoded once, nothing else.
    assert len([r for r in pixel_reads if r.startswith("read ")]) == 5, pixel_reads
    assert len([r for r in pixel_reads if r.startswith("decode ")]) == 5, pixel_reads


@pytest.mark.shared_data
@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SeriesDescription", "CCT nativ"),
        ("SeriesDescription", "Crâne sans injection"),
        ("StudyDescription", "Schädel nativ"),
        ("ProtocolName", "TC cranio senza mdc"),
        ("SeriesDescription", "TAC de cráneo"),
        ("StudyDescription", "CT hersenen"),
    ],
)
def test_real_head_with_local_language_descriptions_is_accepted(
    siemens_head: list[Path], keyword: str, value: str, pixel_reads: list[str]
) -> None:
    headers = _headers(siemens_head)
    for ds in headers:
        setattr(ds, keyword, value)
    result = select_series(headers, RULES)
    assert result.accepted, result.reason
    assert result.reason.startswith(f"accepted: head per {keyword} {value!r}; 28 axial CT slices")
    assert pixel_reads == [], "the headers decided: no image check, known kernel"


@pytest.mark.shared_data
def test_head_and_neck_labels_leave_the_decision_to_the_image(siemens_head: list[Path]) -> None:
    headers = _headers(siemens_head)
    for ds in headers:
        ds.BodyPartExamined = "HEAD_NECK"
    result = select_series(headers, RULES)
    assert result.accepted, result.reason
    assert result.reason.startswith(
        "accepted: headers name a head and another region (BodyPartExamined 'HEAD_NECK'; "
        "BodyPartExamined 'HEAD_NECK': neck); image check: skull ring "
    )


@pytest.mark.shared_data
def test_real_abdomen_is_rejected_by_its_headers_and_by_its_pixels(shared_data: Path) -> None:
    paths = sorted((shared_data / "real" / "abdomen_ct_3slice").glob("*.dcm"))
    headers = _headers(paths)
    labelled = select_series(headers, _rules(min_slices=1))
    assert labelled.reason == (
        "skipped: ProtocolName '6.9 Colonoscopy' names COLONOSCOPY, not a head "
        "(another region: abdomen)"
    )
    for ds in headers:
        del ds.ProtocolName
    unlabelled = select_series(headers, _rules(min_slices=1))
    assert not unlabelled.accepted
    assert unlabelled.reason.startswith(
        "skipped: no body part in headers; image check: no head-sized skull ring around "
        "brain-density tissue on 0/1 sampled slices (largest: "
    ), unlabelled.reason


def test_synthetic_non_head_volume_is_rejected_by_the_image_check(
    synthetic_head_study: HeadStudy,
) -> None:
    series = non_head_series(synthetic_head_study.soft)
    result = select_series(series, RULES)
    assert not result.accepted
    assert result.reason.startswith(
        "skipped: no body part in headers; image check: no head-sized skull ring around "
        "brain-density tissue on 0/5 sampled slices (largest: enclosed region "
    ), result.reason


def test_synthetic_head_without_labels_is_accepted_by_the_image_check(
    synthetic_head_study: HeadStudy,
) -> None:
    series = renew_uids(synthetic_head_study.soft)
    for ds in series:
        for keyword in ("BodyPartExamined", "StudyDescription", "SeriesDescription"):
            del ds[keyword]
    result = select_series(series, RULES)
    assert result.accepted, result.reason
    assert "no body part in headers; image check: skull ring " in result.reason
    assert "on 5/5 sampled slices" in result.reason


@pytest.mark.parametrize(
    ("edit", "evidence"),
    [
        (lambda ds: None, "a localizer (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)"),
        (
            lambda ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY"]),
            "a localizer (SeriesDescription 'Topogram 0.6 T20s' names TOPOGRAM)",
        ),
    ],
)
def test_a_localizer_is_never_analysed(
    synthetic_head_study: HeadStudy,
    pixel_reads: list[str],
    edit: Callable[[Dataset], None],
    evidence: str,
) -> None:
    [scout] = renew_uids(synthetic_head_study.scout)
    edit(scout)
    # Even a rule that forces every series of the scanner in does not bring a scout in.
    result = select_series([scout], _rules(include=[{"calling_ae": "CT_ER"}]), calling_ae="CT_ER")
    assert result == SelectionResult(
        False, f"skipped: {evidence}: projection images are never analysed"
    )
    assert pixel_reads == []


def test_a_multi_image_surview_is_a_localizer(synthetic_head_study: HeadStudy) -> None:
    views = renew_uids(synthetic_head_study.soft[:6])
    for ds in views:
        ds.SeriesDescription = "Surview"
    result = select_series(views, RULES)
    assert result.reason == (
        "skipped: a localizer (SeriesDescription 'Surview' names SURVIEW): "
        "projection images are never analysed"
    )


# --- kernels ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "expected"), [("soft", "soft-tissue"), ("bone", "sharp")])
def test_an_unknown_kernel_name_is_classified_by_the_image_noise(
    synthetic_head_study: HeadStudy, name: str, expected: str
) -> None:
    series = renew_uids(synthetic_head_study.series[name])
    for ds in series:
        ds.ConvolutionKernel = "XR7"
    result = select_series(series, RULES)
    assert result.accepted and result.profile is not None, result.reason
    assert result.profile.kernel is KernelClass(expected)
    assert result.reason.endswith(f"HU (5 mm equivalent): {expected}")
    assert "kernel 'XR7' not known; image noise " in result.reason


# --- admin overrides ----------------------------------------------------------------------------


def test_exclude_rule_skips_a_series_naming_the_rule(synthetic_head_study: HeadStudy) -> None:
    rules = _rules(exclude=[{"convolution_kernel": "(?i)bone|h7\\d"}])
    assert select_series(synthetic_head_study.bone, rules).reason == (
        "skipped: excluded by selection.exclude[0] "
        "(convolution_kernel 'BONE' matches '(?i)bone|h7\\\\d')"
    )
    assert select_series(synthetic_head_study.soft, rules).accepted


def test_include_rule_forces_the_head_decision_for_its_calling_ae(
    synthetic_head_study: HeadStudy, pixel_reads: list[str]
) -> None:
    series = non_head_series(synthetic_head_study.soft)
    rules = _rules(include=[{"series_description": "(?i)cct"}, {"calling_ae": "^CT_ER$"}])
    pixel_reads.clear()
    result = select_series(series, rules, calling_ae="CT_ER")
    assert result.accepted, result.reason
    assert result.reason.startswith(
        "accepted: head per selection.include[1] (calling_ae 'CT_ER' matches '^CT_ER$'); "
    )
    assert pixel_reads == [], "forced in: no image check (and the kernel name is known)"
    assert not select_series(series, rules, calling_ae="CT_MAIN").accepted


def test_exclude_wins_over_include(synthetic_head_study: HeadStudy) -> None:
    rules = _rules(
        include=[{"calling_ae": "CT_ER"}],
        exclude=[{"calling_ae": "CT_ER", "series_description": "(?i)bone"}],
    )
    assert select_series(synthetic_head_study.bone, rules, calling_ae="CT_ER").reason == (
        "skipped: excluded by selection.exclude[0] (series_description 'Head 5.0 mm bone' "
        "matches '(?i)bone'; calling_ae 'CT_ER' matches 'CT_ER')"
    )


def test_site_words_extend_the_built_in_lists(synthetic_head_study: HeadStudy) -> None:
    series = renew_uids(synthetic_head_study.soft)
    for ds in series:
        del ds.BodyPartExamined, ds.StudyDescription
        ds.SeriesDescription = "NCH Routine"
    assert "image check" in select_series(series, RULES).reason
    assert select_series(series, _rules(head_keywords=["NCH"])).reason.startswith(
        "accepted: head per SeriesDescription 'NCH Routine'; "
    )
    assert select_series(series, _rules(non_head_keywords=["ROUTINE*"])).reason == (
        "skipped: SeriesDescription 'NCH Routine' names ROUTINE, not a head "
        "(another region: selection.non_head_keywords)"
    )
